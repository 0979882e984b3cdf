"""Selection page: top-1 from torchvision metadata, frontiers, budgets, the seed's scenarios and 5.2 table."""

import pandas as pd
import pytest

from repro.registry import MODELS
from repro.report import Options, Outcome
from repro.report import selection
from repro.seed import SEED_MODELS


TIMED = "eager PyTorch, 1 thread"  # how the frames' latencies were timed, as the page says

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
    """One rule for every scenario: one that names a device (mobile / edge, a GPU server) is decided only on
    that device, the reading here shown as a proxy; one that names none is decided on the device measured."""
    frame = _frame(
        [
            ("mobilenetv3_small_100", 67.7, 2.0, 2.5),
            ("mobilenetv3_large_100", 74.0, 3.0, 5.5),
            ("resnet18", 69.8, 5.0, 11.7),
            ("efficientnet_b0", 77.7, 6.0, 5.3),
            ("resnet50", 76.1, 20.0, 25.6),
        ]
    )
    table = selection.scenario_table(frame, "CPU (x86_64)", timed=TIMED).set_index("scenario (seed 5.1)")
    mobile = table.loc["mobile / edge devices"]  # a mobile claim: an x86 CPU is a proxy that decides nothing
    assert mobile["verdict"] == "not decided here" and "would read 'agrees'" in mobile["measured"]
    assert "phone or an edge board" in mobile["would decide it"]
    # The seed names no device but another task (the models as detection or segmentation backbones): a classifier
    # timed at 224 px is a proxy for it that decides nothing, whatever the device.
    realtime = table.loc["real-time detection / segmentation"]
    assert realtime["device the seed names"] == "none"
    assert realtime["verdict"] == "not decided here", realtime["verdict"]
    measured = realtime["measured"]
    assert measured.startswith(f"on CPU (x86_64), {TIMED}, image classification: a proxy for backbones of "
                               "detection or segmentation networks"), measured  # each latency says how it was timed
    assert "would read 'agrees for mobilenetv3_small_100, mobilenetv3_large_100; disagrees for resnet18'" in measured
    assert "beaten by mobilenetv3_large_100" in measured and "not measured: resnet34" in measured
    assert "COCO mAP" in realtime["would decide it"] and "a threshold of this page's" in realtime["criterion"]
    server = table.loc["server deployment"]  # a GPU claim: a CPU measurement does not decide it
    assert server["verdict"] == "not decided here" and "would read 'disagrees'" in server["measured"]
    errata = {e.claim.split(",")[0]: e for e in selection.scenario_errata(table.reset_index())}
    assert (
        errata["for server deployment"].outcome is Outcome.UNDECIDED and "GPU" in errata["for server deployment"].decide
    )
    assert errata["for mobile / edge devices"].outcome is Outcome.UNDECIDED
    realtime_rows = [e for e in selection.scenario_errata(table.reset_index()) if "real-time" in e.claim]
    assert [e.outcome for e in realtime_rows] == [Outcome.UNDECIDED] and "COCO mAP" in realtime_rows[0].decide
    assert all(e.outcome in (Outcome.HOLDS, Outcome.FAILS, Outcome.UNDECIDED)
               for e in selection.scenario_errata(table.reset_index()))
    distillation = errata["for compression / distillation"]  # no outcome outside the four
    assert distillation.outcome is Outcome.UNDECIDED and "distillation runs" in distillation.decide
    assert distillation.measured == table.loc["compression / distillation", "criterion"]  # nothing measured beside
    assert table.loc["high accuracy", "verdict"] == "not measured" and "for high accuracy" not in errata
    # on a GPU the GPU scenario is decided; the mobile one still is not
    on_gpu = selection.scenario_table(frame, "NVIDIA H100", timed=TIMED).set_index("scenario (seed 5.1)")
    assert on_gpu.loc["server deployment", "verdict"] == "disagrees"
    assert on_gpu.loc["mobile / edge devices", "verdict"] == "not decided here"
    # high accuracy is decided on every model with a top-1, timed or not
    accuracy = pd.DataFrame(
        {
            "model": ["efficientnet_b7", "efficientnet_b6", "efficientnet_b5", "resnet152", "resnet50"],
            "top-1 (%)": [84.1, 84.0, 83.4, 78.3, 76.1],
        }
    )
    high_table = selection.scenario_table(frame, "CPU", accuracy, timed=TIMED)
    high = high_table.set_index("scenario (seed 5.1)").loc["high accuracy"]
    assert high["verdict"] == "agrees for efficientnet_b5, efficientnet_b7; disagrees for resnet152"
    assert "resnet152: 78.3%" in high["measured"] and "resnet152" not in high["measured, agreeing"]
    # a scenario whose models do not all agree is two claims, one per group, each with its group's evidence
    high_rows = [e for e in selection.scenario_errata(high_table) if "high accuracy" in e.claim]
    assert [(e.claim.split(", use ")[1].split(" (")[0], e.outcome) for e in high_rows] == [
        ("efficientnet_b5, efficientnet_b7", Outcome.HOLDS), ("resnet152", Outcome.FAILS)]
    assert "resnet152" not in high_rows[0].measured and "resnet152: 78.3%" in high_rows[1].measured


def test_insight_4_follows_the_device_rule():
    """Seed 3.2's key insight 4 is a mobile-device claim: decided like the mobile scenario, on its own evidence."""
    frame = _frame([("efficientnet_b0", 77.7, 6.0, 5.3), ("resnet18", 69.8, 5.0, 11.7), ("resnet50", 76.1, 20.0, 25.6)])
    row = selection.insight_4_erratum(frame, "CPU (x86_64)")
    assert row.outcome is Outcome.UNDECIDED and "1 of 2 pairs" in row.measured and "proxy" in row.measured
    assert "mobilenetv3" not in row.measured  # 5.1's other recommendation is no evidence about this claim


def test_efficiency_table_keeps_seed_arithmetic():
    table = selection.efficiency_table().set_index("model")
    assert table.loc["MobileNetV3-S", "seed acc / MParam"] == round(56 / 2.5, 2)
    assert table.loc["MobileNetV3-S", "seed rank"] == 1
    assert table.loc["ResNet-50", "top-1 (%), torchvision V1"] == 76.13
    assert len(table) == len(SEED_MODELS)
    assert table.loc["ResNet-50", "params (M), counted"] == pytest.approx(25.56, abs=0.01)
    # the ratio divides by the exact count (2,542,856), not by its rounded display
    assert table.loc["MobileNetV3-S", "acc / MParam, recomputed"] == round(67.668 / 2.542856, 2)


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
    assert table.loc["resnet101", "paper top-1 (%, protocol)"] == "78.25 (10-crop)"
    assert table.loc["mobilenetv3_small_100", "top-1 matches"] == "neither"
    rows = {e.claim: e for e in selection.figures_errata(table.reset_index())}
    wrong = rows["MobileNetV3-S and MobileNetV3-L top-1 is 56%"]  # one defect, one row
    assert not wrong.holds and "possibly" in wrong.note and "MAdds" in wrong.note


def test_rounding_rule_reads_the_source_against_the_figure():
    """The seed's 12.2M (B3) cannot come from the paper's 12M (which stands for 11.5-12.5M): it matches the count
    only. With the arguments swapped, 12.2 would 'round to' 12 and the paper would wrongly match."""
    from repro.seed import rounds_to

    assert not rounds_to(12, 12.2) and rounds_to(12.2, 12)
    table = selection.figures_table(Options(models=("efficientnet_b3",))).set_index("hand-written")
    assert table.loc["efficientnet_b3", "params match"] == "count"


def test_top1_tables_share_one_rule():
    """Seed 3.2's reference_acc and 5.2's table mix the same kinds of figure: both get the same two rows,
    each figure matching a source (holds) and the table comparing like for like (does not hold)."""
    from repro.report import efficientnet

    five = selection.figures_errata(selection.figures_table(Options(models=("efficientnet_b0", "resnet50"))))
    three = efficientnet.comparison_errata(efficientnet.comparison_table(["efficientnet_b0", "resnet50"]))
    for rows in (five, three):
        each = next(e for e in rows if e.claim.endswith("each match a source"))
        kind = next(e for e in rows if "like for like" in e.claim)
        assert each.outcome is Outcome.HOLDS and kind.outcome is Outcome.FAILS
        assert "EfficientNet paper Table 2, single-crop lists ResNet-50 76.0%" in kind.note


def test_insight_3_against_each_architectures_best_weights():
    """Decided on the EfficientNet paper's like-for-like Table 2 and on each architecture's best torchvision
    weights; torchvision's V1 weights (different recipes per family) beside it, their recipes named."""
    row = selection.insight_3_erratum(Options(models=("resnet50", "efficientnet_b0")))
    assert "ResNet-50 80.86% (IMAGENET1K_V2" in row.measured  # above B0's 77.69% with its newer recipe
    assert "ResNet-152 77.8% (60M)" in row.measured and "EfficientNet-B0 77.1% (5.3M)" in row.measured
    assert "ResNet-50 76.0% (26M)" in row.measured  # the paper's like-for-like table
    assert "stays below EfficientNet-B0 77.69%" in row.note  # torchvision's V1 weights: recipes differ
    assert "ported from timm" in row.note and "torchvision's original reference recipe" in row.note
    assert "papers' recipes" not in row.note + row.measured
    assert row.outcome is Outcome.HOLDS  # both sources agree


def test_accuracy_per_parameter_note_says_what_the_metric_rewards():
    """The note reads the ranking: the model ranked first is named with what makes it first (the smallest, the
    least accurate), and nothing is claimed where it is neither."""
    table = pd.DataFrame({"model": ["small", "big", "mid"], "params (M), counted": [2.0, 20.0, 5.0],
                          "top-1 (%), torchvision V1": [60.0, 80.0, 70.0],
                          "acc / MParam, recomputed": [30.0, 4.0, 14.0]})
    note = selection._metric_note(table)
    assert "rank 1 (recomputed) is small, 2.00M parameters, 60.00%, the smallest and the least accurate of these 3" \
        in note
    table.loc[0, "top-1 (%), torchvision V1"] = 75.0  # accurate as well as small
    assert ", the smallest of these 3." in selection._metric_note(table)
