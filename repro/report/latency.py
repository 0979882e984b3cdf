"""Latency page (seed section 6.2): implementations side by side, medians with their spread.

Without ``--from-json`` the report measures a small CPU set itself (the seed's four models,
batch 1, plus batch 8 in ``--full``), on ``TIMING_THREADS`` thread as every timing page of the report.
Goals are decided by a one-sided sign test over interleaved rounds; ours against timm is a
non-inferiority goal (not slower by more than ``NON_INFERIORITY_MARGIN``), since implementations that
run the same operators are equally fast, so a test against 1.00 could never be passed.

With ``--from-json`` it merges pytest-benchmark JSON files
(``pytest --benchmark-only --benchmark-json F``), from any number of machines or GPUs, into one
table per machine: rows are models, columns implementations, cells median (IQR) in ms.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from unittest import mock

import pandas as pd
import torch
from tqdm import tqdm

from repro.bench import BenchCase, implementations, measure_interleaved
from repro.environment import cpu_threads, environment
from repro.plotting import label_points, png_bytes, readable_log_axis, subplots
from repro.registry import MODELS
from repro.report.base import (
    TIMING_THREADS,
    TIMING_THREADS_WHY,
    Erratum,
    Options,
    Page,
    ReportError,
    Table,
    findings,
)
from repro.report.measure import model_stats
from repro.seed import SEED_BENCHMARK_MODELS
from repro.seed.code import seed_benchmark_model
from repro.seed.text import lines_containing

KEY = ["machine", "model", "batch", "resolution", "device", "dtype", "memory_format"]


def _checked_stats(bench: dict, extra: dict, where: str) -> dict:
    """A model benchmark's stats, after checking what the pages read of it: its settings (``KEY``), a known
    model, and timings that are positive finite seconds; one line naming the benchmark otherwise."""
    missing = [k for k in KEY[1:] if k not in extra]
    if missing:
        raise ReportError(f"{where}: extra_info lacks {', '.join(missing)}")
    if extra["model"] not in MODELS:
        raise ReportError(f"{where}: no hand-written model named {extra['model']!r}")
    if not isinstance(extra["batch"], int) or isinstance(extra["batch"], bool) or extra["batch"] < 1:
        raise ReportError(f"{where}: batch must be a positive integer, got {extra['batch']!r}")
    stats = bench.get("stats")
    if not isinstance(stats, dict) or not all(k in stats for k in ("median", "iq", "rounds")):
        raise ReportError(f"{where}: stats must hold median, iq and rounds")

    def seconds(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0

    rounds = stats.get("round_medians", [])
    timings = [stats["median"], stats["iq"], *(rounds if isinstance(rounds, list) else [rounds])]
    if not all(seconds(v) for v in timings) or not stats["median"] > 0:
        raise ReportError(f"{where}: timings must be finite non-negative seconds and the median positive, got "
                          f"median {stats['median']!r}, iq {stats['iq']!r}")
    return stats


def load_benchmark_json(paths: list[Path]) -> pd.DataFrame:
    """One row per benchmark from pytest-benchmark JSON files; the machine named from its info."""
    rows = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ReportError(f"--from-json {path}: not a readable JSON file ({err})") from None
        if not isinstance(data, dict) or "benchmarks" not in data or "machine_info" not in data:
            raise ReportError(f"--from-json {path}: not a pytest-benchmark JSON file (no 'benchmarks'/'machine_info')")
        info = data["machine_info"]
        if not isinstance(info, dict) or not isinstance(data["benchmarks"], list):
            raise ReportError(f"--from-json {path}: 'machine_info' must be an object and 'benchmarks' a list")
        cpu = info.get("cpu", {})
        device = info.get("device", cpu.get("brand_raw", "?") if isinstance(cpu, dict) else "?")
        machine = f"{device}, torch {info.get('torch', '?')}, {info.get('torch_threads', '?')} threads"
        for n, bench in enumerate(data["benchmarks"]):
            extra = bench.get("extra_info") if isinstance(bench, dict) else None
            if not isinstance(extra, dict) or "implementation" not in extra:
                continue  # another benchmark kind (e.g. verify)
            stats = _checked_stats(bench, extra, f"--from-json {path}: benchmark {n}")
            rows.append(
                {
                    "file": str(path),
                    "machine": machine,
                    **{k: extra[k] for k in KEY[1:]},
                    "implementation": extra["implementation"],
                    "median_ms": stats["median"] * 1e3,
                    "iqr_ms": stats["iq"] * 1e3,
                    "runs": stats["rounds"],
                    # per-round medians: only from interleaved sweeps (python -m repro.bench)
                    "round_medians_ms": [m * 1e3 for m in stats["round_medians"]] if "round_medians" in stats else None,
                }
            )
    if not rows:
        raise ReportError(f"--from-json: no model benchmarks in {', '.join(map(str, paths))}")
    frame = pd.DataFrame(rows)
    # Two measurements of one cell (same machine, model, settings, implementation) cannot share a
    # table cell, and keeping either would hide the other: refuse, naming them.
    repeated = frame[frame.duplicated(KEY + ["implementation"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        where = sorted(
            set(repeated[(repeated[KEY + ["implementation"]] == first[KEY + ["implementation"]]).all(axis=1)]["file"])
        )
        raise ReportError(
            f"--from-json: {len(repeated)} measurements repeat a cell, "
            f"e.g. {first['implementation']} of {first['model']} "
            f"at batch {first['batch']} on {first['machine']} in "
            f"{' and '.join(where)}; merge different models, settings "
            "or machines, or report each run separately"
        )
    return frame.drop(columns="file")


def _report_implementations(model: str, options: Options) -> list[str]:
    """--full: every mode but compile; --quick (3-minute budget): eager and fused, and the NHWC
    comparison only for timm, the like-for-like baseline of the fused model (TorchScript freezing,
    deprecated in torch and slow to prepare, only in --full)."""
    if options.full:
        return implementations(model, ("eager", "fused", "frozen", "channels_last"))
    impls = implementations(model, ("eager", "fused"))
    return impls + [f"{impl}+channels_last" for impl in impls if impl.startswith("timm:")][:1]


def rounds(options: Options) -> tuple[int, float]:
    """(interleaved rounds per model, minimum seconds per implementation and round). Quick mode spends
    what 3 rounds of 0.1 s did on 6 rounds of 0.05 s: six rounds all one way give a sign test p = 1/64,
    so a verdict can be reached; three never can (p >= 1/8)."""
    return (7, 0.1) if options.full else (6, 0.05)


def measure_here(options: Options) -> pd.DataFrame:
    models = [m for m in options.selected(SEED_BENCHMARK_MODELS if not options.full else sorted(MODELS)) if m in MODELS]
    batches = (1, 8) if options.full else (1,)
    groups = [
        [BenchCase(m, impl, b, min(MODELS[m].input_size, 224)) for impl in _report_implementations(m, options)]
        for m in models
        for b in batches
    ]
    rows = []
    with cpu_threads(TIMING_THREADS):  # every case here runs on the CPU
        env = environment()
        threads = env["torch_threads"]
        machine = f"{env['device']}, torch {env['torch']}, {threads} thread{'' if threads == '1' else 's'}"
        for cases in tqdm(groups, desc="latency", unit="model"):
            n, seconds = rounds(options)
            for case, stats in zip(cases, measure_interleaved(cases, rounds=n, min_run_time=seconds), strict=True):
                rows.append(
                    {
                        "machine": machine,
                        **{k: getattr(case, k) for k in KEY[1:]},
                        "implementation": case.implementation,
                        **stats,
                    }
                )
    return pd.DataFrame(rows)


def _impl_label(impl: str) -> str:
    return impl.split(":", 1)[0] + impl.partition("+")[1] + impl.partition("+")[2] if ":" in impl else impl


def _round_ratios(a: list[float] | None, b: list[float] | None) -> list[float] | None:
    """Round-by-round ratios a / b of two interleaved measurements (None without per-round data)."""
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return None
    return [x / y for x, y in zip(a, b, strict=True)]


def _spread(ratios: list[float] | None) -> str:
    """The spread of a ratio over interleaved rounds: "min-max" of round-by-round ratios."""
    return f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else ""


def _ratio_range(a: list[float] | None, b: list[float] | None) -> str:
    return _spread(_round_ratios(a, b))


SIGNIFICANCE = 0.05


def sign_test_p(slower: int, rounds: int) -> float:
    """One-sided sign test: the chance that at least ``slower`` of ``rounds`` rounds come out slower
    when both implementations are equally fast (each round then slower with probability 1/2)."""
    return sum(math.comb(rounds, k) for k in range(slower, rounds + 1)) / 2**rounds


def false_alarm_rate(rounds: int) -> float:
    """The chance that equally fast implementations are called slower (p < SIGNIFICANCE) with ``rounds`` rounds."""
    return max((p for p in (sign_test_p(k, rounds) for k in range(rounds + 1)) if p < SIGNIFICANCE), default=0.0)


def min_rounds() -> int:
    """The fewest rounds in which a sign test can reach p < SIGNIFICANCE."""
    return next(n for n in range(1, 64) if sign_test_p(n, n) < SIGNIFICANCE)


def goal_verdict(ratios: list[float] | None, threshold: float, better: str) -> str:
    """Whether per-round ratios show ``ratio <= threshold`` (``better="below"``) or ``>= threshold``
    (``"above"``): "✓" when a one-sided sign test over the rounds says so (p < SIGNIFICANCE), "✗"
    when it says the opposite, else "undecided" with the count. With fewer than ``min_rounds()``
    rounds no verdict is possible and the cell says so."""
    if not ratios:
        return "undecided (one median, no rounds to test)"
    n = len(ratios)
    good = sum((r <= threshold) if better == "below" else (r >= threshold) for r in ratios)
    if n < min_rounds():
        return f"undecided with {n} rounds (a sign test needs {min_rounds()})"
    p_good, p_bad = sign_test_p(good, n), sign_test_p(n - good, n)
    if p_good < SIGNIFICANCE:
        return f"✓ ({good} of {n} rounds, p = {p_good:.2g})"
    if p_bad < SIGNIFICANCE:
        return f"✗ ({n - good} of {n} rounds the other way, p = {p_bad:.2g})"
    return f"undecided ({good} of {n} rounds, p = {p_good:.2g})"


# A reproduction must not cost more than the original. Two implementations running the same operators
# are equally fast, and "ours / timm <= 1.00" could then never be shown (half the rounds fall each way):
# the goal is non-inferiority, not slower by more than this margin, tested one-sided over the rounds.
NON_INFERIORITY_MARGIN = 0.02
NOT_SLOWER = f"ours / timm <= {1 + NON_INFERIORITY_MARGIN:.2f}"


def non_inferiority_verdict(ratios: list[float] | None) -> str:
    """ours / timm <= 1 + NON_INFERIORITY_MARGIN: "✓" when a one-sided sign test over the rounds shows
    the ratio below it, "✗" when it shows the ratio above it (slower by more than the margin), else
    undecided (``goal_verdict``). One median without rounds decides nothing."""
    return goal_verdict(ratios, 1 + NON_INFERIORITY_MARGIN, "below")


def _pivots(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Median ms and (where measured interleaved) per-round medians, one column per implementation label."""
    frame = frame.assign(impl=frame["implementation"].map(_impl_label))
    medians = frame.pivot_table(index=KEY, columns="impl", values="median_ms", aggfunc="first")
    rounds = None
    if "round_medians_ms" in frame and frame["round_medians_ms"].notna().any():
        rounds = frame.pivot_table(index=KEY, columns="impl", values="round_medians_ms", aggfunc="first")
    return medians, rounds


def _paired_ratio(medians: pd.Series, rounds: pd.Series | None, a: str, b: str) -> tuple[float, list[float] | None]:
    """a / b: the median of the per-round ratios where the two were timed in the same rounds (the
    paired estimate: each round times both back to back, so drift in machine load cancels), else
    the ratio of their medians. Also returns the per-round ratios (None without them)."""
    ratios = _round_ratios(rounds[a], rounds[b]) if rounds is not None and a in rounds and b in rounds else None
    return (statistics.median(ratios) if ratios else medians[a] / medians[b]), ratios


FOLDING_ALONE = "timm+channels_last / fused (folding alone)"


def speed_goals(frame: pd.DataFrame) -> pd.DataFrame:
    """Issue 7's goals, checked on every row that has the implementations they name, each by a one-sided
    sign test over the rounds (``goal_verdict``): ours not slower than timm by more than the margin
    (``non_inferiority_verdict``), and on CPU at batch 1 in fp32 the fused model >= 1.15x faster than
    timm's eager model. Ratios are paired (``_paired_ratio``)."""
    medians, rounds = _pivots(frame)
    if "ours" not in medians or "timm" not in medians:
        return pd.DataFrame()
    rows = []
    for key, row in medians.iterrows():
        if pd.isna(row["ours"]) or pd.isna(row["timm"]):
            continue
        record = dict(zip(KEY, key, strict=True))
        per_round = rounds.loc[key] if rounds is not None else None
        ratio, ratios = _paired_ratio(row, per_round, "ours", "timm")
        record.update(
            {
                "ours / timm": round(ratio, 3),
                "per round": _spread(ratios),
                NOT_SLOWER: non_inferiority_verdict(ratios),
                "rounds": len(ratios) if ratios else None,
            }
        )
        if "ours+fused" in row and pd.notna(row["ours+fused"]):
            speedup, speedups = _paired_ratio(row, per_round, "timm", "ours+fused")
            applies = record["device"] == "cpu" and record["batch"] == 1 and record["dtype"] == "fp32"
            record.update(
                {
                    "timm / fused (speed-up)": round(speedup, 3),
                    "speed-up per round": _spread(speedups),
                    ">= 1.15x": goal_verdict(speedups, 1.15, "above") if applies else "n/a (CPU b1 fp32 goal)",
                }
            )
            # The fused model folds BatchNorm and runs in NHWC: against timm also in NHWC, the folding's share alone.
            if "timm+channels_last" in row and pd.notna(row["timm+channels_last"]):
                folding, foldings = _paired_ratio(row, per_round, "timm+channels_last", "ours+fused")
                record.update({FOLDING_ALONE: round(folding, 3), "folding alone per round": _spread(foldings)})
        rows.append(record)
    return pd.DataFrame(rows)


def side_by_side(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: (machine, model, batch, ...); columns: implementation cells and ratios against timm."""
    frame = frame.assign(impl=frame["implementation"].map(_impl_label))
    cells = frame.assign(cell=frame.apply(lambda r: f"{r.median_ms:.2f} ({r.iqr_ms:.2f})", axis=1))
    table = cells.pivot_table(index=KEY, columns="impl", values="cell", aggfunc="first")
    medians, rounds = _pivots(frame)
    ratios = [(impl, "timm") for impl in ("ours", "ours+fused", "ours+frozen", "torchvision")]
    # The fused model runs in NHWC; timm converted to NHWC is the like-for-like comparison.
    ratios += [("ours+channels_last", "timm+channels_last"), ("ours+fused", "timm+channels_last")]
    ratios += [("ours+fused", "ours")]
    for impl, base in ratios:
        if impl in medians and base in medians:
            # Paired, as the goals: the median of per-round ratios where the rounds were interleaved.
            table[f"{impl} / {base}"] = [
                round(
                    _paired_ratio(medians.loc[key], rounds.loc[key] if rounds is not None else None, impl, base)[0], 3
                )
                if pd.notna(medians.loc[key, impl]) and pd.notna(medians.loc[key, base])
                else None
                for key in medians.index
            ]
            if rounds is not None and impl in rounds and base in rounds:
                table[f"{impl} / {base} per round"] = [
                    _ratio_range(a, b) for a, b in zip(rounds[impl], rounds[base], strict=True)
                ]
    known = (
        "ours",
        "ours+fused",
        "ours+frozen",
        "timm",
        "torchvision",
        "ours+channels_last",
        "timm+channels_last",
        "torchvision+channels_last",
    )
    order = [c for c in known if c in table] + [c for c in table if "/" not in c and c not in known]
    return table[order + [c for c in table if "/" in c]].reset_index()


def latency_plot(frame: pd.DataFrame) -> bytes:
    fig, ax = subplots(figsize=(8, 5))
    first = frame[(frame["batch"] == frame["batch"].min())]
    first = first.assign(
        impl=first["implementation"].map(_impl_label),
        gmacs=[model_stats(m, r)["macs"] / 1e9 for m, r in zip(first["model"], first["resolution"], strict=True)],
    )
    for impl, group in first.groupby("impl"):
        ax.scatter(group["gmacs"], group["median_ms"], label=impl, s=18)
    eager = first[first["impl"] == "ours"] if (first["impl"] == "ours").any() else first.drop_duplicates("model")
    readable_log_axis(ax, first["gmacs"], "x")
    readable_log_axis(ax, first["median_ms"], "y")
    label_points(ax, eager["gmacs"].tolist(), eager["median_ms"].tolist(), eager["model"].tolist())
    ax.set_xlabel("GMACs per image, at the benchmarked resolution (log scale)")
    ax.set_ylabel("median latency (ms, log scale)")
    machines = "; ".join(sorted(first["machine"].unique()))
    # Labels may stand above the axes (many models): the title goes above the highest of them.
    fig.canvas.draw()
    top = max([t.get_window_extent().y1 for t in ax.texts] + [ax.bbox.y1])
    ax.set_title(
        f"Latency vs GMACs, batch {first['batch'].min()}, {machines}\n(labels at the eager 'ours' points)",
        fontsize=9,
        pad=6 + (top - ax.bbox.y1) * 72 / fig.dpi,
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


@mock.patch.object(torch.cuda, "is_available", lambda: True)
def seed_benchmark_device() -> str:
    """Where seed 6.2's ``benchmark_model`` puts a model it is handed on the CPU, on a machine with CUDA
    (``torch.cuda.is_available`` patched to say so; the model records the move and stops the run)."""

    class Moved(Exception):
        pass

    class Recorder(torch.nn.Module):
        def to(self, device):  # the first thing benchmark_model does with the model
            raise Moved(str(device))

    try:
        seed_benchmark_model(Recorder().cpu())
    except Moved as moved:
        return str(moved)
    return "cpu"


def seed_benchmark_errata() -> list[Erratum]:
    device = seed_benchmark_device()
    hardware = [line.strip() for line in lines_containing("i9-12900K") + lines_containing("RTX 3090")]
    return [
        Erratum(
            "6.2",
            "`run_benchmark`'s 'CPU延迟' column is CPU latency",
            device == "cpu",
            f"`benchmark_model` moves every model to `cuda` when CUDA is available (run here with "
            f"torch.cuda.is_available patched: `benchmark_model(model.cpu())` calls `model.to({device!r})`), so on "
            "a GPU machine the 'CPU' column times the GPU; it is CPU latency only where there is no GPU",
            note="torch.cuda.synchronize() is called only for CUDA, so the CPU branch is fine on a CPU-only machine",
        ),
        Erratum(
            "6.2",
            "the benchmark reports the machine it ran on",
            not hardware,
            "the hardware lines are constants printed whatever the machine: " + "; ".join(f"`{h}`" for h in hardware),
        ),
    ]


def build(options: Options) -> Page | None:
    frame = load_benchmark_json(list(options.from_json)) if options.from_json else measure_here(options)
    if frame.empty:
        return None
    n, seconds = rounds(options)
    machines = sorted(frame["machine"].unique())
    source = (
        f"merged from {len(options.from_json)} pytest-benchmark JSON file(s)"
        if options.from_json
        else f"measured by this report run with torch.utils.benchmark: {n} rounds of at least {seconds} s per "
        "implementation"
    )
    table = side_by_side(frame)
    raw = frame.drop(columns="round_medians_ms").sort_values(KEY + ["implementation"]).reset_index(drop=True)
    raw["images_per_s"] = (raw["batch"] * 1e3 / raw["median_ms"]).round(1)
    goals = speed_goals(frame)
    errata = seed_benchmark_errata()
    summary, lead = "", "no speed goal could be checked (ours and timm were not both measured)"
    threads = {int(m.group(1)) for machine in machines if (m := re.search(r"(\d+) threads?$", machine))}
    # The fused model's gain depends on the thread count (the runtimes page times 2): every statement names it.
    on_threads = f"{' or '.join(map(str, sorted(threads))) or '?'} thread{'s' if threads != {1} else ''}"
    if not goals.empty:
        decided_slower = goals[goals[NOT_SLOWER].str.startswith("✗")]
        chance = sum(false_alarm_rate(int(k)) for k in goals["rounds"].dropna())
        counts = goals[NOT_SLOWER].str.split(" ").str[0].value_counts()
        summary = (
            "Ratios are paired where the rounds were interleaved: the median of the per-round ratios (each round "
            "times both back to back, so load drift cancels), in this table and the next. A goal is ✓ or ✗ only "
            "where a one-sided sign test over the rounds says so (p "
            f"< {SIGNIFICANCE}; at least {min_rounds()} rounds). {NOT_SLOWER} is the goal that ours is not slower "
            f"than timm by more than {NON_INFERIORITY_MARGIN:.0%} (non-inferiority: implementations running the same "
            "operators are equally fast, and a test against 1.00 could never show that): "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + (
                f"; slower by more than the margin: "
                f"{', '.join(f'{r.model} b{r.batch}' for r in decided_slower.itertuples())}"
                if len(decided_slower)
                else ""
            )
            + f". Were every pair equally fast, at most {chance:.2g} rows would be called slower by chance."
        )
        lead = f"{NOT_SLOWER}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        if ">= 1.15x" in goals:
            applicable = goals[~goals[">= 1.15x"].str.startswith("n/a")]
            fused = applicable[">= 1.15x"].str.split(" ").str[0].value_counts()
            summary += (
                f" Fused >= 1.15x faster than timm (CPU, batch 1, fp32, {on_threads}): "
                + ", ".join(f"{k} {v}" for k, v in fused.items())
                + ". The goal's speed-up is the fused model's two changes together, BatchNorm folded and the NHWC "
                "layout, against timm's eager NCHW model"
                + (
                    f"; against timm also in NHWC, the folding alone gives "
                    f"{applicable[FOLDING_ALONE].min():.3f}-{applicable[FOLDING_ALONE].max():.3f}x "
                    f"({FOLDING_ALONE!r})"
                    if FOLDING_ALONE in applicable and applicable[FOLDING_ALONE].notna().any() else ""
                )
                + "."
            )
            lead += (f"; fused >= 1.15x faster than timm ({on_threads}): "
                     + ", ".join(f"{k} {v}" for k, v in fused.items()))
    present = set(table.columns)
    described = {
        "ours+fused": "`ours+fused` is `repro.fuse(model)`: BatchNorm folded into convolutions and the model run in "
        "channels-last (NHWC) layout; it takes the same NCHW input as the others and converts it inside the timed "
        "call.",
        "ours+frozen": "`ours+frozen` is `repro.fuse(model, freeze=True, example_input=x)` (TorchScript-frozen for "
        "oneDNN).",
        "timm+channels_last": "`+channels_last` columns are the eager models converted to NHWC (input converted "
        "before timing): `ours+fused / timm+channels_last` is the like-for-like ratio.",
    }
    caveat = (
        f" Measured on {', '.join(map(str, sorted(threads)))} threads: {TIMING_THREADS_WHY}, which the interleaving "
        "spreads over all implementations alike and the per-round spread shows; the report's own timing pages use "
        f"{TIMING_THREADS}."
        if any(t > TIMING_THREADS for t in threads)
        else ""
    )
    intro = (
        findings(errata, f"{lead} ({source})")
        + "\n\n"
        "Seed section 6.2 times ResNet-18, ResNet-50, EfficientNet-B0 and MobileNetV3-S with a hand-rolled loop "
        "and quotes an i9-12900K / RTX 3090 without numbers. Here each model's implementations run side by side "
        f"in one process, interleaved round-robin so load drift hits all alike, on {'; '.join(machines)}."
        + caveat
        + " Cells: median ms (interquartile range) over every timed run of every round; ratios: paired, the median "
        "of per-round ratios, so a ratio can disagree with the two cells' medians when the machine's load moved "
        "between rounds (the per-round range says by how much). Ratios below 1 mean faster than timm. "
        + " ".join(text for column, text in described.items() if column in present)
        + " Models larger than 224 px natively are timed at 224 on CPU; the selection page times at the weights' "
        "resolution."
    )
    goal_columns = (
        "model",
        "batch",
        "device",
        "ours / timm",
        "per round",
        NOT_SLOWER,  # its verdict says how many rounds: the rounds column is in the CSV
        "timm / fused (speed-up)",
        "speed-up per round",
        ">= 1.15x",
        FOLDING_ALONE,
    )
    tables = (
        [
            Table(
                "latency_goals",
                "Speed goals, checked",
                goals,
                note=summary,
                page_columns=tuple(c for c in goal_columns if c in goals),
            )
        ]
        if not goals.empty
        else []
    )
    cells = [
        c
        for c in (
            "model",
            "batch",
            "ours",
            "ours+fused",
            "ours+frozen",
            "timm",
            "torchvision",
            "timm+channels_last",
            "ours+fused / ours",
            "ours+fused / ours per round",
        )
        if c in table
    ]
    return Page(
        "latency",
        "Latency, implementations side by side (seed 6.2)",
        intro,
        tables
        + [
            Table(
                "latency",
                "Median latency (ms), implementations side by side",
                table,
                "Every ratio and the machine columns are in the CSV.",
                page_columns=tuple(cells[:10]),
            ),
            Table(
                "latency_raw",
                "Every measurement",
                raw,
                page_columns=(
                    "machine",
                    "model",
                    "batch",
                    "resolution",
                    "device",
                    "implementation",
                    "median_ms",
                    "iqr_ms",
                    "runs",
                    "images_per_s",
                ),
            ),
        ],
        images=[("latency_vs_gmacs.png", latency_plot(frame))],
        errata=errata,
    )
