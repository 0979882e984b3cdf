"""Benchmark cases: implementation names, what each builds, and that each runs the same model."""

import copy

import pytest
import torch

import reference
import repro
from helpers import aten_ops
from repro.bench import (
    BenchCase, BenchmarkConfigError, applicable, build, implementations, input_format, parse_implementation, prepare,
    prepare_with_setup,
)
from repro.equivalence import Diff, randomize_
from repro.registry import reference_entry


def test_parse_implementation():
    assert parse_implementation("ours") == ("ours", set())
    assert parse_implementation("timm:resnet50+channels_last+compile") == ("timm:resnet50",
                                                                          {"+channels_last", "+compile"})
    assert parse_implementation("timm:resnet50+onnxruntime") == ("timm:resnet50", {"+onnxruntime"})
    assert parse_implementation("ours+fused+compile") == ("ours", {"+fused", "+compile"})


@pytest.mark.parametrize("bad, message", [
    ("ours+turbo", "suffixes must be among"),
    ("ours+compile+fused", "in that order"),
    ("ours+fused+fused", "in that order"),
    ("ours+frozen+compile", "+frozen stands alone"),
    ("ours+compile+onnxruntime", "+onnxruntime stands alone"),
    ("ours+onnxruntime+compile", "in that order"),
    ("ours+fused+channels_last", "already channels-last"),
    ("timm:resnet18+fused", "only ours is fused"),
])
def test_bad_implementation_names(bad, message):
    with pytest.raises(BenchmarkConfigError, match=message.replace("+", r"\+")):
        parse_implementation(bad)


def test_implementations_per_mode():
    assert implementations("resnet18", ("eager",)) == ["ours", "timm:resnet18", "torchvision:resnet18"]
    impls = implementations("resnet18", ("eager", "fused", "frozen", "channels_last", "compile"))
    assert impls[:5] == ["ours", "ours+fused", "ours+frozen", "timm:resnet18", "torchvision:resnet18"]
    assert "timm:resnet18+channels_last" in impls and "ours+fused+compile" in impls
    assert "timm:resnet18+channels_last+compile" in impls and "ours+frozen+compile" not in impls
    for impl in impls:
        parse_implementation(impl)  # every generated name is valid
    with pytest.raises(BenchmarkConfigError, match="unknown benchmark modes"):
        implementations("resnet18", ("eager", "warp"))
    assert implementations("resnet18", ("eager", "onnxruntime"))[3:] == [
        "ours+onnxruntime", "timm:resnet18+onnxruntime", "torchvision:resnet18+onnxruntime"]


def test_onnxruntime_runs_fp32_on_the_cpu_only():
    from repro.bench import validate

    assert applicable("ours+onnxruntime", "cpu", "fp32")
    assert not applicable("ours+onnxruntime", "cuda", "fp32") and not applicable("ours+onnxruntime", "cpu", "bf16")
    assert applicable("ours+compile", "cuda", "bf16") and not applicable("ours+frozen", "cuda", "fp32")
    for bad in (BenchCase("resnet18", "ours+onnxruntime", device="cuda"),
                BenchCase("resnet18", "ours+onnxruntime", dtype="bf16")):
        with pytest.raises(BenchmarkConfigError, match="runs fp32 on the CPU"):
            validate(bad)


def test_onnxruntime_implementation_is_the_same_function_and_reports_its_setup(monkeypatch):
    """``+onnxruntime``: the model exported and run in ONNX Runtime, its export and session build
    timed apart from latency (a tiny randomized model stands behind the name)."""
    pytest.importorskip("onnxruntime")
    import repro.bench
    import repro.registry

    model = randomize_(repro.registry.create_model("resnet20"), (2, 3, 32, 32)).eval()
    monkeypatch.setattr(repro.bench, "create_model", lambda name: copy.deepcopy(model))  # the name bench builds with
    expected = prepare(BenchCase("resnet20", "ours", batch=2, resolution=32))()
    prepared = prepare_with_setup(BenchCase("resnet20", "ours+onnxruntime", batch=2, resolution=32))
    out = prepared.run()
    assert out.shape == (2, 10)
    assert Diff.of(out, expected).ok(1e-4), Diff.of(out, expected)
    assert set(prepared.setup_s) == {"build", "export", "session", "warmup"}
    assert all(v >= 0 for v in prepared.setup_s.values())
    with pytest.raises(BenchmarkConfigError, match="not a PyTorch model"):
        build(BenchCase("resnet20", "ours+onnxruntime"))


def test_channels_last_suffix_converts_model_and_input():
    case = BenchCase("resnet18", "timm:resnet18+channels_last", resolution=64)
    assert input_format(case) == torch.channels_last
    assert build(case).conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert input_format(BenchCase("resnet18", "timm:resnet18", resolution=64)) == torch.contiguous_format


@pytest.mark.parametrize("impl", ["ours+fused", "ours+frozen", "ours+channels_last", "ours+fused+compile"])
def test_every_implementation_of_ours_computes_the_same_function(impl, monkeypatch):
    """The timed callables are the same network on the same input: one randomized model behind
    every implementation, logits equal to float32 rounding (BN folding, NHWC kernels)."""
    import repro.bench
    import repro.registry

    torch.manual_seed(0)
    model = randomize_(repro.registry.create_model("resnet18"), (2, 3, 64, 64)).eval()
    monkeypatch.setattr(repro.bench, "create_model", lambda name: copy.deepcopy(model))  # the name bench builds with
    expected = prepare(BenchCase("resnet18", "ours", batch=2, resolution=64))()
    out = prepare(BenchCase("resnet18", impl, batch=2, resolution=64))()
    assert out.shape == (2, 1000)
    assert Diff.of(out, expected).ok(1e-4), Diff.of(out, expected)


def test_frozen_is_cpu_only():
    from repro.bench import validate

    with pytest.raises(BenchmarkConfigError, match="CPU mode"):
        validate(BenchCase("resnet18", "ours+frozen", device="cuda"))


def test_sweep_cli_writes_json_the_report_reads(tmp_path, capsys):
    """``python -m repro.bench``: interleaved sweep -> JSON -> the latency page's side-by-side table,
    with each ratio's spread over the rounds."""
    from repro.bench import main
    from repro.report.latency import load_benchmark_json, side_by_side

    out = tmp_path / "sweep.json"
    assert main(["--models", "resnet18", "--batch", "1,2", "--resolution", "64", "--modes", "eager,fused",
                 "--rounds", "3", "--min-run-time", "0.01", "--json", str(out)]) == 0
    frame = load_benchmark_json([out])
    assert len(frame) == 2 * 4  # ours, ours+fused, timm, torchvision at two batch sizes
    assert all(len(r) == 3 for r in frame["round_medians_ms"])
    table = side_by_side(frame)
    assert list(table["batch"]) == [1, 2]
    low, high = (float(v) for v in table["ours / timm per round"].iloc[0].split("-"))
    assert low <= table["ours / timm"].iloc[0] * 1.5 and low <= high


@pytest.mark.parametrize("args, message", [
    (["--models", "nope*"], "matches no hand-written model"),
    (["--batch", "0"], "batch size must be positive"),
    (["--modes", "eager,warp"], "unknown benchmark modes"),
    (["--dtype", "fp8"], "invalid choice"),
    (["--rounds", "0", "--models", "resnet18", "--resolution", "32"], "rounds must be >= 1"),
    (["--min-run-time", "nan", "--models", "resnet18"], "a positive finite number"),  # nan <= 0 is False: never ends
    (["--min-run-time", "inf", "--models", "resnet18"], "a positive finite number"),
    (["--batch", ",", "--models", "resnet18"], "it got none"),
])
def test_sweep_cli_bad_arguments_exit_2(args, message, tmp_path, capsys):
    from repro.bench import main

    out = tmp_path / "x.json"
    assert main(args + ["--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_sweep_cli_missing_output_directory(tmp_path, capsys):
    from repro.bench import main

    assert main(["--models", "resnet18", "--json", str(tmp_path / "no" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an output that is a directory is refused before measuring, and nothing is left beside it
    (tmp_path / "out").mkdir()
    assert main(["--models", "resnet18", "--json", str(tmp_path / "out")]) == 2
    assert "exists and is not a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# Same operators in the same order as the reference (a dropout call the reference makes in eval
# mode, a no-op, aside): any speed difference can then only be noise or memory layout.
SAME_OPERATORS = ["timm:resnet18", "torchvision:resnet18", "timm:resnet50", "torchvision:resnet50", "timm:seresnet50",
                  "timm:resnext50_32x4d", "torchvision:resnext50_32x4d", "timm:resnetv2_18", "timm:resnetv2_50"]


@pytest.mark.parametrize("spec", SAME_OPERATORS)
def test_forward_issues_the_reference_operators(spec):
    x = torch.randn(1, 3, 64, 64)
    ours = aten_ops(repro.create_model(reference_entry(spec).model), x)
    theirs = [op for op in aten_ops(reference.create(spec), x) if op != "aten.dropout.default"]
    assert ours == theirs


def test_runtimes_page_tables_from_measurements():
    """The runtimes page's analysis on given timings (nothing timed here): best runtime per model,
    speed-ups paired per round, and the selection page's frontier and scenarios re-decided on them."""
    import pandas as pd

    from repro.report.base import MAX_PAGE_COLUMNS
    from repro.report.runtimes import RUNTIMES, build_tables

    rounds = {  # per-round medians (ms): resnet18 fastest in ONNX Runtime, mobilenet fastest fused
        "resnet18": {"timm eager": [10, 12, 11], "ours eager": [10, 12, 11], "ours fused": [8, 9, 8],
                     "timm compile": [9, 9, 9], "timm onnxruntime": [5, 6, 4]},
        "mobilenetv3_small_100": {"timm eager": [6, 6, 6], "ours eager": [6, 6, 6], "ours fused": [2, 3, 2],
                                  "timm compile": [4, 4, 4], "timm onnxruntime": [3, 3, 3]},
    }
    rows = [{"model": m, "resolution": 224, "runtime": r, "implementation": RUNTIMES[r],
             "median_ms": float(sorted(v)[1]), "iqr_ms": 0.5, "runs": 3, "round_medians_ms": [float(x) for x in v],
             "setup_s": {"build": 0.1, "export": 2.0, "session": 0.3, "warmup": 0.2}}
            for m, per in rounds.items() for r, v in per.items()]
    built = build_tables(pd.DataFrame(rows), "CPU (x86_64)", 2)
    assert all(len(t.shown().columns) <= MAX_PAGE_COLUMNS for t in built)  # each table fits a page
    tables = {t.slug: t.frame for t in built}
    best = tables["runtimes_best"].set_index("model")
    assert best.loc["resnet18", "best runtime"] == "timm onnxruntime"
    assert best.loc["mobilenetv3_small_100", "best runtime"] == "ours fused"
    assert best.loc["resnet18", "speed-up over timm eager"] == 2.0  # median of 10/5, 12/6, 11/4
    assert best.loc["resnet18", "per round"] == "2.000-2.750"
    latency = tables["runtimes_latency"].set_index("model")
    assert latency.loc["mobilenetv3_small_100", "ours fused speed-up"] == 3.0
    frontier = tables["runtimes_frontier"].set_index("model")
    assert list(frontier["runtime best"]) == ["timm onnxruntime", "ours fused"]
    scenarios = tables["runtimes_scenarios"]
    assert {"verdict, ours eager", "verdict, best runtime", "changes"} <= set(scenarios.columns)
    # A threshold computed from the latencies is stated for each side: 3x the fastest eager (6 ms), fused (2 ms).
    real_time = scenarios.set_index("scenario (seed 5.1)").loc["real-time detection / segmentation"]
    assert "(18.0 ms;" in real_time["criterion, ours eager"] and "(6.0 ms;" in real_time["criterion, best runtime"]
    assert real_time["measured, best runtime"].startswith("on CPU (x86_64), each model on its best runtime, 2 threads, "
                                                          "image classification: a proxy for backbones")


def test_runtimes_page_opens_with_findings_checks_its_goals_and_is_rebuilt_from_its_json(tmp_path):
    """The page's goals decided by a sign test over the rounds, its findings read off its tables, and quick mode
    rebuilding the same page from the measurements it wrote (nothing timed here)."""
    from repro.report.base import Options, render_page
    from repro.report.runtimes import RESULTS_FORMAT, RUNTIMES, build, build_page

    rounds = {  # per-round medians (ms), 6 rounds: fused beats compile in every round for resnet18, never for mnv3
        "resnet18": {"timm eager": [10] * 6, "ours eager": [10] * 6, "ours fused": [8] * 6,
                     "timm compile": [9] * 6, "timm onnxruntime": [5] * 6},
        "mobilenetv3_small_100": {"timm eager": [6] * 6, "ours eager": [6] * 6, "ours fused": [4] * 6,
                                  "timm compile": [3] * 6, "timm onnxruntime": [2] * 6},
    }
    setup = {"resnet18": {"build": 0.1, "export": 2.0, "session": 0.3, "warmup": 0.2},
             "mobilenetv3_small_100": {"build": 0.1, "export": 70.0, "session": 0.3, "warmup": 0.2}}
    results = {"format": RESULTS_FORMAT, "environment": {"date": "2026-12-07 00:00 UTC", "device": "CPU (x86_64)"},
               "threads": 2, "rounds": 6, "min_run_time": 0.1,
               "measurements": [{"model": m, "resolution": 224, "runtime": r, "implementation": RUNTIMES[r],
                                 "median_ms": float(v[0]), "iqr_ms": 0.0, "runs": 6,
                                 "round_medians_ms": [float(x) for x in v], "setup_s": setup[m]}
                                for m, per in rounds.items() for r, v in per.items()]}
    page = build_page(results, "test")
    goals = {t.slug: t.frame for t in page.tables}["runtimes_goals"].set_index(["model", "goal"])["verdict"]
    assert goals[("resnet18", "ours fused faster than timm compile")].startswith("✓ (6 of 6")
    assert goals[("mobilenetv3_small_100", "ours fused faster than timm compile")].startswith("✗")
    assert goals[("mobilenetv3_small_100", "ONNX export + session build < 60 s")] == "✗"
    assert page.intro.startswith("Findings: timm onnxruntime is the fastest runtime for 2 of 2 models")
    assert "ours fused beats timm compile for 1 of 2 models (resnet18); compile is faster for mobilenetv3_small_100" \
        in page.intro
    assert "under a minute for 1 of 2 models (not mobilenetv3_small_100)" in page.intro
    render_page(page, results["environment"] | {"torch": "t"})  # renders

    saved = tmp_path / "runtimes.json"
    saved.write_bytes(dict(page.files)["runtimes.json"])
    again = build(Options(runtimes_results=saved))
    assert [t.frame.to_csv() for t in again.tables] == [t.frame.to_csv() for t in page.tables]
    only = build(Options(runtimes_results=saved, models=("resnet*",)))
    assert set({t.slug: t.frame for t in only.tables}["runtimes_best"]["model"]) == {"resnet18"}
    assert build(Options(runtimes_results=tmp_path / "missing.json")) is None
