"""The one registry that models, tests, benchmarks and the report all read.

Two tables:

* ``MODELS``: each hand-written architecture by name (``resnet50``), its family and
  builder. Filled by ``@register_model`` in ``repro/models/<family>.py``.
* ``REFERENCES``: each ecosystem model the suite reproduces (``timm:resnet50``), the
  hand-written model and settings that match it, and the porting rules between their
  tensor names. Filled by ``register_reference`` in ``repro/ports/<family>.py``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

from reference import KNOWN_SOURCES, UnknownNameError
from repro.port_rules import PortRules

__all__ = [
    "KNOWN_SOURCES", "MODELS", "REFERENCES", "ModelEntry", "ReferenceEntry", "UnknownNameError", "create_model",
    "create_model_from_entry", "list_models", "list_references", "model_entry", "reference_entry", "references_for",
    "register_model", "register_reference",
]

def _closest(name: str, known: list[str], n: int = 3) -> str:
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    input_size: int = 224  # native resolution (square)


@dataclass(frozen=True)
class ReferenceEntry:
    spec: str  # "timm:resnet50"
    model: str  # hand-written model name
    rules: PortRules
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  # ours, to match this reference
    # Settings that switch off dropout / drop-path on both sides for train-mode comparison.
    deterministic_reference_kwargs: Mapping[str, Any] = field(default_factory=dict)
    deterministic_model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_size: int | None = None  # None: the hand-written model's native resolution
    expect_bit_exact: bool = True  # recorded by the equivalence tests; False says why in ``note``
    note: str = ""

    @property
    def source(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.spec.split(":", 1)[1]

    @property
    def resolution(self) -> int:
        return self.input_size or MODELS[self.model].input_size


_MODELS: dict[str, ModelEntry] = {}
_REFERENCES: dict[str, ReferenceEntry] = {}
MODELS: Mapping[str, ModelEntry] = MappingProxyType(_MODELS)
REFERENCES: Mapping[str, ReferenceEntry] = MappingProxyType(_REFERENCES)


def register_model(family: str, input_size: int = 224) -> Callable:
    """Decorator for a builder ``def resnet50(**kwargs) -> nn.Module``; the function name is the model name."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name=name, family=family, builder=builder, input_size=input_size)
        return builder

    return decorate


def register_reference(spec: str, model: str, rules: PortRules, **fields: Any) -> ReferenceEntry:
    source, sep, name = spec.partition(":")
    if not sep or source not in KNOWN_SOURCES or not name:
        raise ValueError(f"reference spec must be '<{'|'.join(KNOWN_SOURCES)}>:<name>', got {spec!r}")
    if spec in _REFERENCES:
        raise ValueError(f"reference {spec!r} registered twice")
    if model not in _MODELS:
        raise ValueError(f"reference {spec!r} names unknown hand-written model {model!r}")
    entry = ReferenceEntry(spec=spec, model=model, rules=rules, **fields)
    _REFERENCES[spec] = entry
    return entry


def model_entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name not in _MODELS:
        raise UnknownNameError(
            f"unknown hand-written model {name!r}.{_closest(str(name), sorted(_MODELS))} "
            f"repro.list_models() lists all {len(_MODELS)}."
        )
    return _MODELS[name]


def reference_entry(spec: str) -> ReferenceEntry:
    if spec not in _REFERENCES:
        raise UnknownNameError(
            f"{spec!r} is not a reference the suite covers.{_closest(str(spec), sorted(_REFERENCES))} "
            f"repro.list_references() lists all {len(_REFERENCES)}."
        )
    return _REFERENCES[spec]


def references_for(model: str) -> list[ReferenceEntry]:
    return [entry for entry in _REFERENCES.values() if entry.model == model]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """A hand-written model by name, randomly initialized. ``kwargs`` go to its builder."""
    return model_entry(name).builder(**kwargs)


def create_model_from_entry(entry: ReferenceEntry, **kwargs: Any) -> nn.Module:
    """The hand-written model configured as ``entry`` says matches its reference."""
    return create_model(entry.model, **{**entry.model_kwargs, **kwargs})


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def list_references(source: str | None = None) -> list[str]:
    """Every reference spec the suite covers (and proves equivalent), e.g. ``timm:resnet50``."""
    return sorted(s for s, e in _REFERENCES.items() if source is None or e.source == source)
