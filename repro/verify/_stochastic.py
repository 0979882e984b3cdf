"""Stochastic layers: found in a model, their rates listed, and turned off in a copy.

A model is stochastic in train mode where it draws random numbers: dropout, drop-path
(stochastic depth), anything that calls a random function. Such a layer is found by what its
rate is called, not by its class: a ``torch.nn`` dropout module (``p``), and any module with a
float rate attribute (``drop_prob`` as in timm's ``DropPath``, ``p`` beside ``mode`` as in
torchvision's ``StochasticDepth``, ``drop_rate`` as on a timm model that calls ``F.dropout``
before its classifier). It is turned off by setting that attribute to zero in a copy of the
model, never by swapping its class; what still draws random numbers after that is seen while
tracing the train step and reported as not turned off.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# The attributes a stochastic layer keeps its rate in. A module's "p" counts only where the
# module is a torch dropout module or has another sign of being a drop layer (a "mode").
RATE_ATTRIBUTES = ("drop_prob", "drop_rate", "drop_connect_rate", "dropout_rate", "dropout")


@dataclass(frozen=True)
class StochasticLayer:
    module: str  # its name in the model ("" for the model itself)
    kind: str  # the module's class name
    attribute: str  # where the rate is kept
    rate: float

    def __str__(self) -> str:
        return f"{self.module or '(root)'} ({self.kind}.{self.attribute}={self.rate:g})"


def _rate_attributes(module: nn.Module) -> list[str]:
    names = [a for a in RATE_ATTRIBUTES if isinstance(getattr(module, a, None), float)]
    is_drop_module = isinstance(module, nn.modules.dropout._DropoutNd) or isinstance(getattr(module, "mode", None), str)
    if is_drop_module and isinstance(getattr(module, "p", None), float):
        names.append("p")
    return names


def stochastic_layers(model: nn.Module) -> list[StochasticLayer]:
    """Every rate above zero, in the model's module order."""
    return [StochasticLayer(name, type(module).__name__, attr, getattr(module, attr))
            for name, module in model.named_modules()
            for attr in _rate_attributes(module) if getattr(module, attr) > 0.0]


def turn_off(model: nn.Module, layers: list[StochasticLayer]) -> None:
    """Set each layer's rate to zero (in place: call it on a copy)."""
    for layer in layers:
        setattr(model.get_submodule(layer.module), layer.attribute, 0.0)


def rates_match(candidate: list[StochasticLayer], reference: list[StochasticLayer]) -> bool:
    """The same rates, in the same order: the train-mode distributions can then be the same
    (where each layer sits is checked by the deterministic train step)."""
    return [layer.rate for layer in candidate] == [layer.rate for layer in reference]
