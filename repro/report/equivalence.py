"""Equivalence page: every reference pair, the settings our model is built with for it, its largest
differences, bit-identical or not."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import timm

from repro.environment import declared_floor
from repro.equivalence import EquivalenceResult, check_reference
from repro.registry import MODELS, REFERENCES, ReferenceEntry, reference_entry
from repro.report.base import Job, Options, Page, Table, computed, run_jobs

BUILT_WITH = "our model built with"
CHECK_SETTINGS = "also set for the check"
DEFAULTS = "defaults"  # the BUILT_WITH cell of a pair whose record sets nothing: ours as its builder builds it


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


def built_with(spec: str) -> dict[str, Any]:
    """The settings our model is built with to match ``spec``: the reference's one record, ``model_kwargs`` (what
    ``check_reference`` builds it with)."""
    return dict(reference_entry(spec).model_kwargs)


def settings_text(settings: Mapping[str, Any]) -> str:
    """``key=value, ...`` in the record's order; empty when there are none."""
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def configured_per_library(specs: list[str]) -> dict[str, list[str]]:
    """The hand-written models among ``specs`` matched against more than one library and built with different
    settings for each (their records' ``model_kwargs``), each with the settings that differ. Settings the check
    fixes for every reference (``deterministic_model_kwargs``: dropout, drop-path off) do not count: a model
    whose references differ only there is one model, checked alike."""
    entries: dict[str, list[ReferenceEntry]] = {}
    for spec in specs:
        entry = reference_entry(spec)
        entries.setdefault(entry.model, []).append(entry)
    differing = {}
    for model, same_model in sorted(entries.items()):
        if len({e.source for e in same_model}) < 2:
            continue
        fixed = {k for e in same_model for k in e.deterministic_model_kwargs}
        kwargs = [e.model_kwargs for e in same_model]
        keys = sorted({k for kw in kwargs for k in kw if k not in fixed and len({repr(o.get(k)) for o in kwargs}) > 1})
        if keys:
            differing[model] = keys
    return differing


def row(result: EquivalenceResult) -> dict[str, Any]:
    """One pair's row: its record's settings, its check's input, counts, differences and verdicts."""
    entry = reference_entry(result.spec)
    summary = result.summary()
    return {
        "reference": result.spec,
        "hand-written": result.model,
        BUILT_WITH: settings_text(built_with(result.spec)) or DEFAULTS,
        CHECK_SETTINGS: settings_text(entry.deterministic_model_kwargs),
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
        "note": entry.note,
    }


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


def intro(specs: list[str], rows: list[dict[str, Any]], full: bool) -> str:
    """What the page's checks are, in the mode that ran them, and what a pair matched both ways means."""
    exact = sum(r["bit-identical"] == "yes" for r in rows)
    equal = sum(r["equivalent"].startswith("yes") for r in rows)
    checked = (
        "the eval-mode output, then one train-mode step: its output, the input gradient, every parameter's "
        "gradient and the running statistics BatchNorm leaves behind"
        if full
        else "the eval-mode output only (quick mode: one check per pair; `--full` adds a train-mode step with "
        "input and parameter gradients and running statistics)"
    )
    text = (
        f"Findings: {equal} of {len(rows)} reference pairs are equivalent on the checks described here, "
        f"{exact} of them bit-identical.\n\n"
        "Each reference is built by its own library and every parameter and buffer randomized (random weights, "
        "not pretrained ones: no zero BatchNorm gammas; running statistics calibrated then perturbed). Its weights "
        f"are ported into the hand-written model, built with the settings its row's `{BUILT_WITH}` names "
        f"(`{DEFAULTS}`: as its builder builds it), and both run on one random input batch of the size in the `input` "
        f"column. Compared: parameter and buffer counts and {checked}. `equivalent` is decided on float64 copies "
        "of both models and the input (the tolerance in its cell); `bit-identical` means every compared tensor "
        "of the float32 models is equal element for element. A pass is shown on these random weights and this "
        "one input, not proven for every input."
    )
    if any(r[CHECK_SETTINGS] for r in rows):
        text += (
            " For the check both sides are also built with dropout and drop-path off (ours: the CSV's "
            f"`{CHECK_SETTINGS}` column), so that a train-mode step draws no random masks (eval mode applies neither)."
        )
    reduced = [s for s in specs if reference_entry(s).resolution < MODELS[reference_entry(s).model].input_size]
    if reduced:
        text += (
            f" {len(reduced)} pairs run below their model's native resolution; each one's `note` in the CSV says "
            "why (and, where one does, which test checks the native size)."
        )
    both = configured_per_library(specs)
    if both:
        text += (
            f"\n\nWhere one hand-written model matches both libraries ({', '.join(both)}), it is one configurable "
            f"model built with each library's settings (its rows' `{BUILT_WITH}`), which does not make the two "
            "libraries' own models equal: how they compare with each other is on the [atlas page](atlas.md)."
        )
    return text + "\n\n" + timm_versions()


def build(options: Options) -> Page | None:
    specs = selected_references(options)
    if not specs:
        return None
    rows = [row(result) for result in check_all(specs, options.full)]
    return Page(
        "equivalence",
        "Equivalence with timm and torchvision",
        intro(specs, rows, options.full),
        [
            Table(
                "equivalence",
                "Every reference pair",
                pd.DataFrame(rows),
                page_columns=(
                    "reference",
                    "hand-written",
                    BUILT_WITH,
                    "input",
                    "params (reference)",
                    "params (ours)",
                    "checks",
                    "worst check",
                    "bit-identical",
                    "equivalent",
                ),
            )
        ],
    )
