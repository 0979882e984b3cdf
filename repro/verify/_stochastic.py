"""Stochastic layers: found in a model, their rates listed, and turned off for a train-mode pass.

A model is stochastic in train mode where it draws random numbers: dropout, drop-path
(stochastic depth), anything that calls a random function. Such a layer is found by what its
rate is called, not by its class: a ``torch.nn`` dropout module (``p``), and any module with a
float rate attribute (``drop_prob`` as in timm's ``DropPath``, ``p`` beside ``mode`` as in
torchvision's ``StochasticDepth``, ``drop_rate`` as on a timm model that calls ``F.dropout``
before its classifier). It is turned off by setting that attribute to zero for the passes in train
mode alone (``rates_off``), never by swapping its class; what still draws random numbers after
that is seen while tracing the train step and reported as not turned off. Eval passes run with
every rate as the model holds it: a layer that drops in eval mode too (``F.dropout`` called without
``training=``) is part of the eval function, and turning it off there would hide it.

A rate kept on a module with child modules (a model's ``drop_rate``) may be a setting that module
hands to its children rather than one it applies: timm's EfficientNet calls ``F.dropout`` with its
``drop_rate`` before the classifier, timm's VGG keeps ``drop_rate`` beside the ``Dropout`` modules of
its head, which draw the random numbers themselves. Such a rate counts as a stochastic layer only
where the module itself draws random numbers in a train-mode pass (observed once, on the model's own
weights, its buffers given back afterwards); otherwise it is listed as idle, and reported, not
compared.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from typing import Mapping

import torch
from torch import nn

from repro.verify._trace import Recorder, Sink

# The attributes a stochastic layer keeps its rate in. A module's "p" counts only where the
# module is a torch dropout module or has another sign of being a drop layer (a "mode").
RATE_ATTRIBUTES = ("drop_prob", "drop_rate", "drop_connect_rate", "dropout_rate", "dropout")


@dataclass(frozen=True)
class StochasticLayer:
    module: str  # its name in the model ("" for the model itself)
    kind: str  # the module's class name
    attribute: str  # where the rate is kept
    rate: float
    acts: bool = True  # False: a container's rate that the container itself never applies (see above)
    unit: str = ""  # what one draw drops (``dropped_unit``: "single values", "whole channels", ...); "" unknown

    def __str__(self) -> str:
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.module or '(root)'} ({self.kind}.{self.attribute}={self.rate:g}{unit})"


def _rate_attributes(module: nn.Module) -> list[str]:
    names = [a for a in RATE_ATTRIBUTES if isinstance(getattr(module, a, None), float)]
    is_drop_module = isinstance(module, nn.modules.dropout._DropoutNd) or isinstance(getattr(module, "mode", None), str)
    if is_drop_module and isinstance(getattr(module, "p", None), float):
        names.append("p")
    return names


def stochastic_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[StochasticLayer]:
    """Every rate above zero, in the model's module order. With an input ``x``, a rate kept on a
    module with child modules is marked idle (``acts=False``) unless that module draws random
    numbers itself in a train-mode pass on ``x``."""
    layers = [StochasticLayer(name, type(module).__name__, attr, getattr(module, attr))
              for name, module in model.named_modules()
              for attr in _rate_attributes(module) if getattr(module, attr) > 0.0]
    containers = {layer.module for layer in layers if next(model.get_submodule(layer.module).children(), None)}
    if not containers or x is None:
        return layers
    drawing = _drawing_modules(model, x)
    return [StochasticLayer(layer.module, layer.kind, layer.attribute, layer.rate, acts=False)
            if layer.module in containers and layer.module not in drawing else layer for layer in layers]


class _RandomCalls(Sink):
    def __init__(self) -> None:
        self.where: set[str] = set()

    def random_op(self, where: str, function: str, seq: int) -> None:
        self.where.add("" if where == "(root)" else where)


@torch.no_grad()
def _drawing_modules(model: nn.Module, x: torch.Tensor) -> set[str]:
    """The modules that draw random numbers in their own code during one train-mode pass on ``x``;
    the model's mode, buffers and the global random state are left as they were."""
    was_training = model.training
    buffers = [(b, b.clone()) for b in model.buffers()]
    sink = _RandomCalls()
    try:
        with torch.random.fork_rng(devices=[]):
            Recorder(model.train(), sink).run(x)
    finally:
        for b, saved in buffers:
            b.copy_(saved)
        model.train(was_training)
    return sink.where


def acting(layers: list[StochasticLayer]) -> list[StochasticLayer]:
    return [layer for layer in layers if layer.acts]


def applications(layers: list[StochasticLayer], calls: Mapping[str, int], observed: bool) -> list[StochasticLayer]:
    """Each layer once per call in a pass (``calls``: module name -> calls): torchvision's Swin applies one
    ``StochasticDepth`` module to both branches of a block where timm's has two ``DropPath`` modules, and the two
    draw the same random numbers per application. ``observed``: the calls were counted in a train-mode pass, and a
    layer never called there applies no rate (timm builds a ``DropPath`` in each block and calls it only where the
    block has a residual); else they come from an eval pass, which may skip a layer called in train mode alone,
    and each layer counts at least once."""
    return [layer for layer in layers for _ in range(calls.get(layer.module, 0) if observed else
                                                      max(1, calls.get(layer.module, 0)))]


def summary(layers: list[StochasticLayer]) -> str:
    """The acting rates (one entry per application) in a few words, with what each draw drops where that is known:
    ``Dropout.p 0.5 x2 (single values)``, ``StochasticDepth.p 0.00588 to 0.0941 x16 (whole samples)``."""
    parts = []
    for (kind, attribute, unit), group in groupby(acting(layers),
                                                  key=lambda layer: (layer.kind, layer.attribute, layer.unit)):
        rates = [layer.rate for layer in group]
        low, high = min(rates), max(rates)
        spread = f"{low:g}" if low == high else f"{low:g} to {high:g}"
        parts.append(f"{kind}.{attribute} {spread}" + (f" x{len(rates)}" if len(rates) > 1 else "")
                     + (f" ({unit})" if unit else ""))
    return ", ".join(parts) or "none"


PROBE_BATCH, PROBE_SIDE, PROBE_DRAWS = 16, 6, 8  # the probe ``dropped_unit`` runs: its shape, and how many draws


def dropped_unit(module: nn.Module, attribute: str, shape: tuple[int, ...], seed: int) -> str:
    """What one draw of a stochastic layer with no children drops, seen on a probe of ones shaped like its input
    (a batch of ``PROBE_BATCH``, each other dimension at most ``PROBE_SIDE``) in ``PROBE_DRAWS`` train-mode calls at
    rate 0.5: ``"single values"``, ``"whole channels"`` (every value of a channel of a sample at once: dropout2d),
    ``"whole samples"`` (drop-path, stochastic depth), ``"the whole batch"``, or the dimensions it drops whole.
    ``""`` where that is not seen: the module fails on the probe, or no draw both drops and keeps a value. The rate,
    the mode and the global random state are given back."""
    if not shape:
        return ""
    probe = torch.ones((PROBE_BATCH, *(min(size, PROBE_SIDE) for size in shape[1:])),
                       dtype=next((t.dtype for t in module.parameters()), torch.get_default_dtype()))
    rate, was_training = getattr(module, attribute), module.training
    masks = []
    try:
        setattr(module, attribute, 0.5)
        module.train()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for _ in range(PROBE_DRAWS):
                out = module(probe)
                if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
                    return ""
                masks.append(out == 0)
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError):
        return ""  # it takes another input than a tensor shaped like its own: what it drops is not seen
    finally:
        setattr(module, attribute, rate)
        module.train(was_training)
    mask = torch.stack(masks)  # draw, then the probe's dimensions
    if not mask.any() or mask.all():
        return ""
    whole = [d for d in range(probe.ndim) if bool((mask == mask.narrow(d + 1, 0, 1)).all())]
    dims = list(range(probe.ndim))
    if not whole:
        return "single values"
    if whole == dims:
        return "the whole batch"
    if whole == dims[1:]:
        return "whole samples"
    if probe.ndim >= 3 and whole == dims[2:]:
        return "whole channels"
    return f"patterns shared along dimensions {', '.join(map(str, whole))}"


@contextmanager
def rates_off(model: nn.Module, layers: list[StochasticLayer]):
    """Each layer's rate set to zero while the block runs (idle rates too, which changes nothing), then given
    back: for train-mode passes alone (see the module docstring)."""
    held = [(model.get_submodule(layer.module), layer.attribute) for layer in layers]
    rates = [getattr(module, attribute) for module, attribute in held]
    for module, attribute in held:
        setattr(module, attribute, 0.0)
    try:
        yield model
    finally:
        for (module, attribute), rate in zip(held, rates, strict=True):
            setattr(module, attribute, rate)


def units_differ(candidate: list[StochasticLayer], reference: list[StochasticLayer]) -> int | None:
    """Where two lists of the same rates (``rates_match``) first apply them to other units (both known), or
    ``None``."""
    return next((i for i, (a, b) in enumerate(zip(acting(candidate), acting(reference), strict=True))
                 if a.unit and b.unit and a.unit != b.unit), None)


def rates_match(candidate: list[StochasticLayer], reference: list[StochasticLayer]) -> bool:
    """The same acting rates, in the same order: the train-mode distributions can then be the same
    (where each layer sits is checked by the deterministic train step)."""
    return [layer.rate for layer in acting(candidate)] == [layer.rate for layer in acting(reference)]
