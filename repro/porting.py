"""Strict, atomic, auditable weight porting from reference models into hand-written ones.

A port is driven by rules: ``PortRules`` (an ordered list of regular-expression renames from the
reference's tensor names to ours, first full match wins), or a plain mapping of source key to
target key, or a callable ``source_key -> target_key | None``. Every source tensor must map to
exactly one target tensor and every target tensor must be hit; shapes must agree, except a
Linear weight ``[out, in]`` and a 1x1 convolution weight ``[out, in, 1, 1]``, which are the same
numbers and are reshaped (recorded as a transform). Target tensors named in ``keep`` (a model's
own architecture constants, which ``repro.verify`` compares rather than copies) are accounted for
by being left as they are; nothing may map to them. Any violation raises ``PortError``
naming the tensors on both sides, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Union

import pandas as pd
import torch
from torch import nn

import reference
from repro.port_rules import SAME_NAMES, PortRules
from reference.weights import number_kind
from repro.registry import REFERENCES, create_model_from_entry, reference_entry

__all__ = [
    "SAME_NAMES", "PortError", "PortReport", "PortRules", "PortedTensor", "Rules", "from_reference", "plan_port",
    "port_weights",
]

# What a port may be driven by: registered-style rules, an explicit {source key: target key}
# mapping (every source key must be in it), or a function from a source key to its target key.
Rules = Union[PortRules, Mapping[str, str], Callable[[str], Union[str, None]]]


class PortError(ValueError):
    """Weights could not be ported; the target model was left unchanged."""




@dataclass(frozen=True)
class PortedTensor:
    source_key: str
    target_key: str
    shape: tuple[int, ...]
    transform: str  # "copy" or "reshape [a, b] -> [a, b, 1, 1]"


@dataclass
class PortReport:
    """What went where. ``pairs`` maps every source tensor to its target tensor."""

    source: str
    target: str
    rules: str
    pairs: list[PortedTensor]
    kept: tuple[str, ...] = ()  # target tensors left as they were (``keep``)

    @property
    def target_to_source(self) -> dict[str, str]:
        return {p.target_key: p.source_key for p in self.pairs}

    @property
    def transformed(self) -> list[PortedTensor]:
        return [p for p in self.pairs if p.transform != "copy"]

    @property
    def renamed(self) -> list[PortedTensor]:
        return [p for p in self.pairs if p.source_key != p.target_key]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [(p.source_key, p.target_key, p.shape, p.transform) for p in self.pairs],
            columns=["source", "target", "shape", "transform"],
        )

    def __str__(self) -> str:
        numel = sum(_numel(p.shape) for p in self.pairs)
        lines = [
            f"ported {len(self.pairs)} tensors ({numel:,} values) from {self.source} into {self.target} "
            f"with rules {self.rules!r}: {len(self.renamed)} renamed, {len(self.transformed)} reshaped"
            + (f"; {len(self.kept)} target tensors kept as they were" if self.kept else ""),
        ]
        lines += [f"  {p.source_key} -> {p.target_key} {list(p.shape)} ({p.transform})" for p in self.renamed[:20]]
        if len(self.renamed) > 20:
            lines.append(f"  ... {len(self.renamed) - 20} more renames (see .to_frame())")
        return "\n".join(lines)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _linear_conv_reshape(src: torch.Size, dst: torch.Size) -> str | None:
    if len(src) == 2 and tuple(dst) == (*src, 1, 1):
        return f"reshape {list(src)} -> {list(dst)} (Linear -> 1x1 conv)"
    if len(dst) == 2 and tuple(src) == (*dst, 1, 1):
        return f"reshape {list(src)} -> {list(dst)} (1x1 conv -> Linear)"
    return None


def _listing(items: list[str], limit: int = 12) -> str:
    shown = "\n    ".join(items[:limit])
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n    {shown}{more}"


def plan_port(
    source_state: Mapping[str, torch.Tensor],
    target_state: Mapping[str, torch.Tensor],
    rules: Rules,
    source_name: str = "source",
    target_name: str = "target",
    keep: Collection[str] = (),
) -> list[PortedTensor]:
    """Pair every source tensor with a target tensor (every target tensor but those in ``keep``), or raise
    ``PortError`` listing every problem."""
    _check_holds_values(source_state, f"source {source_name}")
    _check_holds_values(target_state, f"target {target_name}")
    target_key_of, rules_name = _as_target_key(rules)
    pairs: list[PortedTensor] = []
    unmatched_source, unknown_target, bad_shape, bad_dtype = [], [], [], []
    claimed: dict[str, list[str]] = {}
    for key, tensor in source_state.items():
        target_key = target_key_of(key)
        if target_key is None:
            unmatched_source.append(f"{key} {list(tensor.shape)} (no rule matches)")
            continue
        claimed.setdefault(target_key, []).append(key)
        if target_key not in target_state:
            unknown_target.append(f"{key} {list(tensor.shape)} -> {target_key} (no such tensor in target)")
            continue
        dst = target_state[target_key]
        if number_kind(tensor) != number_kind(dst):
            bad_dtype.append(f"{key} {tensor.dtype} -> {target_key} {dst.dtype}")
            continue
        if tensor.shape == dst.shape:
            transform = "copy"
        else:
            transform = _linear_conv_reshape(tensor.shape, dst.shape)
            if transform is None:
                bad_shape.append(f"{key} {list(tensor.shape)} -> {target_key} {list(dst.shape)}")
                continue
        pairs.append(PortedTensor(key, target_key, tuple(dst.shape), transform))

    if isinstance(rules, Mapping):  # an explicit mapping names every source key: a stale one is a mistake
        unmatched_source += [f"{key} (named by the mapping; no such tensor in source)"
                             for key in rules if key not in source_state]
    duplicated = [f"{t} <- {', '.join(s)}" for t, s in claimed.items() if len(s) > 1]
    unfilled = [f"{k} {list(v.shape)}" for k, v in target_state.items() if k not in claimed and k not in keep]
    overwritten = [f"{t} <- {', '.join(s)}" for t, s in claimed.items() if t in keep]
    problems = []
    if unmatched_source or unknown_target:
        problems.append(f"source tensors without a partner:{_listing(unmatched_source + unknown_target)}")
    if unfilled:
        problems.append(f"target tensors nothing maps to:{_listing(unfilled)}")
    if overwritten:
        problems.append(f"target tensors to keep as they are, yet mapped to:{_listing(overwritten)}")
    if duplicated:
        problems.append(f"target tensors claimed by several source tensors:{_listing(duplicated)}")
    if bad_shape:
        problems.append(f"shape mismatches (source -> target):{_listing(bad_shape)}")
    if bad_dtype:
        problems.append(f"kind-of-number mismatches (floating, integer, bool, complex):{_listing(bad_dtype)}")
    if problems:
        raise PortError(
            f"cannot port {source_name} ({len(source_state)} tensors) into {target_name} "
            f"({len(target_state)} tensors) with rules {rules_name!r}; the target is unchanged.\n  "
            + "\n  ".join(problems)
        )
    return pairs


def _as_target_key(rules: Rules) -> tuple[Callable[[str], str | None], str]:
    """The rules as a function from source key to target key (None: no rule), and their name for reports."""
    if isinstance(rules, PortRules):
        return rules.target_key, rules.name
    if isinstance(rules, Mapping):
        bad = [f"{k!r}: {v!r}" for k, v in rules.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"a rules mapping must map source keys to target keys (str -> str), "
                            f"got {', '.join(bad[:3])}")
        return rules.get, f"explicit mapping of {len(rules)} keys"
    if callable(rules):
        return rules, getattr(rules, "__name__", type(rules).__name__)
    raise TypeError(f"rules must be PortRules, a mapping of source key to target key, or a callable, "
                    f"got {type(rules).__name__}")


def _rules_for(source: nn.Module, target: nn.Module) -> PortRules:
    source_type, target_type = _type_name(source), _type_name(target)
    candidates = {e.rules.name: e.rules for e in REFERENCES.values()
                  if (e.rules.source_type, e.rules.target_type) == (source_type, target_type)}
    if not candidates:
        known = sorted({f"{e.rules.source_type} -> {e.rules.target_type}" for e in REFERENCES.values()})
        raise PortError(f"no porting rules from {source_type} into {target_type}; known:{_listing(known)}")
    if len(candidates) > 1:
        raise PortError(f"several rule sets port {source_type} into {target_type}: pass rules= ({sorted(candidates)})")
    return next(iter(candidates.values()))


def port_weights(
    source: nn.Module | Mapping[str, torch.Tensor],
    target: nn.Module,
    rules: Rules | None = None,
    keep: Collection[str] = (),
) -> PortReport:
    """Copy every tensor of ``source`` into ``target`` and report what went where.

    ``rules`` is ``PortRules``, a mapping ``{source key: target key}`` or a callable
    ``source_key -> target_key | None``; it defaults to the registered rules for the two module
    types. ``keep`` names target tensors to leave as they are. Raises ``PortError``
    (target untouched) unless every tensor on both sides is accounted for with a fitting shape.
    """
    if not isinstance(target, nn.Module):
        raise TypeError(f"target must be an nn.Module, got {type(target).__name__}")
    if isinstance(keep, (str, bytes)) or not isinstance(keep, Collection):
        raise TypeError(f"keep must be a collection of target tensor names, got {type(keep).__name__}")
    if isinstance(source, nn.Module):
        source_state, source_name = source.state_dict(), _type_name(source)
        if rules is None:
            rules = _rules_for(source, target)
    elif isinstance(source, Mapping):
        source_state, source_name = source, "state dict"
        if rules is None:
            raise PortError("porting from a state dict needs rules=")
    else:
        raise TypeError(f"source must be an nn.Module or a state dict, got {type(source).__name__}")
    target_state = target.state_dict()
    _check_holds_values(source_state, f"source {source_name}")
    _check_holds_values(target_state, f"target {_type_name(target)}")
    unknown = sorted(set(keep) - set(target_state), key=str)
    if unknown:
        raise PortError(f"keep names tensors {target.__class__.__name__} does not have: {', '.join(unknown[:5])}")
    pairs = plan_port(source_state, target_state, rules, source_name, _type_name(target), keep)
    rules_name = _as_target_key(rules)[1]

    backup = {k: v.detach().clone() for k, v in target_state.items()}
    try:
        with torch.no_grad():
            for pair in pairs:
                target_state[pair.target_key].copy_(source_state[pair.source_key].reshape(pair.shape))
    except BaseException:
        with torch.no_grad():
            for key, tensor in target_state.items():
                tensor.copy_(backup[key])
        raise
    return PortReport(source_name, _type_name(target), rules_name, pairs, tuple(sorted(keep)))


def _check_holds_values(state: Mapping[Any, Any], side: str) -> None:
    """Raise ``PortError`` unless every entry is a named tensor holding dense values: a meta tensor has none to
    give or to receive (copying into one does nothing), a sparse one has no shape to copy by."""
    not_named = [repr(k) for k in state if not isinstance(k, str)]
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)]
    no_values = [f"{k} ({'meta' if v.is_meta else v.layout})" for k, v in state.items()
                 if isinstance(v, torch.Tensor) and (v.is_meta or v.layout != torch.strided)]
    for what, bad in (("keys that are not names", not_named), ("values that are not tensors", not_tensors),
                      ("tensors without dense values (meta or sparse)", no_values)):
        if bad:
            raise PortError(f"cannot port: the {side} has {what} ({len(bad)}), e.g. {', '.join(bad[:3])}; "
                            f"nothing was copied")


def from_reference(
    spec: str,
    *,
    source: nn.Module | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """The hand-written model configured to match ``spec``, holding the reference's weights.

    The weights come from ``source`` (an already built reference model) or else from
    ``reference.create(spec, pretrained=..., weights=...)``. Extra keyword arguments go to the
    hand-written builder (e.g. ``drop_rate=0.0``). The returned model is in the source's mode.
    """
    entry = reference_entry(spec)
    if source is None:
        source = reference.create(spec, pretrained=pretrained, weights=weights)
    elif pretrained or weights is not None:
        raise ValueError("pass either source= or pretrained=/weights=, not both")
    target = create_model_from_entry(entry, **model_kwargs)
    port_weights(source, target, entry.rules)
    return target.train(source.training)
