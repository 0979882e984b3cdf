"""Selection page: seed section 5.1's scenario table and 5.2's accuracy-per-parameter table, from measurements.

Findings and rules are on the page. Top-1 is ImageNet-1K accuracy from torchvision's weight metadata
(``IMAGENET1K_V1``, torchvision's first weights of each model, not one recipe: its ResNets trained with
torchvision's original reference recipe, its EfficientNet-B0-B4 ported from timm, B5-B7 from
lukemelas/EfficientNet-PyTorch; ``WeightsInfo.origin``; the best torchvision weights beside it), for each
registered hand-written model that has a torchvision reference (shown equivalent, so the
accuracy of those weights is the accuracy of the hand-written model holding them). Parameters and
GMACs are counted on the hand-written model at the resolution the top-1 was measured at (the
weights' crop size); latency is measured here, on the device the report runs on, with
``repro.bench.measure_interleaved`` (batch 1, all candidates interleaved round-robin, one CPU thread).

Departures from the seed's framing, and why: a scenario (or key insight) that names a device is
decided only by measurements on that device (``measured_on``), since relative latency depends on the
device, and one that recommends models for another task than classification (as backbones of detection or
segmentation networks) only by measurements of that task; elsewhere the reading here is shown as a proxy and the
verdict says what would decide it. Top-1
figures are judged by the rule shared with seed 3.2 (``repro.report.figures``).
"""

from __future__ import annotations

import functools

import pandas as pd
import torch

from repro.bench import BenchCase, measure_interleaved
from repro.environment import cpu_threads, environment
from repro.plotting import label_points, png_bytes, readable_log_axis, subplots
from repro.registry import MODELS
from repro.report.base import TIMING_THREADS, TIMING_THREADS_WHY, Erratum, Options, Outcome, Page, Table, findings
from repro.report.figures import Top1Figure, paper_top1_cell, top1_errata
from repro.report.measure import best_torchvision, model_stats, torchvision_builder, torchvision_v1
from repro.seed import (
    DETECTION_BACKBONE,
    EFFICIENTNET_TABLE_2_RESNETS,
    GPU,
    MOBILE_DEVICE,
    PAPER,
    SEED_INSIGHT_4_DEVICE,
    SEED_LABELS,
    SEED_MODELS,
    SEED_SCENARIOS,
    rounds_to,
)
from repro.seed.text import uncalled_functions

SEED_NAMED = tuple(dict.fromkeys([c.model for c in SEED_MODELS] + [m for s in SEED_SCENARIOS for m in s.recommended]))
QUICK_MAX_RESOLUTION = 300  # quick mode times the seed's models up to B3; B4-B7 (380-600 px) in --full
PARAM_BUDGETS_M = (3, 6, 10, 15, 30, 50, 100)
LATENCY_BUDGETS_X = (1.5, 2, 3, 5, 10, 20, 50)  # multiples of the fastest candidate's latency


def torchvision_accuracy(builder: str | None) -> dict | None:
    """Top-1 of IMAGENET1K_V1 and of the best torchvision weights, and the crop size they were measured at."""
    v1 = torchvision_v1(builder)
    if v1 is None:
        return None
    best = best_torchvision(builder)
    return {
        "top1": v1.top1,
        "resolution": v1.crop,
        "best_top1": best.top1,
        "best_weights": best.weights,
        "source": v1.source,
    }


def candidates(options: Options) -> tuple[list[str], list[str]]:
    """(models to measure, notes on what was left out and why)."""
    notes = []
    names = [
        n
        for n in options.selected(sorted(MODELS))
        if torchvision_builder(n) and torchvision_accuracy(torchvision_builder(n))
    ]
    if not options.full:
        quick = [
            n
            for n in names
            if n in SEED_NAMED and torchvision_accuracy(torchvision_builder(n))["resolution"] <= QUICK_MAX_RESOLUTION
        ]
        skipped = [n for n in names if n in SEED_NAMED and n not in quick]
        if skipped:
            notes.append(
                "quick mode times only the seed's models up to "
                f"{QUICK_MAX_RESOLUTION} px; left for --full: {', '.join(skipped)}"
            )
        others = len([n for n in names if n not in SEED_NAMED])
        if others:
            notes.append(f"{others} further registered models with torchvision top-1 are timed in --full only")
        names = quick
    missing = [m for m in SEED_NAMED if m not in MODELS and options.selected([m])]
    if missing:
        notes.append(f"named by the seed but not registered (yet), so not measured: {', '.join(missing)}")
    return names, notes


@functools.lru_cache(maxsize=None)
def measurements(names: tuple[str, ...], full: bool) -> pd.DataFrame:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name in names:
        acc = torchvision_accuracy(torchvision_builder(name))
        stats = model_stats(name, acc["resolution"])
        rows.append(
            {
                "model": name,
                "torchvision": torchvision_builder(name),
                "resolution": acc["resolution"],
                "top-1 (%)": acc["top1"],
                "best torchvision top-1 (%)": acc["best_top1"],
                "best weights": acc["best_weights"],
                "params (M)": round(stats["params"] / 1e6, 2),
                "GMACs": round(stats["macs"] / 1e9, 3),
            }
        )
    frame = pd.DataFrame(rows)
    cases = [BenchCase(r["model"], "ours", 1, r["resolution"], device) for r in rows]
    rounds, min_run_time = (5, 0.1) if full else (3, 0.05)  # only ranks models; no verdict is a sign test
    # Every candidate in one round-robin, so that any two latencies on this page were measured side by side.
    # All are held in memory at once: batch-1 models, a few GB for --full's largest set.
    with cpu_threads(TIMING_THREADS if device == "cpu" else None):
        stats = measure_interleaved(cases, rounds=rounds, min_run_time=min_run_time)
    frame["latency (ms)"] = [round(s["median_ms"], 2) for s in stats]
    frame["latency IQR (ms)"] = [round(s["iqr_ms"], 2) for s in stats]
    frame["on latency frontier"] = pareto(frame, "latency (ms)")
    frame["on params frontier"] = pareto(frame, "params (M)")
    return frame.sort_values("latency (ms)").reset_index(drop=True)


def pareto(frame: pd.DataFrame, cost: str) -> list[bool]:
    """True where no other model is at most as costly and more accurate."""
    return [
        not ((frame[cost] <= row[cost]) & (frame["top-1 (%)"] > row["top-1 (%)"])).any() for _, row in frame.iterrows()
    ]


def leaders(frame: pd.DataFrame, cost: str, budgets: list[float], label) -> pd.DataFrame:
    rows = []
    for budget in budgets:
        within = frame[frame[cost] <= budget].sort_values("top-1 (%)", ascending=False)
        rows.append(
            {
                "budget": label(budget),
                "models within": len(within),
                "leader": within["model"].iloc[0] if len(within) else "none",
                "leader top-1 (%)": within["top-1 (%)"].iloc[0] if len(within) else None,
                f"leader {cost}": within[cost].iloc[0] if len(within) else None,
                "runner-up": within["model"].iloc[1] if len(within) > 1 else "",
                "runner-up top-1 (%)": within["top-1 (%)"].iloc[1] if len(within) > 1 else None,
            }
        )
    return pd.DataFrame(rows)


def _dominated_by(frame: pd.DataFrame, name: str, cost: str) -> list[str]:
    row = frame.set_index("model").loc[name]
    better = frame[(frame[cost] <= row[cost]) & (frame["top-1 (%)"] > row["top-1 (%)"])]
    return list(better.sort_values(cost)["model"])


def accuracy_table(options: Options) -> pd.DataFrame:
    """Top-1 of every selected registered model with torchvision weights: metadata only, nothing timed."""
    rows = [
        {"model": n, "top-1 (%)": torchvision_accuracy(torchvision_builder(n))["top1"]}
        for n in options.selected(sorted(MODELS))
        if torchvision_builder(n) and torchvision_accuracy(torchvision_builder(n))
    ]
    return pd.DataFrame(rows, columns=["model", "top-1 (%)"])


# What would decide a claim about a device the measurements here were not made on. One rule for every
# scenario and for seed 3.2's key insight 4: a claim that names a device is decided only by
# measurements on that device; another device's reading is shown as a proxy and decides nothing.
DEVICE_DECIDES = {
    MOBILE_DEVICE: "the same criterion on batch-1 latencies measured on a phone or an edge board (e.g. each model "
    "exported with `python -m repro.export MODEL --out FILE` and timed in ONNX Runtime on the device); an x86 "
    "server CPU is not one",
    GPU: "the same criterion on batch-1 and batched latencies measured on a GPU (this page measures on CUDA when "
    "one is present: `python -m repro.report --pages selection` there)",
}
# A scenario recommending models for another task than image classification: what would decide it.
TASK_DECIDES = {
    DETECTION_BACKBONE: "each model's latency as the backbone of a detection or segmentation network at that "
    "network's input resolution (512-1024 px, say) on the device it is meant for, beside published detection or "
    "segmentation accuracy (COCO mAP, Cityscapes mIoU) with each backbone; a classifier at 224 px is another "
    "workload, where the balance of depthwise and dense convolutions differs",
}
DISTILLATION_DECIDES = (
    "distillation runs: a student (MobileNetV3, EfficientNet-B0) trained on ImageNet with and without a teacher's "
    "soft targets, and teachers compared by the students they produce; training at that scale is beyond this report"
)


def timed_as(runtime: str = "eager PyTorch", threads: int = TIMING_THREADS) -> str:
    """How a latency was measured, as every scenario row quoting one says it."""
    return f"{runtime}, {threads} thread{'s' if threads != 1 else ''}"


def measured_on(required: str | None, device: str) -> bool:
    """Whether measurements on ``device`` (``environment()['device']``) can decide a claim about ``required``.
    A GPU claim: a CUDA device. A mobile or edge device: never here (the report runs PyTorch on its host,
    which it cannot tell apart from a phone or an edge board by name)."""
    if required is None:
        return True
    return required == GPU and not device.startswith("CPU")


def _group_verdict(good: list[str], present: list[str]) -> str:
    """A scenario's verdict over its recommended models: one outcome per model, grouped. 'agrees' or
    'disagrees' where all share one; else both groups named (the errata split such a scenario in two claims)."""
    bad = [m for m in present if m not in good]
    if not bad:
        return "agrees"
    if not good:
        return "disagrees"
    return f"agrees for {', '.join(good)}; disagrees for {', '.join(bad)}"


def scenario_table(frame: pd.DataFrame, device: str, accuracy: pd.DataFrame | None = None, *,
                   timed: str) -> pd.DataFrame:
    """Each seed scenario, the measurable criterion it implies, what the measurements say, and a verdict.
    ``accuracy`` (all models with a top-1, timed or not) decides the high-accuracy scenario; ``timed`` says how
    the latencies were measured (runtime, threads), written beside every latency quoted. A scenario
    that names a device is decided only on that device (``measured_on``); elsewhere its reading here is a
    proxy and the verdict is 'not decided here', with what would decide it. A scenario whose models do not
    all agree has a verdict per group of models ('agrees for ...; disagrees for ...'), and the evidence of
    each group in its own column (CSV), so that each group is a claim of its own."""
    accuracy = frame[["model", "top-1 (%)"]] if accuracy is None else accuracy
    measured = set(frame["model"])
    by = frame.set_index("model")
    fastest = frame["latency (ms)"].min()
    rows = []
    for s in SEED_SCENARIOS:
        scenario, recommended, reason = s.scenario, s.recommended, s.reason
        known = set(accuracy["model"]) if scenario == "high accuracy" else measured
        present = [m for m in recommended if m in known]
        absent = [m for m in recommended if m not in known]
        verdict, decide, head, good = "not measured", "", "", []
        items: dict[str, str] = {}  # per recommended model, what was measured
        if scenario == "compression / distillation":
            criterion = "none here: how good a teacher or a student a model is shows only in distillation runs"
            verdict, decide = "not decided here", DISTILLATION_DECIDES
        elif not present:
            criterion = "-"
        elif scenario in ("mobile / edge devices", "real-time detection / segmentation"):
            budget = 3 * fastest
            criterion = (f"on the latency frontier and within 3x the fastest ({budget:.1f} ms; a threshold of "
                         f"this page's: the seed gives none)")
            good = [m for m in present if by.loc[m, "on latency frontier"] and by.loc[m, "latency (ms)"] <= budget]
            for m in present:
                beaten = _dominated_by(frame, m, "latency (ms)")
                items[m] = f"{m}: {by.loc[m, 'latency (ms)']:.1f} ms, {by.loc[m, 'top-1 (%)']:.1f}%, " + (
                    "on frontier" if m in good
                    else f"beaten by {', '.join(beaten[:3])}" if beaten else "too slow for the budget")
            items = {m: items[m] for m in good + [m for m in present if m not in good]}
        elif scenario == "general image classification":
            criterion = "on the latency frontier and the parameter frontier"
            good = [m for m in present if by.loc[m, "on latency frontier"] and by.loc[m, "on params frontier"]]
            for m in present:
                items[m] = (
                    f"{m}: latency frontier "
                    + ("yes" if by.loc[m, "on latency frontier"]
                       else "no (beaten by " + ", ".join(_dominated_by(frame, m, "latency (ms)")[:3]) + ")")
                    + f", params frontier {'yes' if by.loc[m, 'on params frontier'] else 'no'}"
                )
        elif scenario == "high accuracy":
            top = accuracy.sort_values("top-1 (%)", ascending=False)["model"].head(3).tolist()
            criterion = (
                f"among the three most accurate of the {len(accuracy)} registered models with torchvision weights (a "
                f"threshold of this page's: the seed gives none)"
            )
            top1 = accuracy.set_index("model")["top-1 (%)"]
            head = "most accurate: " + ", ".join(f"{m} {top1[m]:.1f}%" for m in top)
            good = [m for m in present if m in top]
            items = {m: f"{m}: {top1[m]:.1f}%" for m in present if m not in top}
        else:  # server deployment
            criterion = "on the latency frontier"
            good = [m for m in present if by.loc[m, "on latency frontier"]]
            for m in present:
                items[m] = f"{m}: {by.loc[m, 'latency (ms)']:.1f} ms, {by.loc[m, 'top-1 (%)']:.1f}%, " + (
                    "on frontier" if m in good
                    else "beaten by " + ", ".join(_dominated_by(frame, m, "latency (ms)")[:3]))
        if present and verdict == "not measured":
            verdict = _group_verdict(good, present)
        prefix = f"on {device}, {timed}: " if scenario != "high accuracy" else ""

        def evidence_of(models: list[str]) -> str:
            body = "; ".join([head] * bool(head) + [items[m] for m in models if m in items])
            return prefix + body if body else ""

        evidence = evidence_of(present) if present else ""
        split = {"agrees for": "", "disagrees for": "", "measured, agreeing": "", "measured, disagreeing": ""}
        decided = verdict.startswith(("agrees", "disagrees"))
        elsewhere = None if scenario == "high accuracy" or measured_on(s.device, device) else s.device
        if decided and (elsewhere or s.task):
            proxy = " ".join(filter(None, (s.task, f"on {elsewhere}" if elsewhere else "")))
            evidence = (
                f"on {device}, {timed}, image classification: a proxy for {proxy} that decides nothing, it would "
                f"read '{verdict}': " + evidence.removeprefix(prefix)
            )
            verdict = "not decided here"
            decide = "; ".join(filter(None, (TASK_DECIDES.get(s.task), DEVICE_DECIDES.get(elsewhere))))
        elif decided and good and len(good) < len(present):
            bad = [m for m in present if m not in good]
            split = {"agrees for": ", ".join(good), "disagrees for": ", ".join(bad),
                     "measured, agreeing": evidence_of(good), "measured, disagreeing": evidence_of(bad)}
        if absent:
            evidence += ("; " if evidence else "") + f"not measured: {', '.join(absent)}"
        evidence = evidence.rstrip("; ")
        rows.append(
            {
                "scenario (seed 5.1)": scenario,
                "seed recommends": ", ".join(recommended),
                "seed's reason": reason,
                "device the seed names": s.device or "none",
                "criterion": criterion,
                "measured": evidence,
                "verdict": verdict,
                "would decide it": decide,
                **split,
            }
        )
    return pd.DataFrame(rows)


def efficiency_table() -> pd.DataFrame:
    """Seed 5.2's table, its own arithmetic beside the recomputed one."""
    rows = []
    for claim in SEED_MODELS:
        acc = torchvision_accuracy(claim.torchvision) if claim.torchvision else None
        # Counted exactly: the ratio is of the count, not of its rounded display.
        params = model_stats(claim.model)["params"] / 1e6 if claim.model in MODELS else None
        top1 = acc["top1"] if acc else None
        rows.append(
            {
                "model": claim.label,
                "seed params (M)": claim.params_m,
                "seed top-1 (%)": claim.top1,
                "seed acc / MParam": round(claim.top1 / claim.params_m, 2),
                "params (M), counted": round(params, 3) if params is not None else None,
                "top-1 (%), torchvision V1": top1,
                "acc / MParam, recomputed": round(top1 / params, 2) if top1 is not None and params else None,
            }
        )
    table = pd.DataFrame(rows)
    table["seed rank"] = table["seed acc / MParam"].rank(ascending=False).astype(int)
    table["recomputed rank"] = table["acc / MParam, recomputed"].rank(ascending=False).astype("Int64")
    return table


def _metric_note(table: pd.DataFrame) -> str:
    """What accuracy per parameter rewards, read off the recomputed ranking: the division by the parameter count
    dominates, so the smallest model leads however accurate it is."""
    ranked = table.dropna(subset=["acc / MParam, recomputed"])
    if ranked.empty:
        return ""
    first = ranked.loc[ranked["acc / MParam, recomputed"].idxmax()]
    which = [what for what, column, pick in (("the smallest", "params (M), counted", "idxmin"),
                                             ("the least accurate", "top-1 (%), torchvision V1", "idxmin"))
             if getattr(ranked[column], pick)() == first.name]
    return (f" The division dominates the metric: rank 1 (recomputed) is {first['model']}, "
            f"{first['params (M), counted']:.2f}M parameters, {first['top-1 (%), torchvision V1']:.2f}%"
            + (f", {' and '.join(which)} of these {len(ranked)}" if which else "")
            + ". Which model is most accurate within a parameter or latency budget is what the budget tables above "
            "answer.")


def _scatter(frame: pd.DataFrame, x: str, title: str) -> bytes:
    fig, ax = subplots(figsize=(8, 5.5))
    family = frame["model"].map(lambda m: MODELS[m].family)
    for prefix, marker in (("resnet", "o"), ("efficientnet", "s"), ("mobilenet", "^"), ("densenet", "D")):
        part = frame[family.str.startswith(prefix)]
        if len(part):
            ax.scatter(part[x], part["top-1 (%)"], marker=marker, label=prefix)
    rest = frame[~family.str.startswith(("resnet", "efficientnet", "mobilenet", "densenet"))]
    if len(rest):
        ax.scatter(rest[x], rest["top-1 (%)"], marker="x", label="other")
    frontier = frame.sort_values(x)
    frontier = frontier[frontier["top-1 (%)"] >= frontier["top-1 (%)"].cummax()]
    ax.step(frontier[x], frontier["top-1 (%)"], where="post", color="grey", alpha=0.5, label="frontier")
    readable_log_axis(ax, frame[x])
    label_points(ax, frame[x].tolist(), frame["top-1 (%)"].tolist(), frame["model"].tolist())
    ax.set_xlabel(x + " (log scale)")
    ax.set_ylabel("ImageNet top-1 (%), torchvision IMAGENET1K_V1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return png_bytes(fig)


@functools.lru_cache(maxsize=None)
def _results(models: tuple[str, ...], full: bool) -> tuple[pd.DataFrame, pd.DataFrame, list[str]] | None:
    options = Options(full=full, models=models)
    names, notes = candidates(options)
    if not names:
        return None
    return measurements(tuple(names), full), accuracy_table(options), notes


def _rank_note(table: pd.DataFrame) -> str:
    ranked = table.dropna(subset=["recomputed rank"])
    moved = ranked[ranked["seed rank"] != ranked["recomputed rank"]]
    if moved.empty:
        return (
            f"The ranking is the same for all {len(ranked)} models with a recomputed value: the seed's wrong top-1 "
            "figures (compare the two top-1 columns) change the ratios but not the order."
        )
    return (
        "Ranks that move: "
        + ", ".join(f"{r['model']} {r['seed rank']} -> {r['recomputed rank']}" for _, r in moved.iterrows())
        + "."
    )


# ---- seed 5.2's figures against their sources -------------------------------------------------------


def figures_table(options: Options) -> pd.DataFrame:
    """Each 5.2 figure beside the paper's (named table, with its protocol), torchvision's V1 metadata and the count."""
    rows = []
    for claim in SEED_MODELS:
        if claim.model not in MODELS or not options.selected([claim.model]):
            continue
        paper, tv = PAPER.get(claim.model), torchvision_v1(claim.torchvision)
        params = model_stats(claim.model)["params"] / 1e6
        figure = Top1Figure(claim.label, claim.model, claim.top1, tv.top1 if tv else None)
        # The rule: the seed's figure matches a source when the source's value rounds to it.
        paper_params_ok = paper is not None and paper.params_m is not None and rounds_to(paper.params_m, claim.params_m)
        params_sources = [
            name for name, ok in (("paper", paper_params_ok), ("count", rounds_to(params, claim.params_m))) if ok
        ]
        rows.append(
            {
                "model": claim.label,
                "hand-written": claim.model,
                "seed params (M)": claim.params_m,
                "paper params (M)": paper.params_m if paper else None,
                "counted params (M)": round(params, 3),
                "params match": "/".join(params_sources) or "neither",
                "seed top-1 (%)": claim.top1,
                "paper top-1 (%)": paper.top1 if paper else None,
                "paper top-1 (%, protocol)": paper_top1_cell(claim.model),
                "torchvision V1 top-1 (%)": tv.top1 if tv else None,
                "top-1 matches": figure.matches(),
                "paper source": paper.source if paper else "",
            }
        )
    return pd.DataFrame(rows)


def _top1_figures(frame: pd.DataFrame) -> list[Top1Figure]:
    return [
        Top1Figure(r["model"], r["hand-written"], r["seed top-1 (%)"], r["torchvision V1 top-1 (%)"])
        for _, r in frame.iterrows()
    ]


def _madds_lookalike(figure: float, source: str) -> str:
    """A model of the same paper table whose MAdds (millions) equal ``figure``: a possible origin of a wrong figure."""
    table = source.split(";")[0]
    same = [f for f in PAPER.values() if f.source.split(";")[0] == table and f.gmacs and round(f.gmacs * 1e3) == figure]
    return ", ".join(f"{SEED_LABELS.get(f.model, f.model)}'s MAdds in millions ({f.gmacs * 1e3:g}M)" for f in same)


def figures_errata(frame: pd.DataFrame) -> list[Erratum]:
    """The rule: a figure holds if a source it can come from rounds to it (``rounds_to``); the table above.
    Top-1 figures: the shared rule of ``repro.report.figures`` (as seed 3.2's), one row per defect."""
    if frame.empty:
        return []
    rows = []
    bad_params = frame[frame["params match"] == "neither"]
    notes = [
        f"{r['model']} {r['seed params (M)']}M: the paper's {r['paper params (M)']:g}M, the released architecture "
        f"counts {r['counted params (M)']:.2f}M"
        for _, r in frame.iterrows()
        if r["params match"] == "paper"
    ]
    rows.append(
        Erratum(
            "5.2",
            f"the parameter counts of the {len(frame)} models",
            bad_params.empty,
            "each rounds to the count of the architecture or to the paper's figure: "
            + "; ".join(f"{r['model']} {r['seed params (M)']} ({r['params match']})" for _, r in frame.iterrows()),
            note="; ".join(notes),
        )
    )
    wrong = frame[frame["top-1 matches"] == "neither"]
    if len(wrong):  # one defect, however many models carry it
        values = sorted(set(wrong["seed top-1 (%)"]))
        claim = (
            f"{' and '.join(wrong['model'])} top-1 is {values[0]:g}%"
            if len(values) == 1
            else "the top-1 of " + ", ".join(f"{r['model']} ({r['seed top-1 (%)']:g}%)" for _, r in wrong.iterrows())
        )
        lookalikes = {
            r["model"]: _madds_lookalike(r["seed top-1 (%)"], r["paper source"])
            for _, r in wrong.iterrows()
            if r["paper source"]
        }
        rows.append(
            Erratum(
                "5.2",
                claim,
                False,
                "; ".join(
                    f"{r['model']}: paper "
                    + (f"{r['paper top-1 (%)']:g}% ({r['paper source']})" if pd.notna(r["paper top-1 (%)"]) else "none")
                    + f", torchvision V1 {r['torchvision V1 top-1 (%)']:.2f}%"
                    for _, r in wrong.iterrows()
                ),
                note="; ".join(
                    f"{values[0]:g} is possibly {text}, a number of the same table" for text in dict.fromkeys(
                        t for t in lookalikes.values() if t
                    )
                ) if len(values) == 1 else "",
            )
        )
    rows += top1_errata("5.2", "the trade-off table (5.2)", _top1_figures(frame))
    return rows


def insight_4_erratum(frame: pd.DataFrame, device: str) -> Erratum | None:
    """Seed 3.2's key insight 4, a claim about mobile and edge devices, by the device rule of the scenarios."""
    by = frame.set_index("model")
    effs = [m for m in ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2") if m in by.index]
    resnets = [m for m in ("resnet18", "resnet50") if m in by.index]
    if not effs or not resnets:
        return None
    beats = [
        (e, r)
        for e in effs
        for r in resnets
        if by.loc[e, "latency (ms)"] <= by.loc[r, "latency (ms)"] and by.loc[e, "top-1 (%)"] > by.loc[r, "top-1 (%)"]
    ]
    fmt = lambda m: f"{m} {by.loc[m, 'latency (ms)']:.1f} ms, {by.loc[m, 'top-1 (%)']:.1f}%"  # noqa: E731
    reading = (
        f"EfficientNet faster and more accurate than the ResNet in {len(beats)} of {len(effs) * len(resnets)} pairs "
        "(batch 1, one thread): " + "; ".join(fmt(m) for m in effs + resnets)
    )
    decided = measured_on(SEED_INSIGHT_4_DEVICE, device)
    # 'the better choice than ResNet', said of the family: it holds where every EfficientNet pair beats the ResNet.
    outcome = Outcome.of(len(beats) == len(effs) * len(resnets))
    return Erratum(
        "3.2",
        "for mobile / edge devices EfficientNet is the better choice than ResNet (key insight 4)",
        outcome if decided else Outcome.UNDECIDED,
        f"on {device}: {reading}"
        if decided
        else f"on {device}, a proxy for {SEED_INSIGHT_4_DEVICE} that decides nothing: {reading}",
        decide="" if decided else DEVICE_DECIDES[SEED_INSIGHT_4_DEVICE],
    )


def insight_3_erratum(options: Options) -> Erratum | None:
    """Seed 5.2's key insight 3: 'ResNet在精度上仍然有竞争力' (ResNet is still competitive in accuracy).
    Criterion: a ResNet reaches the top-1 of an EfficientNet of the seed's table. Decided on the two sources
    that set each architecture's figures side by side: the EfficientNet paper's Table 2 (one protocol, each
    model as its paper trained it) and each architecture's best torchvision weights (its newest recipe);
    where they disagree it is not decided. torchvision's IMAGENET1K_V1 weights compare recipes as well as
    models (``WeightsInfo.origin``): beside it, named as such."""
    table = [c for c in SEED_MODELS if c.torchvision and torchvision_v1(c.torchvision) and options.selected([c.model])]
    resnets = [c for c in table if c.model.startswith("resnet")]
    effs = [c for c in table if c.model.startswith("efficientnet")]
    if not resnets or not effs:
        return None

    def best(claims, weights):
        return max(((c, weights(c.torchvision)) for c in claims), key=lambda cw: cw[1].top1)

    def weakest(claims, weights):
        return min(((c, weights(c.torchvision)) for c in claims), key=lambda cw: cw[1].top1)

    (r_best, rw), (e_low, ew) = best(resnets, best_torchvision), weakest(effs, best_torchvision)
    (r_v1, rv1), (e_v1, ev1) = best(resnets, torchvision_v1), weakest(effs, torchvision_v1)
    reached = [c for c in effs if best_torchvision(c.torchvision).top1 <= rw.top1]

    def fmt(c, w):
        return (f"{c.label} {w.top1:.2f}% ({w.weights}: {w.origin}; "
                f"{model_stats(c.model)['params'] / 1e6:.1f}M parameters)")

    # The paper's like-for-like table: its ResNets against the least accurate EfficientNet of the seed's table.
    paper_effs = [PAPER[c.model] for c in effs if c.model in PAPER and PAPER[c.model].top1 is not None]
    paper_low = min(paper_effs, key=lambda f: f.top1)
    paper_resnets = sorted(EFFICIENTNET_TABLE_2_RESNETS.values(), key=lambda f: f.top1)
    paper_best = paper_resnets[-1]
    reached_paper = paper_best.top1 >= paper_low.top1

    def label(f):
        return SEED_LABELS.get(f.model) or f.model.replace("resnet", "ResNet-")

    paper_text = (
        f"{paper_low.kind}: " + ", ".join(f"{label(f)} {f.top1:.1f}% ({f.params_m:g}M)" for f in paper_resnets)
        + f"; {label(paper_low)} {paper_low.top1:.1f}% ({paper_low.params_m:g}M): {label(paper_best)} "
        + ("reaches" if reached_paper else "stays below") + f" {label(paper_low)}"
    )
    best_text = (
        f"with each architecture's best torchvision weights, {fmt(r_best, rw)} "
        + (f"reaches {', '.join(c.label for c in reached)} (least accurate EfficientNet: {fmt(e_low, ew)})"
           if reached else f"stays below every EfficientNet of the table (least accurate: {fmt(e_low, ew)})")
    )
    agree = reached_paper == bool(reached)
    return Erratum(
        "5.2",
        "ResNet is still competitive in accuracy (key insight 3, 'ResNet在精度上仍然有竞争力')",
        Outcome.of(reached_paper) if agree else Outcome.UNDECIDED,
        f"{paper_text}; {best_text}",
        decide="" if agree else "top-1 of both families trained with one recipe and evaluated with one protocol",
        note=f"torchvision's IMAGENET1K_V1 weights compare recipes as well as models: {fmt(r_v1, rv1)} "
        f"{'reaches' if rv1.top1 >= ev1.top1 else 'stays below'} {fmt(e_v1, ev1)}; the insight's second half, "
        "'更易于实现和调试' (easier to implement and debug), is not something a measurement here can check",
    )


def uncalled_erratum() -> Erratum:
    names = uncalled_functions()
    return Erratum(
        "5.1, 6.1",
        "the functions the seed defines are called",
        not names,
        f"{len(names)} are defined and never called (so the seed shows no output of theirs): {', '.join(names)}",
    )


def build(options: Options) -> Page | None:
    results = _results(options.models, options.full)
    if results is None:
        return None
    frame, accuracy, notes = results
    env = environment()
    device = env["device"]
    cpu = device.startswith("CPU")
    fastest = frame["latency (ms)"].min()
    latency_budgets = [round(fastest * k, 2) for k in LATENCY_BUDGETS_X]
    by_latency = leaders(
        frame, "latency (ms)", latency_budgets, lambda b: f"<= {b:.1f} ms ({b / fastest:.3g}x fastest)"
    )
    by_params = leaders(
        frame, "params (M)", [b for b in PARAM_BUDGETS_M if b <= 2 * frame["params (M)"].max()], lambda b: f"<= {b}M"
    )
    scenarios = scenario_table(frame, device, accuracy, timed=timed_as())
    figures = figures_table(options)
    efficiency = efficiency_table()
    errata = scenario_errata(scenarios) + figures_errata(figures) + efficiency_errata(efficiency)
    errata += [e for e in (insight_4_erratum(frame, device), insight_3_erratum(options), uncalled_erratum()) if e]
    intro = (
        findings(errata)
        + "\n\n"
        "Seed section 5.1 recommends models per scenario without a number; section 5.2 ranks accuracy per million "
        "parameters from its own figures. Here both are recomputed from this suite's measurements on "
        f"{device}: top-1 from torchvision's weight metadata for the torchvision model each hand-written one is "
        "shown equal to on the equivalence page, built with that model's settings (IMAGENET1K_V1, torchvision's "
        "first weights of each model, which are not one recipe: its "
        "ResNets and MobileNetV3s trained with torchvision's original reference recipe, its EfficientNet-B0-B4 "
        "ported from timm, trained by R. Wightman, B5-B7 from lukemelas/EfficientNet-PyTorch; accuracy across "
        "families compares recipes as well as models), parameters and GMACs counted on the hand-written model at "
        "the weights' evaluation resolution, batch-1 latency of eager PyTorch (the hand-written model) measured "
        "now, median over interleaved rounds"
        + (f", on {TIMING_THREADS} thread ({TIMING_THREADS_WHY}); the latency page times at 224 px" if cpu else "")
        + ". These latencies are this page's own run, every candidate in one round-robin so that they compare "
        "with each other; the latency and runtimes pages time some of the same models again, in rounds of their "
        "own against timm, with their own thread counts, so a model's latency on two pages is not one number: "
        "compare latencies within a page (each page's header names the machine its numbers were measured on). "
        + " ".join(n[0].upper() + n[1:] + "." for n in notes)
    )
    measured_note = (
        "Frontier: no other measured model is at most as slow (or as large) and more accurate. "
        "'best torchvision top-1' is the most accurate torchvision weights for the same architecture "
        "(newer training recipes, e.g. ResNet-50 IMAGENET1K_V2): the ranking by architecture depends on the recipe. "
        "GMACs are at the 'resolution' column, the crop the top-1 was measured at (EfficientNet-B2: 288)."
    )
    tables = [
        Table(
            "selection_scenarios",
            "The seed's scenarios (5.1), checked",
            scenarios,
            "Each recommendation turned into a criterion the measurements can decide. 'beaten by' lists models at "
            "most as slow and more accurate. One rule for every scenario: a scenario that names a device ("
            + "; ".join(f"{s.scenario}: {s.device}" for s in SEED_SCENARIOS if s.device)
            + ") is decided only by measurements on that device, and one that names another task than image "
            "classification ("
            + "; ".join(f"{s.scenario}: {s.task}" for s in SEED_SCENARIOS if s.task)
            + ") only by measurements of that task; elsewhere the reading here is shown as a proxy and decides "
            f"nothing. A classification scenario that names no device is decided on the device measured here "
            f"({device}).",
            page_columns=("scenario (seed 5.1)", "seed recommends", "seed's reason", "device the seed names",
                          "criterion", "measured", "verdict", "would decide it"),
        ),
        Table(
            "selection_figures",
            "The seed's 5.2 figures against their sources",
            figures,
            "A figure matches a source when the source's value rounds to it at the figure's precision (12M cannot "
            "give 12.2). Paper figures, each with its evaluation protocol: EfficientNet Table 2 and MobileNetV3 "
            "Table 3 (single-crop), ResNet Tables 2-3 (10-crop; the ResNet paper gives no parameter counts). "
            "torchvision's are single-crop. Counted: the hand-written model's parameters (the references it is shown "
            "equal to, and the settings it is built with for each, are on the equivalence page).",
            page_columns=(
                "model",
                "seed params (M)",
                "paper params (M)",
                "counted params (M)",
                "params match",
                "seed top-1 (%)",
                "paper top-1 (%, protocol)",
                "torchvision V1 top-1 (%)",
                "top-1 matches",
            ),
        ),
        Table(
            "selection_by_latency",
            "Best top-1 within a latency budget (batch 1, this device)",
            by_latency,
            "Budgets are multiples of the fastest measured model's latency on this device. Relative latency "
            "depends on the device (a GPU favours wide, regular convolutions; a CPU at batch 1 favours few MACs), "
            "so on another device the leaders may differ.",
        ),
        Table("selection_by_params", "Best top-1 within a parameter budget", by_params),
        Table(
            "selection_efficiency",
            "Accuracy per million parameters (seed 5.2), the seed's figures and recomputed",
            efficiency,
            "The seed divides its own top-1 by its own parameter counts. Rank 1 = most accurate per "
            "parameter. " + _rank_note(efficiency) + _metric_note(efficiency),
        ),
        Table(
            "selection_measurements",
            "Every measured model",
            frame,
            measured_note,
            page_columns=(
                "model",
                "resolution",
                "top-1 (%)",
                "best torchvision top-1 (%)",
                "params (M)",
                "GMACs",
                "latency (ms)",
                "latency IQR (ms)",
                "on latency frontier",
                "on params frontier",
            ),
        ),
    ]
    images = [
        ("accuracy_vs_gmacs.png", _scatter(frame, "GMACs", "ImageNet top-1 vs GMACs (at the weights' resolution)")),
        ("accuracy_vs_params.png", _scatter(frame, "params (M)", "ImageNet top-1 vs parameters")),
        (
            "accuracy_vs_latency.png",
            _scatter(
                frame,
                "latency (ms)",
                f"ImageNet top-1 vs batch-1 latency, {device}"
                + (", 1 thread, eager PyTorch" if cpu else ", eager PyTorch"),
            ),
        ),
    ]
    return Page("selection", "Model selection from measurements (seed 5.1, 5.2)", intro, tables, images, errata)


_SCENARIO_OUTCOME = {"agrees": Outcome.HOLDS, "disagrees": Outcome.FAILS}


def scenario_errata(scenarios: pd.DataFrame) -> list[Erratum]:
    """One row per scenario with a verdict, its outcome the scenario table's (one source for both); a scenario
    whose models do not all agree is two claims, one per group of models, each with its group's evidence; a
    scenario none of whose models was measured ('not measured') has none."""
    rows = []
    for _, row in scenarios.iterrows():
        verdict = row["verdict"]
        scenario, recommended, reason = row["scenario (seed 5.1)"], row["seed recommends"], row["seed's reason"]

        def claim(models: str) -> str:
            return f"for {scenario}, use {models} ({reason})"

        def evidence(measured: str) -> str:
            return f"{row['criterion']}: {measured}" if measured else row["criterion"]

        if verdict in _SCENARIO_OUTCOME:
            rows.append(Erratum("5.1", claim(recommended), _SCENARIO_OUTCOME[verdict], evidence(row["measured"])))
        elif verdict.startswith("agrees for"):
            rows.append(Erratum("5.1", claim(row["agrees for"]), Outcome.HOLDS, evidence(row["measured, agreeing"])))
            rows.append(Erratum("5.1", claim(row["disagrees for"]), Outcome.FAILS,
                                evidence(row["measured, disagreeing"])))
        elif verdict == "not decided here":
            rows.append(Erratum("5.1", claim(recommended), Outcome.UNDECIDED, evidence(row["measured"]),
                                decide=row["would decide it"]))
    return rows


def efficiency_errata(table: pd.DataFrame) -> list[Erratum]:
    table = table.dropna(subset=["acc / MParam, recomputed"])
    eff = table[table["model"].str.startswith("EfficientNet")]["acc / MParam, recomputed"]
    res = table[table["model"].str.startswith("ResNet")]["acc / MParam, recomputed"]
    if not (len(eff) and len(res)):
        return []
    return [
        Erratum(
            "5.2",
            "EfficientNets are generally more accurate per parameter than ResNets (key insight 1)",
            bool(eff.min() > res.max()),
            f"top-1 per M params: EfficientNets {eff.min():.2f}-{eff.max():.2f}, "
            f"ResNets {res.min():.2f}-{res.max():.2f}",
        )
    ]
