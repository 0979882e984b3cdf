"""Errata page: every checked claim of the seed, with a verdict and the measured value."""

from __future__ import annotations

import pandas as pd

from repro.report import Erratum, ErratumFn, Options, Page, Table


def build(options: Options, checks: list[ErratumFn]) -> Page:
    rows: list[Erratum] = [row for check in checks for row in check(options)]
    frame = pd.DataFrame(
        [{"seed section": r.section, "claim": r.claim, "verdict": "✓" if r.holds else "✗", "measured": r.measured} for r in rows],
        columns=["seed section", "claim", "verdict", "measured"],
    )
    wrong = sum(not r.holds for r in rows)
    intro = f"{len(rows)} claims of the seed checked by running code; {wrong} do not hold (✗)."
    return Page("errata", "Errata: the seed's claims, checked", intro, [Table("errata", "Claims", frame)])
