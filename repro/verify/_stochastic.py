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

A rate the model keeps anywhere else (``self.droprate``, a config object) and passes to a dropout call
(``F.dropout(x, p=self.droprate, training=self.training)``) is found at the call, in the same train-mode pass,
and turned off there: in a train-mode pass every dropout call is made at rate zero (``DropoutCallsOff``),
whatever the rate's name. A rate a module's forward is given under a known name, by keyword or by position
(``RATE_KEYWORDS``: EfficientNet-PyTorch's model calls each block with ``drop_connect_rate=``, and the block
draws its mask with ``torch.rand``) is found at the call, acts where that module draws random numbers itself,
and is given as zero in a train-mode pass; what one of its draws drops is read off the size the mask is drawn
at. A random draw of another kind under a name not known here (a hand-written drop-path computing its mask from
``torch.rand`` with a rate kept in a tuple and handed to a method) is none of these: it is seen while tracing
the train step and reported as not turned off.

A rate kept on a module with child modules (a model's ``drop_rate``) may be a setting that module
hands to its children rather than one it applies: timm's EfficientNet calls ``F.dropout`` with its
``drop_rate`` before the classifier, timm's VGG keeps ``drop_rate`` beside the ``Dropout`` modules of
its head, which draw the random numbers themselves. Such a rate counts as a stochastic layer only
where the module itself draws random numbers in a train-mode pass (observed once, on the model's own
weights, its buffers given back afterwards); otherwise it is listed as idle, and reported, not
compared.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby, takewhile
from typing import Any, Callable, Mapping

import torch
from torch import nn

from repro.verify._trace import MODEL_FAILURES, DropoutCallsOff, Recorder, Sink, dropout_rate, function_name

# The attributes a stochastic layer keeps its rate in. A module's "p" counts only where the
# module is a torch dropout module or has another sign of being a drop layer (a "mode").
RATE_ATTRIBUTES = ("drop_prob", "drop_rate", "drop_connect_rate", "dropout_rate", "dropout")
# The parameter names a module's forward is given a rate under, by keyword or by position (EfficientNet-PyTorch's
# blocks take ``drop_connect_rate=`` from the model, which schedules it per block).
RATE_KEYWORDS = (*RATE_ATTRIBUTES, "drop_path_rate")


@functools.lru_cache(maxsize=None)
def _positional_names(forward: Callable) -> tuple[str, ...]:
    """The names of the positional parameters of ``forward`` as called (a bound method: ``self`` excluded), in
    order, up to ``*args``."""
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or C forward: no signature to read
        return ()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(takewhile(lambda name: name is not None,
                           (p.name if p.kind in positional else None for p in parameters)))


_cached_positional_names = functools.lru_cache(maxsize=None)(_positional_names)


def forward_rates(module: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, tuple[int | None, float]]:
    """The rates above zero a forward call is given under a known name (``RATE_KEYWORDS``, float values alone), by
    keyword or by position (read off the signature of the forward the call runs, an instance's own included):
    name -> (position, or None for a keyword; rate)."""
    if len(args) > 1 and any(type(a) is float for a in args):
        forward = module.forward
        function = getattr(forward, "__func__", None)  # a method's signature is its class's: read once
        names = (_cached_positional_names(function)[1:] if function is not None and inspect.ismethod(forward)
                 else _positional_names(forward))
    else:
        names = ()
    named = zip(names, args)
    given = {name: (i, value) for i, (name, value) in enumerate(named)}
    given.update({name: (None, value) for name, value in kwargs.items()})
    return {name: (i, value) for name, (i, value) in given.items()
            if name in RATE_KEYWORDS and type(value) is float and value > 0.0}


@dataclass(frozen=True)
class StochasticLayer:
    module: str  # its name in the model ("" for the model itself)
    kind: str  # the module's class name
    attribute: str  # where the rate is kept: the module's attribute, or (``call``) the argument of the call
    rate: float
    acts: bool = True  # False: a container's rate that the container itself never applies (see above)
    unit: str = ""  # what one draw drops (``dropped_unit``: "single values", "whole channels", ...); "" unknown
    # A rate found at a call: a dropout call the module makes (the function: "dropout"), or the module's own forward
    # given it, by keyword or by position ("forward"); "" for an attribute.
    call: str = ""

    @property
    def label(self) -> str:
        """Where the rate is kept: ``Dropout.p``; ``dropout(p) in Bottleneck`` for one found at the call."""
        return f"{self.call}({self.attribute}) in {self.kind}" if self.call else f"{self.kind}.{self.attribute}"

    def __str__(self) -> str:
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.module or '(root)'} ({self.label}={self.rate:g}{unit})"


def _rate_attributes(module: nn.Module) -> list[str]:
    names = [a for a in RATE_ATTRIBUTES if isinstance(getattr(module, a, None), float)]
    is_drop_module = isinstance(module, nn.modules.dropout._DropoutNd) or isinstance(getattr(module, "mode", None), str)
    if is_drop_module and isinstance(getattr(module, "p", None), float):
        names.append("p")
    return names


def stochastic_layers(model: nn.Module, x: torch.Tensor | None = None, seed: int = 0,
                      probe: bool = False) -> list[StochasticLayer]:
    """Every rate above zero kept under a known name. With an input ``x``, observed in one train-mode pass on it
    (run where such a rate is found, or ``probe``): a rate kept on a module with child modules is marked idle
    (``acts=False``) unless that module draws random numbers itself; each layer's ``unit``, what one of its draws
    drops (``dropped_unit``), where it is seen; each dropout call made at a rate no such attribute of its module
    holds, a layer of its own (``call``: found at the call, one per call made); each rate a module's forward is
    given under a known name and neither keeps nor hands to such a call, one per call, acting where the module
    draws (``call="forward"``, its unit read off the size its mask is drawn at); and the layers in the order they
    draw (a model's own head dropout draws last, though the model comes first in module order), the layers not seen
    drawing after them in module order. Without ``x``, module order."""
    layers = [StochasticLayer(name, type(module).__name__, attr, getattr(module, attr))
              for name, module in model.named_modules()
              for attr in _rate_attributes(module) if getattr(module, attr) > 0.0]
    if x is None or not (layers or probe):
        return layers
    draws = _draws(model, x, {layer.module for layer in layers})
    seen = []
    for layer in layers:
        module = model.get_submodule(layer.module)
        if next(module.children(), None) is None:
            unit = (dropped_unit(module, layer.attribute, *draws.inputs[layer.module], seed)
                    if layer.module in draws.inputs else "")
            seen.append(dataclasses.replace(layer, unit=unit))
        elif layer.module in draws.first:
            seen.append(dataclasses.replace(layer, unit=_unit_of_call(draws.calls.get(layer.module), layer.rate, seed)))
        else:
            seen.append(dataclasses.replace(layer, acts=False))
    order = {layer.module: i for i, layer in enumerate(layers)}
    placed = [((draws.first.get(layer.module, math.inf), order[layer.module]), layer) for layer in seen]
    kept = {(layer.module, layer.rate) for layer in layers}
    placed += [((seq, -1), StochasticLayer(where, type(model.get_submodule(where)).__name__, argument, rate,
                                           unit=_unit_of_call(call, rate, seed), call=function))
               for where, function, argument, rate, call, seq in draws.dropouts if (where, rate) not in kept]
    # A rate a module's forward is given, once per call: it acts where that module draws random numbers itself
    # (EfficientNet-PyTorch passes every block its drop-connect rate; a block without a residual never uses it).
    # A rate the module also keeps, or also hands to a dropout call, is that layer already: not listed twice.
    listed = kept | {(where, rate) for where, _, _, rate, _, _ in draws.dropouts}
    placed += [((draws.first.get(where, math.inf), -2), StochasticLayer(
                   where, type(model.get_submodule(where)).__name__, keyword, rate, acts=where in draws.first,
                   unit=draws.units.get(where, ""), call="forward"))
               for where, given in draws.forward_rates for keyword, (_, rate) in given.items()
               if (where, rate) not in listed]
    return [layer for _, layer in sorted(placed, key=lambda placed: placed[0])]


class _Draws(Sink):
    """Where one pass draws random numbers: each module's first draw (its place in the pass) and the call that made
    it, where its first tensor is data; every dropout call on data (``dropouts``: the module, the function, the
    argument holding the rate, the rate, the call, its place); the input (shape, dtype) of each stochastic layer's
    first call."""

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.calls: dict[str, tuple[Callable, tuple, dict]] = {}
        self.dropouts: list[tuple[str, str, str, float, tuple[Callable, tuple, dict], int]] = []
        self.inputs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        # every forward call given rates, in order: the module, its rates (``forward_rates``)
        self.forward_rates: list[tuple[str, dict[str, tuple[int | None, float]]]] = []
        self.units: dict[str, str] = {}  # what a module's first draw made for the purpose drops (``_drawn_unit``)
        self._seq = 0

    def random_op(self, where: str, function: str, seq: int) -> None:
        self.first.setdefault("" if where == "(root)" else where, seq)
        self._seq = seq

    def random_call(self, where: str, func: Callable, args: tuple, kwargs: dict, on_data: bool) -> None:
        where = "" if where == "(root)" else where
        if not on_data:
            if where in self.inputs and where not in self.units:
                self.units[where] = _drawn_unit(func, args, kwargs, self.inputs[where][0])
            return
        call = (func, _shapes_only(args), _shapes_only(kwargs))
        self.calls.setdefault(where, call)
        name = function_name(func)
        found = dropout_rate(name, args, kwargs)
        if found is not None:
            self.dropouts.append((where, name.rstrip("_"), *found, call, self._seq))


class _Slot:
    """A tensor argument of a recorded call, kept as its shape and dtype."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.shape, self.dtype = tuple(tensor.shape), tensor.dtype


def _shapes_only(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return _Slot(tree)
    if type(tree) in (tuple, list):
        return type(tree)(_shapes_only(item) for item in tree)
    if type(tree) is dict:
        return {k: _shapes_only(v) for k, v in tree.items()}
    return tree


@torch.no_grad()
def _draws(model: nn.Module, x: torch.Tensor, stochastic: set[str]) -> _Draws:
    """``_Draws`` of one train-mode pass of ``model`` on ``x`` (recorded); the model's mode, buffers and the global
    random state are left as they were."""
    was_training = model.training
    buffers = [(b, b.clone()) for b in model.buffers()]
    sink = _Draws()

    def keep_input(name: str, module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            sink.inputs.setdefault(name, (tuple(args[0].shape), args[0].dtype))

    def keep_rates(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        given = forward_rates(module, args, kwargs)
        if given:
            sink.forward_rates.append((name, given))
            keep_input(name, module, args)

    hooks = []
    try:
        hooks += [model.get_submodule(name).register_forward_pre_hook(functools.partial(keep_input, name))
                  for name in stochastic]
        hooks += [module.register_forward_pre_hook(functools.partial(keep_rates, name), with_kwargs=True)
                  for name, module in _hookable(model)]
        with torch.random.fork_rng(devices=[]):
            Recorder(model.train(), sink).run(x)
    finally:
        for hook in hooks:
            hook.remove()
        for b, saved in buffers:
            b.copy_(saved)
        model.train(was_training)
    return sink


def acting(layers: list[StochasticLayer]) -> list[StochasticLayer]:
    return [layer for layer in layers if layer.acts]


def applications(layers: list[StochasticLayer], calls: Mapping[str, int], observed: bool) -> list[StochasticLayer]:
    """Each layer once per call in a pass (``calls``: module name -> calls; a rate found at a call is one call of its
    own, once): torchvision's Swin applies one
    ``StochasticDepth`` module to both branches of a block where timm's has two ``DropPath`` modules, and the two
    draw the same random numbers per application. ``observed``: the calls were counted in a train-mode pass, and a
    layer never called there applies no rate (timm builds a ``DropPath`` in each block and calls it only where the
    block has a residual); else they come from an eval pass, which may skip a layer called in train mode alone,
    and each layer counts at least once."""
    return [layer for layer in layers for _ in range(1 if layer.call else calls.get(layer.module, 0) if observed
                                                      else max(1, calls.get(layer.module, 0)))]


def summary(layers: list[StochasticLayer]) -> str:
    """The acting rates (one entry per application) in a few words, with what each draw drops where that is known:
    ``Dropout.p 0.5 x2 (single values)``, ``StochasticDepth.p 0.00588 to 0.0941 x16 (whole samples)``."""
    parts = []
    for (label, unit), group in groupby(acting(layers), key=lambda layer: (layer.label, layer.unit)):
        rates = [layer.rate for layer in group]
        low, high = min(rates), max(rates)
        spread = f"{low:g}" if low == high else f"{low:g} to {high:g}"
        parts.append(f"{label} {spread}" + (f" x{len(rates)}" if len(rates) > 1 else "")
                     + (f" ({unit})" if unit else ""))
    return ", ".join(parts) or "none"


PROBE_BATCH, PROBE_SIDE, PROBE_DRAWS = 16, 6, 8  # the probe ``dropped_unit`` runs: its shape, and how many draws
PROBE_RATE = 0.5


def dropped_unit(module: nn.Module, attribute: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> str:
    """What one draw of a stochastic layer holding no modules or tensors drops (``_unit_of``), the module called on
    the probe in train mode at rate ``PROBE_RATE``; its rate and mode are given back. ``""`` where it holds any."""
    if next(module.children(), None) is not None or next(module.parameters(), None) is not None \
            or next(module.buffers(), None) is not None:
        return ""
    rate, was_training = getattr(module, attribute), module.training
    try:
        setattr(module, attribute, PROBE_RATE)
        module.train()
        return _unit_of(module, shape, dtype, seed)
    finally:
        setattr(module, attribute, rate)
        module.train(was_training)


def _unit_of_call(call: tuple[Callable, tuple, dict] | None, rate: float, seed: int) -> str:
    """What the drawing call a module made in its own code (``F.dropout(x, self.drop_rate, self.training)``)
    drops: made again on the probe in place of its data, every argument equal to the layer's rate at
    ``PROBE_RATE``. ``""`` where there is no such call, or no argument holds the rate (its draw is not a dropout of
    its data at that rate)."""
    if call is None:
        return ""
    func, args, kwargs = call
    slots = [a for a in [*args, *kwargs.values()] if isinstance(a, _Slot)]
    if not slots or not any(a == rate for a in [*args, *kwargs.values()] if isinstance(a, float)):
        return ""

    def again(probe: torch.Tensor) -> Any:
        def put(value: Any) -> Any:
            if value is slots[0]:
                return probe
            return PROBE_RATE if isinstance(value, float) and value == rate else value
        return func(*[put(a) for a in args], **{k: put(v) for k, v in kwargs.items()})

    if any(isinstance(a, _Slot) for a in slots[1:]):
        return ""  # other tensors in the call: made again with the probe alone, it would compute something else
    return _unit_of(again, slots[0].shape, slots[0].dtype, seed)


def _unit_of(draw: Callable[[torch.Tensor], Any], shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> str:
    """What one ``draw`` (a stochastic layer, or its drawing call, at rate ``PROBE_RATE``) drops, seen on a probe of
    ones shaped like its input (a batch of ``PROBE_BATCH``, each other dimension at most ``PROBE_SIDE``) in
    ``PROBE_DRAWS`` calls: ``"single values"``, ``"whole channels"`` (every value of a channel of a sample at once:
    dropout2d), ``"whole samples"`` (drop-path, stochastic depth), ``"the whole batch"``, or the dimensions it drops
    whole. Dimensions of size 1 in the input do not count (on a 1x1 map a channel is a single value). ``""`` where
    that is not seen: the draw fails on the probe or returns another shape, or no call both drops and keeps a value.
    The global random state is given back."""
    if not shape:
        return ""
    probe = torch.ones((PROBE_BATCH, *(min(size, PROBE_SIDE) for size in shape[1:])), dtype=dtype)
    masks = []
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for _ in range(PROBE_DRAWS):
                out = draw(probe.clone())
                if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
                    return ""
                masks.append(out == 0)
    except MODEL_FAILURES:
        return ""  # it takes another input than a tensor shaped like its own: what it drops is not seen
    mask = torch.stack(masks)  # draw, then the probe's dimensions
    if not mask.any() or mask.all():
        return ""
    sized = [d for d in range(probe.ndim) if probe.shape[d] > 1]
    whole = [d for d in sized if bool((mask == mask.narrow(d + 1, 0, 1)).all())]
    if not whole:
        return "single values"
    if whole == sized:
        return "the whole batch"
    if whole == [d for d in sized if d != 0]:
        return "whole samples"
    if 1 in sized and whole == [d for d in sized if d >= 2]:
        return "whole channels"
    return f"patterns shared along dimensions {', '.join(map(str, whole))}"


@contextmanager
def rates_off(model: nn.Module, layers: list[StochasticLayer]):
    """Each layer's rate set to zero while the block runs (idle rates too, which changes nothing), then given
    back; every dropout call made at rate zero (``DropoutCallsOff``, yielded: what it turned off), and every rate
    a module's forward is given under a known name (``RATE_KEYWORDS``, by keyword or by position) given as zero,
    listed in the same ``turned_off`` (whether it is empty tells the caller to look for rates at the calls): for
    train-mode passes alone (see the module docstring)."""
    held = [(model.get_submodule(layer.module), layer.attribute) for layer in layers if not layer.call]
    rates = [getattr(module, attribute) for module, attribute in held]
    calls = DropoutCallsOff()

    def zero_rates(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        given = forward_rates(module, args, kwargs)
        if not given:
            return None
        calls.turned_off += [(f"{type(module).__name__}.forward({name})", rate) for name, (_, rate) in given.items()]
        at = {i for i, _ in given.values() if i is not None}
        return (tuple(0.0 if i in at else a for i, a in enumerate(args)),
                {k: 0.0 if k in given else v for k, v in kwargs.items()})

    hooks = []
    try:
        for module, attribute in held:
            setattr(module, attribute, 0.0)
        hooks += [module.register_forward_pre_hook(zero_rates, with_kwargs=True) for _, module in _hookable(model)]
        with calls:
            yield calls
    finally:
        for hook in hooks:
            hook.remove()
        for (module, attribute), rate in zip(held, rates, strict=True):
            setattr(module, attribute, rate)


def _hookable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The named modules a forward hook can be put on: not a TorchScript module, which takes none (a scripted part
    runs outside Python: no keyword it is given reaches a hook)."""
    return [(name, module) for name, module in model.named_modules() if not isinstance(module, torch.jit.ScriptModule)]


def _drawn_unit(func: Callable, args: tuple, kwargs: dict, shape: tuple[int, ...]) -> str:
    """What a draw made for the purpose (``torch.rand((batch, 1, 1, 1))`` in a hand-written drop-connect, not a
    dropout of data) can drop of an input of ``shape``: one number per sample ("whole samples"), per channel of a
    sample ("whole channels") or per value ("single values"), read off the size it is drawn at; "" where that size
    is not an input's (batch first) or is not given as the call's sizes."""
    sizes = kwargs.get("size", args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args)
    if not sizes or not all(type(s) is int for s in sizes) or len(sizes) != len(shape) or sizes[0] != shape[0] \
            or shape[0] == 1:  # one sample: a draw per sample is a draw for the whole batch, not told apart
        return ""
    drawn = [s == full for s, full in zip(sizes, shape)]
    kept_whole = [s == 1 for s in sizes[1:]]
    if all(drawn):
        return "single values"
    if all(kept_whole):
        return "whole samples"
    if len(shape) > 2 and drawn[1] and all(kept_whole[1:]):
        return "whole channels"
    return ""


def units_compared(candidate: list[StochasticLayer], reference: list[StochasticLayer]) -> tuple[int | None,
                                                                                                 int | None]:
    """For two lists of the same acting rates (``rates_match``), applied in order: where the first pair drops other
    units (both seen), and where the first pair is of other classes with what one of them drops not seen; each
    ``None`` where there is none. Layers of one class and attribute draw alike at one rate, seen or not."""
    differ = unseen = None
    for i, (a, b) in enumerate(zip(acting(candidate), acting(reference), strict=True)):
        if a.unit and b.unit:
            if a.unit != b.unit and differ is None:
                differ = i
        elif a.label != b.label and unseen is None:
            unseen = i
    return differ, unseen


def rates_match(candidate: list[StochasticLayer], reference: list[StochasticLayer]) -> bool:
    """The same acting rates, in the same order: the train-mode distributions can then be the same
    (where each layer sits is checked by the deterministic train step)."""
    return [layer.rate for layer in acting(candidate)] == [layer.rate for layer in acting(reference)]
