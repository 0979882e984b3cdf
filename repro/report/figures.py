"""The seed's top-1 figures against their sources: one rule for every table of the seed that quotes
them (3.2's ``reference_acc``, 5.2's trade-off table), so the same defect reads the same everywhere.

Two checks per table. (1) A figure holds if a source it can come from rounds to it
(``repro.seed.rounds_to``): the model's own paper (named table, with its evaluation protocol) or
torchvision's IMAGENET1K_V1 metadata (single-crop). (2) A table compares like with like only if
one source and protocol (its *kind*) gives every figure it holds; figures of several kinds side by
side compare recipes and protocols as well as models. Where a table sets EfficientNets against
ResNets, the one source that lists both with one protocol is named: EfficientNet paper Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from repro.report.base import Erratum
from repro.seed import EFFICIENTNET_TABLE_2_RESNETS, PAPER, PaperFigure, rounds_to

TORCHVISION_KIND = "torchvision IMAGENET1K_V1 metadata, single-crop"


@dataclass(frozen=True)
class Top1Figure:
    label: str  # as the seed names the model
    model: str  # hand-written model name
    figure: float  # the seed's figure, as printed
    torchvision: float | None  # IMAGENET1K_V1 top-1

    @property
    def paper(self) -> PaperFigure | None:
        return PAPER.get(self.model)

    def kinds(self) -> list[str]:
        """The kinds of source (source and protocol) whose figure rounds to the seed's."""
        candidates = [(self.paper.top1, self.paper.kind)] if self.paper and self.paper.top1 is not None else []
        candidates += [(self.torchvision, TORCHVISION_KIND)] if self.torchvision is not None else []
        return [kind for value, kind in candidates if rounds_to(value, self.figure)]

    def matches(self) -> str:
        """'paper', 'torchvision', 'paper/torchvision' or 'neither'."""
        names = ["torchvision" if kind == TORCHVISION_KIND else "paper" for kind in self.kinds()]
        return "/".join(names) or "neither"

    def evidence(self) -> str:
        paper = self.paper
        paper = f"paper {paper.top1:g} ({paper.kind})" if paper and paper.top1 is not None else "no paper figure"
        tv = f"torchvision V1 {self.torchvision:.2f}" if self.torchvision is not None else "no torchvision figure"
        return f"{self.label} {self.figure:g}: {self.matches()} ({paper}; {tv})"


def paper_top1_cell(model: str) -> str:
    """A paper's top-1 with its protocol, for a table column: '72.12 (10-crop)'."""
    paper = PAPER.get(model)
    return f"{paper.top1:g} ({paper.crop})" if paper and paper.top1 is not None else ""


def one_source_note(figures: list[Top1Figure]) -> str:
    """Where a table sets EfficientNets against ResNets: the one source that lists both with one protocol."""
    families = {f.model.split("_")[0].rstrip("0123456789") for f in figures}
    if not {"efficientnet", "resnet"} <= families:
        return ""
    effs = [PAPER[f.model] for f in figures if f.model.startswith("efficientnet") and f.model in PAPER][:2]
    listed = "; ".join(
        f"{m.replace('resnet', 'ResNet-')} {r.top1:.1f}% ({r.params_m:g}M parameters)"
        for m, r in EFFICIENTNET_TABLE_2_RESNETS.items()
    )
    beside = ", ".join(f"{e.model.replace('efficientnet_b', 'B')} {e.top1:.1f}% ({e.params_m:g}M)" for e in effs)
    source = next(iter(EFFICIENTNET_TABLE_2_RESNETS.values())).kind
    return f"one source for both families: {source} lists {listed}, beside {beside}"


def top1_errata(section: str, table: str, figures: list[Top1Figure]) -> list[Erratum]:
    """(1) the figures a source gives, one row; (2) whether they are of one kind, one row. Figures no
    source gives are the caller's own defect row."""
    held = [f for f in figures if f.kinds()]
    if not held:
        return []
    common = set(held[0].kinds()).intersection(*(f.kinds() for f in held[1:]))
    kinds = sorted({k for f in held for k in f.kinds()})
    return [
        Erratum(
            section,
            f"{table}: the top-1 figures of {', '.join(f.label for f in held)} each match a source",
            True,
            "; ".join(f.evidence() for f in held),
        ),
        Erratum(
            section,
            f"{table} compares its top-1 figures like for like (one source and evaluation protocol)",
            bool(common),
            (
                f"every figure matches {sorted(common)[0]}"
                if common
                else f"no one source gives all {len(held)} figures; they come from {len(kinds)} kinds: "
                + "; ".join(kinds)
                + ". "
                + "; ".join(f"{f.label}: {' or '.join(f.kinds())}" for f in held)
            ),
            note=one_source_note(held),
        ),
    ]
