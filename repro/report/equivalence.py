"""Equivalence page: every reference pair, its largest differences, bit-identical or not."""

from __future__ import annotations

import pandas as pd
import timm

from repro.environment import declared_floor
from repro.equivalence import EquivalenceResult, check_reference
from repro.registry import REFERENCES
from repro.report.base import Job, Options, Page, Table, computed, run_jobs


@computed()
def equivalence_check(item: tuple[str, bool]) -> EquivalenceResult:
    """Quick: eval outputs at batch 1. Full: batch 2, train-mode outputs, gradients and running stats too."""
    spec, full = item
    return check_reference(spec, batch=2 if full else 1, train=full)


def equivalence(spec: str, full: bool) -> EquivalenceResult:
    """The check of one reference, run once per report (pages share it)."""
    return equivalence_check((spec, full))


def check_all(specs: list[str], full: bool, workers: int | None = None) -> list[EquivalenceResult]:
    """Every check, the ones not yet made in ``workers`` processes (see ``run_jobs``). Building,
    randomizing and porting a network run on one core whatever the thread setting, so on two cores
    two processes finish in about half the time. A verdict does not depend on the split: both
    models of a pair always run in the same process."""
    run_jobs(equivalence_check.jobs((s, full) for s in specs), workers, desc="equivalence")
    return [equivalence(s, full) for s in specs]


def selected_references(options: Options) -> list[str]:
    models = set(options.selected(sorted({e.model for e in REFERENCES.values()})))
    return sorted(s for s, e in REFERENCES.items() if e.model in models)


def jobs(options: Options) -> list[Job]:
    return equivalence_check.jobs((spec, options.full) for spec in selected_references(options))


def timm_versions() -> str:
    """Which timm the verdicts are for: this run's; and where the test suite checks them at other versions
    (a page cannot see those runs: the README records when each last passed)."""
    floor = declared_floor("timm")
    text = f"These verdicts are for timm {timm.__version__}, the version this page ran on."
    if floor:
        text += (
            " tests/test_equivalence.py checks the same pairs (each equivalent in float64 and bit-identical in"
            f" float32, eval and train mode) at the declared floor, timm {floor} (`tox -e lowest`), and at the"
            " newest release (`tox -e newest`); the README's tox paragraph records the last run of each that passed."
        )
    return text + (
        " No porting rule in `reference/` depends on the timm version: a rule that stops holding in a new timm"
        " release fails its pair in the test suite, it does not pass silently."
    )


def build(options: Options) -> Page | None:
    specs = selected_references(options)
    if not specs:
        return None
    rows = []
    for spec, result in zip(specs, check_all(specs, options.full), strict=True):
        summary = result.summary()
        rows.append(
            {
                "reference": spec,
                "hand-written": result.model,
                "input": "x".join(map(str, result.input_size)),
                "params (reference)": summary["params_reference"],
                "params (ours)": summary["params_ours"],
                "eval max abs diff": summary["eval_max_abs"],
                "eval max rel diff": summary["eval_max_rel"],
                "checks": len(result.all_diffs()),
                "worst check": f"{summary['worst_check']} ({summary['worst_max_rel']:.2g})",
                "bit-identical": "yes" if result.bit_exact else "no",
                "equivalent": (
                    f"yes ({result.tolerance.dtype}, rtol {result.tolerance.rtol:.2g})"
                    if not result.failures()
                    else "NO: " + "; ".join(result.failures()[:2])
                ),
            }
        )
    what = (
        "eval outputs, train-mode outputs, input and parameter gradients, running statistics"
        if options.full
        else "eval outputs (run with --full for gradients and running statistics)"
    )
    exact = sum(r["bit-identical"] == "yes" for r in rows)
    equal = sum(r["equivalent"].startswith("yes") for r in rows)
    intro = (
        f"Findings: {equal} of {len(rows)} reference pairs are equivalent, {exact} of them bit-identical.\n\n"
        "Each reference is built by its own library, every parameter and buffer randomized (no zero "
        "BatchNorm gammas; running statistics calibrated then perturbed), its weights ported into the "
        f"hand-written model, and both run on the same input. Compared: parameter counts and {what}. "
        "`equivalent` is decided on float64 copies of both models and the input (the tolerance in its cell); "
        "`bit-identical` means every compared tensor of the float32 models is equal element for element. Each "
        "pair runs on the one input size in its `input` column (EfficientNet B4-B7 at reduced size here; "
        "`tests/test_efficientnet.py` adds their native resolutions).\n\n"
        + timm_versions()
    )
    return Page(
        "equivalence",
        "Equivalence with timm and torchvision",
        intro,
        [
            Table(
                "equivalence",
                "Every reference pair",
                pd.DataFrame(rows),
                page_columns=(
                    "reference",
                    "hand-written",
                    "input",
                    "params (reference)",
                    "params (ours)",
                    "eval max abs diff",
                    "checks",
                    "worst check",
                    "bit-identical",
                    "equivalent",
                ),
            )
        ],
    )
