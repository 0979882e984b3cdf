"""Selection page: seed section 5.1's scenario table and 5.2's accuracy-per-parameter table, from measurements.

Top-1 is ImageNet-1K accuracy from torchvision's weight metadata (``IMAGENET1K_V1``, the original
papers' recipes, as the seed's figures are; the best torchvision weights beside it), for each
registered hand-written model that has a torchvision reference (proven equivalent, so the
accuracy of those weights is the accuracy of the hand-written model holding them). Parameters and
GMACs are counted on the hand-written model at the resolution the top-1 was measured at (the
weights' crop size); latency is measured here, on the device the report runs on, with
``repro.bench.measure_interleaved`` (batch 1, all candidates interleaved round-robin).
"""

from __future__ import annotations

import functools

import pandas as pd
import torch

from repro.bench import BenchCase, measure_interleaved
from repro.environment import environment
from repro.registry import MODELS, references_for
from repro.report import Erratum, Options, Page, Table, erratum, section
from repro.report.resnet import model_stats
from repro.seed import SEED_MODELS
from repro.environment import cpu_threads
from repro.plotting import png_bytes, subplots

# Seed section 5.1, model_selection_guide(): scenario, recommended models, stated reason.
SEED_SCENARIOS = (
    ("mobile / edge devices", ("mobilenetv3_small_100", "mobilenetv3_large_100"), "latency-sensitive, little compute"),
    ("general image classification", ("efficientnet_b0", "efficientnet_b1"), "balance of accuracy and efficiency"),
    ("high accuracy", ("efficientnet_b5", "efficientnet_b7", "resnet152"), "highest accuracy"),
    ("real-time detection / segmentation", ("resnet18", "resnet34", "mobilenetv3_small_100", "mobilenetv3_large_100"), "fast inference"),
    ("server deployment", ("efficientnet_b3", "efficientnet_b4", "resnet50"), "a GPU is available"),
    ("compression / distillation", ("mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0"), "as teacher or student"),
)
SEED_NAMED = tuple(dict.fromkeys([c.model for c in SEED_MODELS] + [m for _, models, _ in SEED_SCENARIOS for m in models]))
QUICK_MAX_RESOLUTION = 300  # quick mode times the seed's models up to B3; B4-B7 (380-600 px) in --full
PARAM_BUDGETS_M = (3, 6, 10, 15, 30, 50, 100)
LATENCY_BUDGETS_X = (1.5, 2, 3, 5, 10, 20, 50)  # multiples of the fastest candidate's latency


def torchvision_builder(name: str) -> str | None:
    """The torchvision model this hand-written model is proven equal to (its torchvision reference)."""
    specs = [e.name for e in references_for(name) if e.source == "torchvision"]
    return specs[0] if specs else None


@functools.lru_cache(maxsize=None)
def torchvision_accuracy(builder: str) -> dict | None:
    """Top-1 of IMAGENET1K_V1 and of the best torchvision weights, and the crop size they were measured at."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(builder)
    except ValueError:
        return None
    weights = {k: v for k, v in enum.__members__.items() if k != "DEFAULT" and "ImageNet-1K" in v.meta.get("_metrics", {})}
    if "IMAGENET1K_V1" not in weights:
        return None
    best_key = max(weights, key=lambda k: weights[k].meta["_metrics"]["ImageNet-1K"]["acc@1"])
    v1 = weights["IMAGENET1K_V1"]
    return {
        "top1": float(v1.meta["_metrics"]["ImageNet-1K"]["acc@1"]),
        "resolution": int(v1.transforms().crop_size[0]),
        "best_top1": float(weights[best_key].meta["_metrics"]["ImageNet-1K"]["acc@1"]),
        "best_weights": best_key,
        "source": f"torchvision {enum.__name__}.IMAGENET1K_V1 metadata",
    }


def candidates(options: Options) -> tuple[list[str], list[str]]:
    """(models to measure, notes on what was left out and why)."""
    notes = []
    names = [n for n in options.selected(sorted(MODELS)) if torchvision_builder(n) and torchvision_accuracy(torchvision_builder(n))]
    if not options.full:
        quick = [n for n in names if n in SEED_NAMED and torchvision_accuracy(torchvision_builder(n))["resolution"] <= QUICK_MAX_RESOLUTION]
        skipped = [n for n in names if n in SEED_NAMED and n not in quick]
        if skipped:
            notes.append(f"quick mode times only the seed's models up to {QUICK_MAX_RESOLUTION} px; left for --full: {', '.join(skipped)}")
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
        rows.append({"model": name, "torchvision": torchvision_builder(name), "resolution": acc["resolution"],
                     "top-1 (%)": acc["top1"], "best torchvision top-1 (%)": acc["best_top1"], "best weights": acc["best_weights"],
                     "params (M)": round(stats["params"] / 1e6, 2), "GMACs": round(stats["macs"] / 1e9, 3)})
    frame = pd.DataFrame(rows)
    cases = [BenchCase(r["model"], "ours", 1, r["resolution"], device) for r in rows]
    rounds, min_run_time = (5, 0.1) if full else (3, 0.05)
    stats = []
    chunk = 8  # models held in memory at once; each chunk is interleaved within itself
    with cpu_threads(1 if device == "cpu" else None):
        for start in range(0, len(cases), chunk):
            stats += measure_interleaved(cases[start:start + chunk], rounds=rounds, min_run_time=min_run_time)
    frame["latency (ms)"] = [round(s["median_ms"], 2) for s in stats]
    frame["latency IQR (ms)"] = [round(s["iqr_ms"], 2) for s in stats]
    frame["on latency frontier"] = pareto(frame, "latency (ms)")
    frame["on params frontier"] = pareto(frame, "params (M)")
    return frame.sort_values("latency (ms)").reset_index(drop=True)


def pareto(frame: pd.DataFrame, cost: str) -> list[bool]:
    """True where no other model is at most as costly and more accurate."""
    return [not ((frame[cost] <= row[cost]) & (frame["top-1 (%)"] > row["top-1 (%)"])).any() for _, row in frame.iterrows()]


def leaders(frame: pd.DataFrame, cost: str, budgets: list[float], label) -> pd.DataFrame:
    rows = []
    for budget in budgets:
        within = frame[frame[cost] <= budget].sort_values("top-1 (%)", ascending=False)
        rows.append({"budget": label(budget), "models within": len(within),
                     "leader": within["model"].iloc[0] if len(within) else "none",
                     "leader top-1 (%)": within["top-1 (%)"].iloc[0] if len(within) else None,
                     f"leader {cost}": within[cost].iloc[0] if len(within) else None,
                     "runner-up": within["model"].iloc[1] if len(within) > 1 else "",
                     "runner-up top-1 (%)": within["top-1 (%)"].iloc[1] if len(within) > 1 else None})
    return pd.DataFrame(rows)


def _dominated_by(frame: pd.DataFrame, name: str, cost: str) -> list[str]:
    row = frame.set_index("model").loc[name]
    better = frame[(frame[cost] <= row[cost]) & (frame["top-1 (%)"] > row["top-1 (%)"])]
    return list(better.sort_values(cost)["model"])


def accuracy_table(options: Options) -> pd.DataFrame:
    """Top-1 of every selected registered model with torchvision weights: metadata only, nothing timed."""
    rows = [{"model": n, "top-1 (%)": torchvision_accuracy(torchvision_builder(n))["top1"]}
            for n in options.selected(sorted(MODELS)) if torchvision_builder(n) and torchvision_accuracy(torchvision_builder(n))]
    return pd.DataFrame(rows, columns=["model", "top-1 (%)"])


def scenario_table(frame: pd.DataFrame, device: str, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each seed scenario, the measurable criterion it implies, what the measurements say, and a verdict.
    ``accuracy`` (all models with a top-1, timed or not) decides the high-accuracy scenario."""
    accuracy = frame[["model", "top-1 (%)"]] if accuracy is None else accuracy
    measured = set(frame["model"])
    by = frame.set_index("model")
    fastest = frame["latency (ms)"].min()
    rows = []
    for scenario, recommended, reason in SEED_SCENARIOS:
        known = set(accuracy["model"]) if scenario == "high accuracy" else measured
        present = [m for m in recommended if m in known]
        absent = [m for m in recommended if m not in known]
        verdict, evidence = "not measured", ""
        if scenario == "compression / distillation":
            criterion = "none measurable here (distillation quality is not a property of one model)"
            verdict = "not measurable here"
        elif not present:
            criterion = "-"
        elif scenario in ("mobile / edge devices", "real-time detection / segmentation"):
            budget = 3 * fastest
            criterion = f"on the latency frontier and within 3x the fastest ({budget:.1f} ms)"
            good = [m for m in present if by.loc[m, "on latency frontier"] and by.loc[m, "latency (ms)"] <= budget]
            bad = {m: _dominated_by(frame, m, "latency (ms)") for m in present if m not in good}
            evidence = "; ".join([f"{m}: {by.loc[m, 'latency (ms)']:.1f} ms, {by.loc[m, 'top-1 (%)']:.1f}%, on frontier" for m in good]
                                 + [f"{m}: {by.loc[m, 'latency (ms)']:.1f} ms, {by.loc[m, 'top-1 (%)']:.1f}%, "
                                    + (f"beaten by {', '.join(b[:3])}" if b else "too slow for the budget") for m, b in bad.items()])
            verdict = "agrees" if not bad else ("disagrees" if not good else "partly")
        elif scenario == "general image classification":
            criterion = "on the latency frontier and the parameter frontier"
            good = [m for m in present if by.loc[m, "on latency frontier"] and by.loc[m, "on params frontier"]]
            evidence = "; ".join(f"{m}: latency frontier {'yes' if by.loc[m, 'on latency frontier'] else 'no (beaten by ' + ', '.join(_dominated_by(frame, m, 'latency (ms)')[:3]) + ')'}, "
                                 f"params frontier {'yes' if by.loc[m, 'on params frontier'] else 'no'}" for m in present)
            verdict = "agrees" if len(good) == len(present) else ("disagrees" if not good else "partly")
        elif scenario == "high accuracy":
            top = accuracy.sort_values("top-1 (%)", ascending=False)["model"].head(3).tolist()
            criterion = f"among the three most accurate of the {len(accuracy)} registered models with torchvision weights"
            top1 = accuracy.set_index("model")["top-1 (%)"]
            evidence = "most accurate: " + ", ".join(f"{m} {top1[m]:.1f}%" for m in top) + "; " + \
                "; ".join(f"{m}: {top1[m]:.1f}%" for m in present if m not in top)
            hits = [m for m in present if m in top]
            verdict = "agrees" if len(hits) == len(present) else ("disagrees" if not hits else "partly")
        else:  # server deployment
            criterion = f"on the latency frontier ({device})"
            good = [m for m in present if by.loc[m, "on latency frontier"]]
            evidence = "; ".join(f"{m}: {by.loc[m, 'latency (ms)']:.1f} ms, {by.loc[m, 'top-1 (%)']:.1f}%, "
                                 + ("on frontier" if m in good else "beaten by " + ", ".join(_dominated_by(frame, m, "latency (ms)")[:3])) for m in present)
            verdict = "agrees" if len(good) == len(present) else ("disagrees" if not good else "partly")
            if not device.startswith("cuda"):
                verdict += " (on CPU; the seed means a GPU)"
        if absent:
            evidence += ("; " if evidence else "") + f"not measured: {', '.join(absent)}"
        evidence = evidence.rstrip("; ")
        rows.append({"scenario (seed 5.1)": scenario, "seed recommends": ", ".join(recommended), "seed's reason": reason,
                     "criterion": criterion, "measured": evidence, "verdict": verdict})
    return pd.DataFrame(rows)


def efficiency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed 5.2's table, its own arithmetic beside the recomputed one."""
    measured = frame.set_index("model")
    rows = []
    for claim in SEED_MODELS:
        acc = torchvision_accuracy(claim.torchvision) if claim.torchvision else None
        params = None
        if claim.model in MODELS:
            params = measured.loc[claim.model, "params (M)"] if claim.model in measured.index else round(model_stats(claim.model)["params"] / 1e6, 2)
        top1 = acc["top1"] if acc else None
        rows.append({
            "model": claim.label, "seed params (M)": claim.params_m, "seed top-1 (%)": claim.top1,
            "seed acc / MParam": round(claim.top1 / claim.params_m, 2),
            "params (M), counted": params, "top-1 (%), torchvision V1": top1,
            "acc / MParam, recomputed": round(top1 / params, 2) if top1 is not None and params else None,
        })
    table = pd.DataFrame(rows)
    table["seed rank"] = table["seed acc / MParam"].rank(ascending=False).astype(int)
    table["recomputed rank"] = table["acc / MParam, recomputed"].rank(ascending=False).astype("Int64")
    return table


def _scatter(frame: pd.DataFrame, x: str, title: str) -> bytes:
    fig, ax = subplots(figsize=(7.5, 5))
    for family, marker in (("resnet", "o"), ("efficientnet", "s"), ("mobilenet", "^"), ("densenet", "D")):
        part = frame[frame["model"].map(lambda m: MODELS[m].family).str.startswith(family)]
        if len(part):
            ax.scatter(part[x], part["top-1 (%)"], marker=marker, label=family)
    rest = frame[~frame["model"].map(lambda m: MODELS[m].family).str.startswith(("resnet", "efficientnet", "mobilenet", "densenet"))]
    if len(rest):
        ax.scatter(rest[x], rest["top-1 (%)"], marker="x", label="other")
    for _, row in frame.iterrows():
        ax.annotate(row["model"], (row[x], row["top-1 (%)"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    frontier = frame.sort_values(x)
    frontier = frontier[frontier["top-1 (%)"] >= frontier["top-1 (%)"].cummax()]
    ax.step(frontier[x], frontier["top-1 (%)"], where="post", color="grey", alpha=0.5, label="frontier")
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("ImageNet top-1 (%), torchvision IMAGENET1K_V1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
        return (f"The ranking is the same for all {len(ranked)} models with a recomputed value: the seed's wrong top-1 "
                "figures (compare the two top-1 columns) change the ratios but not the order.")
    return "Ranks that move: " + ", ".join(f"{r['model']} {r['seed rank']} -> {r['recomputed rank']}" for _, r in moved.iterrows()) + "."


@section
def selection_page(options: Options) -> Page | None:
    results = _results(options.models, options.full)
    if results is None:
        return None
    frame, accuracy, notes = results
    env = environment()
    device = env["device"]
    fastest = frame["latency (ms)"].min()
    latency_budgets = [round(fastest * k, 2) for k in LATENCY_BUDGETS_X]
    by_latency = leaders(frame, "latency (ms)", latency_budgets, lambda b: f"<= {b:.1f} ms ({b / fastest:.3g}x fastest)")
    by_params = leaders(frame, "params (M)", [b for b in PARAM_BUDGETS_M if b <= 2 * frame["params (M)"].max()], lambda b: f"<= {b}M")
    intro = (
        "Seed section 5.1 recommends models per scenario without a number; section 5.2 ranks accuracy per million "
        "parameters from its own (partly wrong) figures. Here both are recomputed from this suite's measurements on "
        f"{device} ({'one thread: on a CPU shared with other work, multi-threaded batch-1 inference measures the contention, not the model' if device.startswith('CPU') else 'GPU'}): "
        "top-1 from torchvision's weight metadata for the torchvision "
        "model each hand-written one is proven equal to, parameters and GMACs counted on the hand-written model at "
        "the weights' evaluation resolution, batch-1 latency measured now (median over interleaved rounds; absolute "
        "times on a shared machine move, rankings of well-separated models less). "
        + (" ".join(n + "." for n in notes))
    )
    efficiency = efficiency_table(frame)
    measured_note = ("Frontier: no other measured model is at most as slow (or as large) and more accurate. "
                     "'best torchvision top-1' is the most accurate torchvision weights for the same architecture "
                     "(newer training recipes, e.g. ResNet-50 IMAGENET1K_V2): the ranking by architecture depends on the recipe.")
    tables = [
        Table("selection_scenarios", "The seed's scenarios (5.1), checked", scenario_table(frame, device, accuracy),
              "Each recommendation turned into a criterion the measurements can decide. 'beaten by' lists models at "
              "most as slow and more accurate."),
        Table("selection_by_latency", "Best top-1 within a latency budget (batch 1, this device)", by_latency,
              "Budgets are multiples of the fastest measured model's latency, so they carry to other devices."),
        Table("selection_by_params", "Best top-1 within a parameter budget", by_params),
        Table("selection_efficiency", "Accuracy per million parameters (seed 5.2), the seed's figures and recomputed",
              efficiency, "The seed divides its own top-1 by its own parameter counts. Rank 1 = most accurate per "
              "parameter. " + _rank_note(efficiency)),
        Table("selection_measurements", "Every measured model", frame, measured_note),
    ]
    images = [("accuracy_vs_gmacs.png", _scatter(frame, "GMACs", "ImageNet top-1 vs GMACs (at the weights' resolution)")),
              ("accuracy_vs_params.png", _scatter(frame, "params (M)", "ImageNet top-1 vs parameters")),
              ("accuracy_vs_latency.png", _scatter(frame, "latency (ms)", f"ImageNet top-1 vs batch-1 latency, {device}"
                                                   + (", 1 thread" if device.startswith("CPU") else "")))]
    return Page("selection", "Model selection from measurements (seed 5.1, 5.2)", intro, tables, images)


@erratum
def selection_errata(options: Options) -> list[Erratum]:
    results = _results(options.models, options.full)
    if results is None:
        return []
    frame, accuracy, _ = results
    table = efficiency_table(frame).dropna(subset=["acc / MParam, recomputed"])
    eff = table[table["model"].str.startswith("EfficientNet")]["acc / MParam, recomputed"]
    res = table[table["model"].str.startswith("ResNet")]["acc / MParam, recomputed"]
    rows = []
    if len(eff) and len(res):
        rows.append(Erratum("5.2", "EfficientNets are generally more accurate per parameter than ResNets (key insight 1)",
                            bool(eff.min() > res.max()),
                            f"top-1 per M params: EfficientNets {eff.min():.2f}-{eff.max():.2f}, ResNets {res.min():.2f}-{res.max():.2f}"))
    scenarios = scenario_table(frame, environment()["device"], accuracy)
    for _, row in scenarios.iterrows():
        if row["verdict"].startswith(("agrees", "partly", "disagrees")):
            scenario, recommended, reason = row["scenario (seed 5.1)"], row["seed recommends"], row["seed's reason"]
            rows.append(Erratum("5.1", f"for {scenario}, use {recommended} ({reason})",
                                row["verdict"].startswith("agrees"), f"{row['criterion']}: {row['measured']}"))
    return rows
