"""Errata page: every checked claim of the seed, in the seed's order, with its outcome, the evidence
and a link to the page that shows it. The rows are the pages' own (``Page.errata``): nothing is
recomputed here."""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from repro.environment import environment
from repro.report.base import Erratum, Options, Outcome, Page, Table, section_key
from repro.seed.text import section_lines

RULES = (
    "How to read a verdict. Three outcomes: ✓ holds; ✗ does not hold; not decided here: the evidence available"
    " here cannot decide it (the row says what would). A claim with parts is split into rows, one checkable "
    "statement each, with its own outcome and evidence. A number the seed quotes is checked against the source"
    " it can come from (the paper's table, or torchvision's weight metadata, both named in the row); the other"
    " source's value is given beside it as a different fact. A claim its own source decides (a paper's table, "
    "figure or section, named in the row) is decided there; a local experiment beside it is context. Rounding:"
    " a figure printed with k decimals holds if its source rounds to it at k decimals (79 holds for 79.1 and "
    "78.64; 79.1 does not hold for 78.64). A claim is ✗ only where the evidence can refute it; an experiment "
    "too small to refute a claim does not refute it (a short training run decides a claim at its own budget "
    "only, and the row says the budget). A claim about a device (a phone, a GPU) is decided only by "
    "measurements on that device; a timing claim that names none is decided on the device measured here, which"
    " the row names."
)


def _evidence(row: Erratum) -> str:
    parts = [row.measured]
    if row.note:
        parts.append(f"Note: {row.note}")
    if row.outcome is Outcome.UNDECIDED:
        parts.append(f"Would decide it: {row.decide}")
    return " ".join(parts)


def declared_python() -> str | None:
    """The Python version the seed declares in its environment section (section 1), e.g. '3.12+'."""
    text = " ".join(section_lines("1"))
    m = re.search(r"Python\s*(\d+\.\d+\+?)", text)
    return m.group(1) if m else None


def python_note() -> str:
    """Where this report's Python differs from the one the seed declares, say so."""
    declared, ours = declared_python(), environment()["python"]
    if declared is None:
        return ""
    floor = tuple(int(x) for x in declared.rstrip("+").split("."))
    if tuple(int(x) for x in ours.split(".")[:2]) >= floor:
        return ""
    return f" The seed declares Python {declared} (section 1); these checks ran its code on Python {ours}."


def build(options: Options, pages: list[Page], linked: set[str]) -> Page:
    rows = sorted((row for page in pages for row in page.errata), key=lambda r: section_key(r.section))
    frame = pd.DataFrame(
        [
            {
                "seed section": r.section,
                "claim": r.claim,
                "verdict": r.outcome.value,
                "evidence": _evidence(r),
                "page": f"[{r.page}]({r.page}.md)" if r.page in linked else r.page,
            }
            for r in rows
        ],
        columns=["seed section", "claim", "verdict", "evidence", "page"],
    )
    counts = Counter(r.outcome for r in rows)
    summary = ", ".join(
        f"{counts[o]} {label}"
        for o, label in (
            (Outcome.HOLDS, "hold (✓)"),
            (Outcome.FAILS, "do not hold (✗)"),
            (Outcome.UNDECIDED, "not decided here"),
        )
    )
    intro = (
        f"{len(rows)} claims of the seed, checked by running code, by reading it, or against their sources: "
        f"{summary}. A claim is what the seed's text states, or what its printed code implies (that it runs as "
        f"printed, that it computes what it names, that a function it defines is used): a code row names the code "
        f"in its claim. One row per checked claim, holding or not; where a defect recurs, its "
        f"instances are listed in its row.{python_note()}\n\n{RULES}"
    )
    return Page(
        ERRATA_SLUG,
        "Errata: the seed's claims, checked",
        intro,
        [Table("errata", "Claims, in the seed's order", frame)],
    )


ERRATA_SLUG = "errata"
