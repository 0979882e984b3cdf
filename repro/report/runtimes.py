"""Runtimes page: the seed's models where users deploy them, eager PyTorch beside the runtimes.

For each model, one interleaved run (``repro.bench.measure_interleaved``: round-robin, rotating
start) times, at batch 1 in fp32 on the CPU with torch's thread count (ONNX Runtime given the same
intra-op threads):

- ``timm`` (eager): the baseline every ratio is against, paired per round;
- ``ours`` (eager) and ``ours+fused`` (``repro.fuse``: BatchNorm folded, channels-last);
- ``timm+compile`` (``torch.compile``, default mode);
- ``timm+onnxruntime`` (``repro.export``, ONNX Runtime's CPU execution provider).

The best runtime of a model is the one with the lowest median. Whether the seed's scenario
recommendations (5.1) and the accuracy-per-latency frontier change when each model runs on its
best runtime is decided by the selection page's own code (``scenario_table``, ``pareto``), fed the
eager latencies and then the best-runtime latencies of the same run.

Goals (issue 16), checked on the page with a sign test over the interleaved rounds (the latency
page's ``goal_verdict``): ``repro.fuse`` beats ``timm+compile`` at batch 1 (else the page and the
README say which path is fastest and by how much), and ONNX export plus session build take under a
minute per model.

Cost: every model is compiled and exported (tens of seconds each on 2 cores), beyond the quick
report's 3-minute budget: the page is measured under ``--full`` (selection's candidate models) or
``--pages runtimes`` (the latency page's seed models) and writes its measurements to
``runtimes.json``; the default quick report rebuilds the page from the committed one
(``--runtimes-results``), saying when and where it was measured.
"""

from __future__ import annotations

import json
import statistics

import pandas as pd
import torch
from tqdm import tqdm

from repro.bench import BenchCase, measure_interleaved
from repro.environment import environment
from repro.registry import MODELS, references_for
from repro.report.base import (DEFAULT_RUNTIMES_RESULTS, MAX_PAGE_COLUMNS, Options, Page, Table, built_from,
                               read_results)
from repro.report.latency import _round_ratios, _spread, goal_verdict
from repro.report.measure import model_stats, torchvision_builder
from repro.seed import SEED_BENCHMARK_MODELS
from repro.report.selection import candidates, pareto, scenario_table, timed_as, torchvision_accuracy

# Runtime label -> the implementation timed for it ("{ref}" is the model's timm reference).
RUNTIMES = {
    "timm eager": "{ref}",
    "ours eager": "ours",
    "ours fused": "ours+fused",
    "timm compile": "{ref}+compile",
    "timm onnxruntime": "{ref}+onnxruntime",
}
BASELINE = "timm eager"
FUSED, COMPILED, ONNX = "ours fused", "timm compile", "timm onnxruntime"
SETUP_BUDGET_S = 60.0  # ONNX export + session build per model (issue 16)
ROUNDS = 9  # a one-sided sign test over 9 rounds decides at 8 of 9 (p = 0.02)
MIN_RUN_TIME = 0.1
RESULTS_FORMAT = 1  # runtimes.json's layout
# What the page reads from runtimes.json besides its measurements.
RESULTS_FIELDS = {"environment": (dict,), "threads": (int,), "rounds": (int,), "min_run_time": (int, float)}


def baseline_reference(model: str) -> str | None:
    """The timm reference of ``model`` (the baseline), else its first reference, else None."""
    specs = [e.spec for e in references_for(model)]
    timm = [s for s in specs if s.startswith("timm:")]
    return (timm or specs or [None])[0]


def resolution(model: str) -> int:
    """Where the top-1 was measured (the weights' crop), else the native resolution capped at 224."""
    builder = torchvision_builder(model)
    accuracy = torchvision_accuracy(builder) if builder else None
    return accuracy["resolution"] if accuracy else min(MODELS[model].input_size, 224)


def page_models(options: Options) -> list[str]:
    if options.full:
        return candidates(options)[0]
    return [m for m in options.selected(SEED_BENCHMARK_MODELS) if m in MODELS]


def measure(models: list[str], rounds: int, min_run_time: float) -> pd.DataFrame:
    """One row per (model, runtime): median, IQR, per-round medians (ms) and setup seconds."""
    rows = []
    for model in tqdm(models, desc="runtimes", unit="model"):
        ref = baseline_reference(model)
        if ref is None:
            continue
        labels = list(RUNTIMES)
        cases = [BenchCase(model, RUNTIMES[label].format(ref=ref), 1, resolution(model)) for label in labels]
        for label, case, stats in zip(labels, cases, measure_interleaved(cases, rounds, min_run_time), strict=True):
            rows.append({"model": model, "resolution": case.resolution, "runtime": label,
                         "implementation": case.implementation, **stats})
    return pd.DataFrame(rows)


def latency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: each runtime's median (IQR) ms and its speed-up over timm eager, paired per round
    (the median of per-round ratios, with their min-max)."""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        by = group.set_index("runtime")
        base = by.loc[BASELINE]
        row = {"model": model, "resolution": int(base["resolution"])}
        for runtime in RUNTIMES:
            if runtime not in by.index:
                continue
            r = by.loc[runtime]
            row[f"{runtime} (ms)"] = f"{r['median_ms']:.2f} ({r['iqr_ms']:.2f})"
            if runtime != BASELINE:
                ratios = _round_ratios(base["round_medians_ms"], r["round_medians_ms"])
                row[f"{runtime} speed-up"] = round(statistics.median(ratios), 3)
                row[f"{runtime} speed-up per round"] = _spread(ratios)
        rows.append(row)
    return pd.DataFrame(rows)


def best_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: the fastest runtime (lowest median), its latency and paired speed-up over timm
    eager, and what getting it ready cost (outside the timings)."""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        by = group.set_index("runtime")
        best = by["median_ms"].idxmin()
        ratios = _round_ratios(by.loc[BASELINE, "round_medians_ms"], by.loc[best, "round_medians_ms"])
        setup = {runtime: by.loc[runtime, "setup_s"] for runtime in by.index}
        rows.append({
            "model": model, "best runtime": best, "best (ms)": round(by.loc[best, "median_ms"], 2),
            f"{BASELINE} (ms)": round(by.loc[BASELINE, "median_ms"], 2),
            "speed-up over timm eager": round(statistics.median(ratios), 3), "per round": _spread(ratios),
            "compile + warm-up (s)": setup.get("timm compile", {}).get("warmup"),
            "ONNX export (s)": setup.get("timm onnxruntime", {}).get("export"),
            "ONNX Runtime session (s)": setup.get("timm onnxruntime", {}).get("session"),
        })
    return pd.DataFrame(rows)


def selection_frame(frame: pd.DataFrame, runtime: str | None) -> pd.DataFrame:
    """The selection page's columns for the models with torchvision top-1: latency under ``runtime``
    (None: each model's best), parameters counted at the measured resolution, both frontiers."""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        builder = torchvision_builder(model)
        accuracy = torchvision_accuracy(builder) if builder else None
        if accuracy is None:
            continue
        by = group.set_index("runtime")
        chosen = by["median_ms"].idxmin() if runtime is None else runtime
        rows.append({"model": model, "top-1 (%)": accuracy["top1"], "runtime": chosen,
                     "latency (ms)": round(by.loc[chosen, "median_ms"], 2),
                     "params (M)": round(model_stats(model, int(by["resolution"].iloc[0]))["params"] / 1e6, 2)})
    table = pd.DataFrame(rows, columns=["model", "top-1 (%)", "runtime", "latency (ms)", "params (M)"])
    table["on latency frontier"] = pareto(table, "latency (ms)")
    table["on params frontier"] = pareto(table, "params (M)")
    return table


def frontier_table(eager: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    merged = eager.merge(best, on=["model", "top-1 (%)", "params (M)"], suffixes=(" eager", " best"))
    merged["frontier changes"] = merged["on latency frontier eager"] != merged["on latency frontier best"]
    return merged[["model", "top-1 (%)", "latency (ms) eager", "on latency frontier eager", "runtime best",
                   "latency (ms) best", "on latency frontier best", "frontier changes"]]


def scenarios_table(eager: pd.DataFrame, best: pd.DataFrame, device: str, threads: int) -> pd.DataFrame:
    """The selection page's scenario verdicts on eager latencies and on best-runtime latencies."""
    a = scenario_table(eager, device, timed=timed_as("ours eager", threads))
    b = scenario_table(best, device, timed=timed_as("each model on its best runtime", threads))
    table = a[["scenario (seed 5.1)", "seed recommends"]].copy()
    # A criterion can name a threshold computed from the latencies (3x the fastest): each side states its own.
    table["criterion, ours eager"] = a["criterion"]
    table["verdict, ours eager"] = a["verdict"]
    table["criterion, best runtime"] = b["criterion"]
    table["verdict, best runtime"] = b["verdict"]
    table["measured, best runtime"] = b["measured"]
    table["changes"] = a["verdict"] != b["verdict"]
    return table


def _without_spread(table: pd.DataFrame) -> tuple[str, ...]:
    """The page shows medians and speed-ups; the input resolution and per-round spreads stay in the CSV."""
    return tuple(c for c in table.columns if not c.endswith("per round") and c != "resolution")


def build_tables(frame: pd.DataFrame, device: str, threads: int) -> list[Table]:
    eager, best = selection_frame(frame, "ours eager"), selection_frame(frame, None)
    tables = [
        Table("runtimes_latency", "Batch-1 fp32 latency per runtime (median (IQR) ms) and speed-up over timm eager",
              latency_table(frame), "Speed-up = timm eager / runtime, the median of per-round ratios (each round "
              "times every runtime back to back), with its min-max over the rounds (in the CSV).",
              _without_spread(latency_table(frame))),
        Table("runtimes_best", "The best runtime per model", best_table(frame),
              "Setup costs are outside the timings: torch.compile's compilation happens in the two warm-up calls; "
              "ONNX export (repro.export) and the ONNX Runtime session are built once per model."),
    ]
    if len(eager):
        tables += [
            Table("runtimes_frontier", "Accuracy-per-latency frontier: ours eager vs each model on its best runtime",
                  frontier_table(eager, best), "Top-1: torchvision IMAGENET1K_V1 metadata (as on the selection page). "
                  "Frontier: no other model here is at most as slow and more accurate (selection's `pareto`)."),
            Table("runtimes_scenarios", "The seed's scenarios (5.1) with each model on its best runtime",
                  scenarios_table(eager, best, device, threads), "Criteria and verdicts are the selection page's "
                  "(`scenario_table`), over the models measured on this page only ('not measured' names the rest), "
                  "with this page's latencies (torch's thread count; the selection page times one thread)."),
        ]
    return tables


def goals_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: is the fused model faster than timm + torch.compile (paired per round, sign test), and do
    ONNX export and session build fit in ``SETUP_BUDGET_S``?"""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        by = group.set_index("runtime")
        if FUSED in by.index and COMPILED in by.index:
            ratios = _round_ratios(by.loc[COMPILED, "round_medians_ms"], by.loc[FUSED, "round_medians_ms"])
            rows.append({"model": model, "goal": "ours fused faster than timm compile",
                         "measured": f"timm compile / ours fused = {statistics.median(ratios):.3f}",
                         "per round": _spread(ratios), "verdict": goal_verdict(ratios, 1.0, "above")})
        if ONNX in by.index:
            setup = by.loc[ONNX, "setup_s"]
            seconds = setup.get("export", 0.0) + setup.get("session", 0.0)
            rows.append({"model": model, "goal": f"ONNX export + session build < {SETUP_BUDGET_S:.0f} s",
                         "measured": f"{seconds:.1f} s", "per round": "",
                         "verdict": "✓" if seconds < SETUP_BUDGET_S else "✗"})
    return pd.DataFrame(rows, columns=["model", "goal", "measured", "per round", "verdict"])


def findings(frame: pd.DataFrame, goals: pd.DataFrame, scenarios: pd.DataFrame | None) -> str:
    """The page's opening, read off its tables."""
    best = best_table(frame)
    lines = []
    for runtime, group in best.groupby("best runtime", sort=False):
        speedups = group["speed-up over timm eager"]
        lines.append(f"{runtime} is the fastest runtime for {len(group)} of {len(best)} models "
                     f"({', '.join(group['model'])}; {speedups.min():.2f}x to {speedups.max():.2f}x timm eager)")
    fused = goals[goals["goal"].str.startswith("ours fused")]
    if len(fused):
        won = fused[fused["verdict"].str.startswith("✓")]["model"].tolist()
        lost = fused[fused["verdict"].str.startswith("✗")]["model"].tolist()
        lines.append(f"ours fused beats timm compile for {len(won)} of {len(fused)} models"
                     + (f" ({', '.join(won)})" if won else "") + (f"; compile is faster for {', '.join(lost)}"
                                                                  if lost else "")
                     + (f"; undecided for {len(fused) - len(won) - len(lost)}"
                        if len(fused) - len(won) - len(lost) else ""))
    setup = goals[goals["goal"].str.startswith("ONNX")]
    if len(setup):
        over = setup[setup["verdict"] == "✗"]["model"].tolist()
        lines.append(f"ONNX export and session build take under a minute for {len(setup) - len(over)} of "
                     f"{len(setup)} models" + (f" (not {', '.join(over)})" if over else ""))
    if scenarios is not None:
        changed = scenarios[scenarios["changes"]]["scenario (seed 5.1)"].tolist()
        lines.append(f"over the {best['model'].nunique()} models measured here, with each on its best runtime, "
                     + (f"the verdicts of {', '.join(changed)} change" if changed
                        else "no scenario verdict of seed 5.1 changes"))
    return "Findings: " + "; ".join(lines) + "."


def measure_results(models: list[str], rounds: int, min_run_time: float) -> dict:
    """The page's measurements with how they were made: what ``runtimes.json`` holds."""
    frame = measure(models, rounds, min_run_time)
    return {"format": RESULTS_FORMAT, "environment": environment(), "threads": torch.get_num_threads(),
            "rounds": rounds, "min_run_time": min_run_time, "measurements": json.loads(frame.to_json(orient="records"))}


def build_page(results: dict, source: str) -> Page | None:
    frame = pd.DataFrame(results["measurements"])
    if frame.empty:
        return None
    env = results["environment"]
    goals = goals_table(frame)
    tables = build_tables(frame, env["device"], results["threads"])
    scenarios = next((t.frame for t in tables if t.slug == "runtimes_scenarios"), None)
    intro = (
        f"{findings(frame, goals, scenarios)}\n\n"
        f"Where users deploy a model: batch 1, fp32, on {env['device']} with {results['threads']} threads "
        "(ONNX Runtime's intra-op threads set to the same), each model's runtimes timed side by side in one process, "
        f"interleaved round-robin ({results['rounds']} rounds of at least {results['min_run_time']} s each). "
        "Runtimes: `timm eager` (the baseline), `ours eager`, `ours fused` (`repro.fuse`), `timm compile` "
        "(`torch.compile`), `timm onnxruntime` (exported by `repro.export`, ONNX Runtime CPU execution provider). "
        "Every number names its runtime; absolute times on a shared machine move, the paired ratios less. "
        f"Measured {env['date']} on {env.get('cpu_model', 'a CPU whose model the measurements do not record')} "
        f"({source}); the header above is the build that wrote this page."
    )
    raw = frame.drop(columns=["round_medians_ms", "setup_s"]).assign(
        setup=[", ".join(f"{k} {v:.1f} s" for k, v in s.items()) for s in frame["setup_s"]])
    raw_table = Table("runtimes_raw", "Every measurement", raw,
                      "`runs` counts timed blocks, not calls: `torch.utils.benchmark`'s blocked_autorange times each "
                      "block of as many calls as fill it (one call of a slow model, hundreds of a fast one) and keeps "
                      "its mean, so `median_ms` and `iqr_ms` are over block means, and a fast model's spread per call "
                      "is wider than its IQR shows. Every column is in the CSV.",
                      tuple(raw.columns[:MAX_PAGE_COLUMNS]))
    goals_note = ("Speed-ups are paired per round; a goal is ✓ or ✗ only where a one-sided sign test over the rounds "
                  "says so (p < 0.05), else undecided.")
    tables = tables[:2] + [Table("runtimes_goals", "Speed goals, checked", goals, goals_note)] + tables[2:]
    return Page("runtimes", "Runtimes side by side: eager, fused, torch.compile, ONNX Runtime", intro,
                tables + [raw_table], files=[("runtimes.json", (json.dumps(results, indent=1) + "\n").encode())])


def build(options: Options) -> Page | None:
    """Measured under ``--full`` or ``--pages runtimes``; otherwise, or where ``--runtimes-results`` names a file of
    measurements, rebuilt from those (the committed ones by default)."""
    if options.from_json:
        return None  # measured here only: runtimes are timed side by side in one run
    named = options.runtimes_results != DEFAULT_RUNTIMES_RESULTS  # the user's file: read, not measured over
    if (options.full or "runtimes" in options.pages) and not named:
        return build_page(measure_results(page_models(options), ROUNDS, MIN_RUN_TIME),
                          "by `python -m repro.report --pages runtimes`")
    if not options.runtimes_results.is_file():
        return None
    rerun = "python -m repro.report --pages runtimes"
    results = read_results(options.runtimes_results, "runtimes", RESULTS_FORMAT, rerun, RESULTS_FIELDS,
                           ("measurements", ("model", "resolution", "runtime", "implementation", "median_ms", "iqr_ms",
                                             "runs", "round_medians_ms", "setup_s")))
    models = set(options.selected(m["model"] for m in results["measurements"]))
    results["measurements"] = [m for m in results["measurements"] if m["model"] in models]
    with built_from(options.runtimes_results, "runtimes", rerun):
        return build_page(results, f"read from `{options.runtimes_results}`; re-measure with `--pages runtimes`")
