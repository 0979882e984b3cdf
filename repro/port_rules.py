"""``PortRules``: which reference tensor goes to which hand-written tensor, as data.

An ordered list of regular-expression renames from a reference's tensor names to ours (first
full match wins). The registry stores one per reference; ``repro.porting`` applies them. This
module sits below both, so that neither has to import the other's upper layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PortRules:
    """Renames from one reference family's tensor names to the hand-written family's."""

    name: str
    source_type: str  # qualified class name of the reference model, e.g. "timm.models.resnet.ResNet"
    target_type: str  # qualified class name of the hand-written model
    renames: tuple[tuple[str, str], ...]
    _compiled: tuple[tuple[re.Pattern, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple((re.compile(p), r) for p, r in self.renames))

    def target_key(self, source_key: str) -> str | None:
        for pattern, replacement in self._compiled:
            if pattern.fullmatch(source_key):
                return pattern.sub(replacement, source_key, count=1)
        return None


SAME_NAMES = ((r"(.*)", r"\1"),)
