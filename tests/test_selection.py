"""Selection page: top-1 from torchvision metadata, frontiers, budgets, the seed's scenarios and 5.2 table."""

import pandas as pd
import pytest

from repro.registry import MODELS
from repro.report import Options, Outcome
from repro.report import selection
from repro.seed import SEED_MODELS


def _frame(rows):
    frame = pd.DataFrame(rows, columns=["model", "top-1 (%)", "latency (ms)", "params (M)"])
    frame["on latency frontier"] = selection.pareto(frame, "latency (ms)")
    frame["on params frontier"] = selection.pareto(frame, "params (M)")
    return frame


def test_torchvision_accuracy_from_metadata():
    acc = selection.torchvision_accuracy("resnet50")
    assert acc["top1"] == 76.13 and acc["resolution"] == 224
    assert acc["best_top1"] == 80.858 and acc["best_weights"] == "IMAGENET1K_V2"
    assert selection.torchvision_accuracy("efficientnet_b3")["resolution"] == 300
    assert selection.torchvision_accuracy("no_such_model") is None
    assert selection.torchvision_builder("resnet18") == "resnet18"
    assert selection.torchvision_builder("plain20") is None  # no reference: no top-1


def test_pareto_and_budgets():
    frame = _frame([("a", 70.0, 1.0, 5.0), ("b", 75.0, 2.0, 20.0), ("c", 72.0, 3.0, 4.0), ("d", 80.0, 10.0, 30.0)])
    assert frame["on latency frontier"].tolist() == [True, True, False, True]
    assert frame["on params frontier"].tolist() == [False, True, True, True]  # c: fewer params, more accurate than a
    table = selection.leaders(frame, "latency (ms)", [1.5, 3.0, 100.0], str)
    assert table["leader"].tolist() == ["a", "b", "d"]
    assert table["runner-up"].tolist() == ["", "c", "b"]
    assert selection.leaders(frame, "params (M)", [1.0], str)["leader"].tolist() == ["none"]


def test_scenarios_decided_by_measurements():
    frame = _frame(
        [
            ("mobilenetv3_small_100", 67.7, 2.0, 2.5),
            ("mobilenetv3_large_100", 74.0, 3.0, 5.5),
            ("resnet18", 69.8, 5.0, 11.7),
            ("efficientnet_b0", 77.7, 6.0, 5.3),
            ("resnet50", 76.1, 20.0, 25.6),
        ]
    )
    table = selection.scenario_table(frame, "CPU (x86_64)").set_index("scenario (seed 5.1)")
    mobile = table.loc["mobile / edge devices"]
    assert mobile["verdict"] == "agrees"
    realtime = table.loc["real-time detection / segmentation"]
    assert "resnet18" in realtime["measured"] and "beaten by mobilenetv3_large_100" in realtime["measured"]
    assert "would read 'partly'" in realtime["measured"] and "not measured: resnet34" in realtime["measured"]
    server = table.loc["server deployment"]  # a GPU claim: a CPU measurement does not decide it
    assert server["verdict"].startswith("not decided here") and "would read 'disagrees'" in server["measured"]
    assert table.loc["real-time detection / segmentation", "verdict"].startswith("not decided here")
    errata = {e.claim.split(",")[0]: e for e in selection.scenario_errata(table.reset_index())}
    assert (
        errata["for server deployment"].outcome is Outcome.UNDECIDED and "GPU" in errata["for server deployment"].decide
    )
    assert errata["for mobile / edge devices"].outcome is Outcome.HOLDS
    assert table.loc["compression / distillation", "verdict"] == "not measurable here"
    assert table.loc["high accuracy", "verdict"] == "not measured"
    # high accuracy is decided on every model with a top-1, timed or not
    accuracy = pd.DataFrame(
        {
            "model": ["efficientnet_b7", "efficientnet_b6", "efficientnet_b5", "resnet152", "resnet50"],
            "top-1 (%)": [84.1, 84.0, 83.4, 78.3, 76.1],
        }
    )
    high = selection.scenario_table(frame, "CPU", accuracy).set_index("scenario (seed 5.1)").loc["high accuracy"]
    assert high["verdict"] == "partly" and "resnet152: 78.3%" in high["measured"]


def test_efficiency_table_keeps_seed_arithmetic():
    table = selection.efficiency_table(pd.DataFrame(columns=["model", "params (M)"])).set_index("model")
    assert table.loc["MobileNetV3-S", "seed acc / MParam"] == round(56 / 2.5, 2)
    assert table.loc["MobileNetV3-S", "seed rank"] == 1
    assert table.loc["ResNet-50", "top-1 (%), torchvision V1"] == 76.13
    assert len(table) == len(SEED_MODELS)
    assert table.loc["ResNet-50", "params (M), counted"] == pytest.approx(25.56, abs=0.01)


def test_quick_candidates_leave_large_models_for_full():
    names, notes = selection.candidates(Options())
    assert "resnet50" in names and "plain20" not in names
    if "efficientnet_b7" in MODELS:
        assert "efficientnet_b7" not in names and any("efficientnet_b7" in n for n in notes)


def test_page_measures_selected_models():
    page = selection.build(Options(models=("resnet18", "resnet34")))
    tables = {t.slug: t.frame for t in page.tables}
    measured = tables["selection_measurements"]
    assert set(measured["model"]) == {"resnet18", "resnet34"}
    assert (measured["latency (ms)"] > 0).all() and measured.set_index("model").loc[
        "resnet18", "GMACs"
    ] == pytest.approx(1.814, abs=1e-3)
    assert {name for name, _ in page.images} == {
        "accuracy_vs_gmacs.png",
        "accuracy_vs_params.png",
        "accuracy_vs_latency.png",
    }
    assert all(data[:4] == b"\x89PNG" for _, data in page.images)
    assert selection.build(Options(models=("plain20",))) is None
    figures = {e.claim: e for e in page.errata if e.section == "5.2"}
    assert figures["the parameter counts of the 2 models"].holds


def test_figures_checked_against_their_own_source():
    """A seed figure holds if the source it can come from rounds to it: the paper's (named table) or
    torchvision's weights; the other source is a second fact beside it."""
    table = selection.figures_table(Options(models=("efficientnet_b*", "mobilenetv3*", "resnet101"))).set_index(
        "hand-written"
    )
    assert table.loc["efficientnet_b1", "top-1 matches"] == "paper/torchvision"  # 79 from 79.1 and 78.64
    assert table.loc["efficientnet_b2", "params match"] == "paper"  # 9.2M (Table 2); the architecture counts 9.11M
    assert table.loc["mobilenetv3_large_100", "params match"] == "paper"  # 5.4M (Table 3); counted 5.48M
    assert table.loc["resnet101", "top-1 matches"] == "paper"  # 78: 10-crop 78.25; torchvision 77.37
    assert table.loc["mobilenetv3_small_100", "top-1 matches"] == "neither"
    rows = {e.claim: e for e in selection.figures_errata(table.reset_index())}
    assert not rows["MobileNetV3-S top-1 is 56%"].holds and "MAdds" in rows["MobileNetV3-S top-1 is 56%"].note
