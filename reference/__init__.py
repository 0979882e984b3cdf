"""Adapters over timm and torchvision: the models the hand-written ones are proven against.

``create("timm:resnet50")`` or ``create("torchvision:resnet50")`` builds the ecosystem's own
model, randomly initialized unless ``pretrained=True`` (the library's own loader: hub or local
cache) or ``weights=PATH`` (a local ``.safetensors`` or torch state-dict file).

This package is the bottom layer: it imports torch, timm, torchvision and nothing from
``repro``. Which references the suite covers is ``repro``'s fact (``repro.list_references()``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from reference.weights import load_weights_file

__all__ = ["KNOWN_SOURCES", "create", "parse_spec", "library_models", "PretrainedUnavailableError", "UnknownNameError"]

KNOWN_SOURCES = ("timm", "torchvision")


class UnknownNameError(KeyError):
    """An unknown model name or reference spec. The message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


class PretrainedUnavailableError(RuntimeError):
    """``pretrained=True`` could not fetch weights (offline, no cache)."""


def library_models(source: str) -> list[str]:
    """Every model name the installed library offers."""
    if source == "timm":
        import timm

        return timm.list_models()
    if source == "torchvision":
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)
    raise UnknownNameError(f"unknown source {source!r}; known sources: {', '.join(KNOWN_SOURCES)}")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"timm:resnet50"`` into ``("timm", "resnet50")``, checking both parts."""
    if not isinstance(spec, str) or ":" not in spec:
        raise UnknownNameError(
            f"reference spec must look like 'timm:<name>' or 'torchvision:<name>', got {spec!r}; "
            f"known sources: {', '.join(KNOWN_SOURCES)}"
        )
    source, name = spec.split(":", 1)
    if source not in KNOWN_SOURCES:
        close = difflib.get_close_matches(source, KNOWN_SOURCES, n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(
            f"unknown source {source!r} in {spec!r}; known sources: {', '.join(KNOWN_SOURCES)}.{hint}"
        )
    known = library_models(source)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(f'{source}:{c}' for c in close)}?" if close else ""
        raise UnknownNameError(f"{source} has no model {name!r}.{hint}")
    return source, name


def create(spec: str, *, pretrained: bool = False, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build the reference model ``spec``; ``kwargs`` go to ``timm.create_model`` or torchvision's builder."""
    source, name = parse_spec(spec)
    if pretrained and weights is not None:
        raise ValueError("pass pretrained=True or weights=PATH, not both")
    if source == "timm":
        import timm

        if pretrained:
            return _pretrained(spec, lambda: timm.create_model(name, pretrained=True, **kwargs))
        model = timm.create_model(name, pretrained=False, **kwargs)
    else:
        import torchvision

        if pretrained:
            return _pretrained(spec, lambda: torchvision.models.get_model(name, weights="DEFAULT", **kwargs))
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def _pretrained(spec: str, build):
    try:
        return build()
    except OSError as err:  # no network and no local cache: hub and URL errors are all OSErrors
        raise PretrainedUnavailableError(
            f"pretrained weights for {spec} could not be fetched ({type(err).__name__}: {err}). "
            f"This machine may be offline: download the checkpoint elsewhere and pass weights=PATH "
            f"(a .safetensors or torch state-dict file)."
        ) from err
