"""MobileNetV1/V3: widths, options, porting rules, the seed's MobileNetV1, and the depthwise-separable cost formula."""

import dataclasses

import pytest
import torch
from torch import nn

import reference
import repro
from repro.equivalence import check_reference, compare_ported, randomize_
from repro.flops import count_macs, separable_conv_macs
from repro.layers import make_divisible
from repro.models.mobilenet import LARGE, SMALL, InvertedResidual, MobileNetV3
from repro.porting import SAME_NAMES, PortRules, port_weights
from repro.ports.mobilenet import TORCHVISION_MOBILENETV3, timm_positions
from repro.registry import REFERENCES, _REFERENCES
from repro.report import Options
from repro.report.densenet_mobilenet import build_depthwise, densenet_mobilenet_errata, separable_cost, separable_layers
from repro.seed.code import SeedMobileNetV1


@pytest.mark.parametrize(
    "kernel_size, m, n, size", [(3, 64, 64, 14), (3, 32, 64, 112), (5, 96, 40, 14), (3, 512, 1024, 7), (7, 8, 24, 9)]
)
def test_separable_formula_equals_counted_macs(kernel_size, m, n, size):
    standard, separable = separable_layers(kernel_size, m, n)
    formula_standard, formula_separable = separable_conv_macs(kernel_size, m, n, size)
    assert formula_standard == count_macs(standard, (1, m, size, size))
    assert formula_separable == count_macs(separable, (1, m, size, size))
    # The paper's reduction: separable / standard = 1/N + 1/D_K^2.
    assert formula_separable / formula_standard == pytest.approx(1 / n + 1 / kernel_size**2)


def test_separable_cost_row():
    row = separable_cost(3, 16, 16, 8)
    assert row["standard MACs (formula)"] == row["standard MACs (counted)"] == 9 * 16 * 16 * 64
    assert row["separable MACs (counted)"] == 9 * 16 * 64 + 16 * 16 * 64
    assert row["standard latency (ms)"] > 0 and row["separable latency (ms)"] > 0
    # the rate achieved: MACs over the median latency
    assert row["standard GMAC/s"] == pytest.approx(
        row["standard MACs (formula)"] / row["standard latency (ms)"] / 1e6, rel=0.01, abs=0.1)


def test_rates_note_explains_a_speed_up_above_the_mac_ratio():
    """A row whose speed-up exceeds its MAC ratio is named with its standard layer's rate against the others'."""
    import pandas as pd

    from repro.report.densenet_mobilenet import _rates_note

    frame = pd.DataFrame({"layer": ["a", "b", "c"], "measured speed-up": [3.0, 4.0, 20.0],
                          "MAC ratio (seed's speed-up)": [8.0, 8.0, 9.0], "standard GMAC/s": [60.0, 70.0, 15.0],
                          "separable GMAC/s": [8.0, 9.0, 37.0]})
    note = _rates_note(frame)
    assert "exceeds the MAC ratio (c), its standard convolution runs at 15.0 GMAC/s against 60.0 GMAC/s" in note
    assert _rates_note(frame.iloc[:2]) == ""  # no speed-up above its MAC ratio: nothing to explain


def test_v1_widths_and_relu6():
    v1 = repro.create_model("mobilenetv1_125")
    assert v1.features[0].conv.out_channels == 40 and v1.num_features == 1280
    assert isinstance(v1.features[3].pointwise.act, nn.ReLU6)
    assert [b.depthwise.conv.stride[0] for b in list(v1.features)[1:]] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


def test_seed_mobilenetv1_is_timm_mobilenetv1_100_less_one_block():
    """The seed's MobileNetV1 (ReLU6, as TF-Slim and timm) has four 512 -> 512 blocks where timm (and the paper)
    have five: with one removed from ours, it computes the same function after a weight copy."""
    seed, ours = randomize_(SeedMobileNetV1(), (2, 3, 64, 64)), repro.create_model("mobilenetv1_100")
    wide = [i for i, block in enumerate(ours.features)
            if any(isinstance(m, torch.nn.Conv2d) and m.in_channels == m.out_channels == 512 and m.kernel_size == (1, 1)
                   for m in block.modules())]
    assert len(wide) == 5
    del ours.features[wide[-1]]
    with torch.no_grad():
        for (sk, sv), (dk, dv) in zip(seed.state_dict().items(), ours.state_dict().items(), strict=True):
            assert sv.shape == dv.shape, (sk, dk)
            dv.copy_(sv)
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(seed.eval()(x), ours.eval()(x))


def test_v3_widths_follow_one_rounding_rule():
    small = repro.create_model("mobilenetv3_small_050")
    assert small.features[0].conv.out_channels == 16  # below 0.75 the stem stays at 16 (timm)
    for model in (small, repro.create_model("mobilenetv3_large_100")):
        for block in model.features:
            if isinstance(block, InvertedResidual) and block.se is not None:
                mid = block.depthwise.conv.out_channels
                assert block.se.conv_reduce.out_channels == make_divisible(mid / 4) == make_divisible(mid // 4)
    large = repro.create_model("mobilenetv3_large_100")
    mids = [b.depthwise.conv.out_channels for b in large.features if isinstance(b, InvertedResidual)]
    assert mids == [row.exp for row in LARGE.blocks]  # at width 1.0 the paper's "exp size" column exactly
    assert large.features[1].expand is None and large.features[1].use_residual
    assert repro.create_model("mobilenetv3_small_100").features[1].expand is None


def test_v3_heads_have_equal_parameters_and_close_outputs():
    conv = repro.create_model("mobilenetv3_small_100", head="conv", drop_rate=0.0).eval()
    linear = repro.create_model("mobilenetv3_small_100", head="linear", drop_rate=0.0).eval()
    report = port_weights(conv.state_dict(), linear, rules=PortRules("identity", "", "", SAME_NAMES))
    assert [p.target_key for p in report.transformed] == ["head.weight"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), linear(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="head must be"):
        MobileNetV3("small", head="mlp")
    with pytest.raises(ValueError, match="arch must be one of"):
        MobileNetV3("medium")


def test_drop_path_only_in_training():
    model = repro.create_model("mobilenetv3_small_100", drop_path_rate=0.5, drop_rate=0.0)
    ref = repro.create_model("mobilenetv3_small_100", drop_rate=0.0)
    ref.load_state_dict(model.state_dict())
    rates = [b.drop_path.drop_prob for b in model.features if isinstance(b, InvertedResidual)]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] < 0.5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref.eval()(x))


def test_timm_stage_layout():
    assert timm_positions([64, 128, 128, 256, 256, 512, 512]) == [
        (0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)
    ]
    timm_small = reference.create("timm:mobilenetv3_small_100")
    stage_lengths = [len(stage) for stage in timm_small.blocks]
    assert stage_lengths == [1, 2, 3, 2, 3, 1]
    assert [pos for pos in timm_positions([r.out for r in SMALL.blocks] + [-1])][-1] == (5, 0)


def test_one_torchvision_rule_set_ports_small_and_large():
    for name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        src = reference.create(f"torchvision:{name}")
        dst = repro.create_model(REFERENCES[f"torchvision:{name}"].model, head="linear")
        report = port_weights(src, dst, rules=TORCHVISION_MOBILENETV3)
        assert len(report.pairs) == len(src.state_dict()) == len(dst.state_dict())


def _check_with(spec, **model_kwargs):
    entry = REFERENCES[spec]
    _REFERENCES[spec] = dataclasses.replace(entry, model_kwargs={**entry.model_kwargs, **model_kwargs})
    try:
        return check_reference(spec, resolution=64)
    finally:
        _REFERENCES[spec] = entry


def test_harness_catches_torchvision_bn_settings_and_head():
    assert not _check_with("torchvision:mobilenet_v3_small").failures()
    assert "eval output" in " ".join(_check_with("torchvision:mobilenet_v3_small", bn_eps=1e-5).failures())
    momentum = _check_with("torchvision:mobilenet_v3_small", bn_momentum=0.1)
    assert momentum.eval_output.bit_exact and momentum.failures()  # only the running statistics show it
    assert not _check_with("torchvision:mobilenet_v3_small", head="conv").bit_exact


def test_harness_catches_a_sigmoid_gate():
    spec, size = "timm:mobilenetv3_small_100", (2, 3, 64, 64)
    ref = randomize_(reference.create(spec, drop_rate=0.0), size)
    ours = repro.create_model(REFERENCES[spec].model, **REFERENCES[spec].model_kwargs)
    report = port_weights(ref, ours, REFERENCES[spec].rules)
    assert not compare_ported(ref, ours, report.target_to_source, size).failures()
    for block in ours.features:
        if isinstance(block, InvertedResidual) and block.se is not None:
            block.se.gate = nn.Sigmoid()  # the original SE gate instead of MobileNetV3's hard-sigmoid
    assert "eval output" in " ".join(compare_ported(ref, ours, report.target_to_source, size).failures())


def test_mobilenet_errata_are_measured():
    options = Options(models=("mobilenetv1_100",))
    rows = densenet_mobilenet_errata(options) + build_depthwise(options).errata
    by_start = {r.claim.split(" (")[0].split(":")[0]: r for r in rows}
    assert all(r.section == "4.2" for r in rows) and len(rows) == 4
    assert by_start["a 3x3 convolution, M=N=64, D_F=14"].holds  # the formula is right, and counted
    flops = by_start["those counts are FLOPs"]  # holds only as multiply-adds, which the claim names
    assert flops.holds and "counting a multiply-add as one FLOP" in flops.claim
    assert "7,225,344 and 915,712, the seed's figures" in flops.measured  # multiply-adds, as the seed prints them
    assert "14,450,688 and 1,831,424 (torch.utils.flop_counter, 2 per multiply-add)" in flops.measured
    v1 = by_start["`MobileNetV1` is MobileNetV1"]  # the seed's has 12 blocks, four of them 512 -> 512
    assert not v1.holds and "3,963,176" in v1.measured and "4,231,976" in v1.measured and "12 depthwise" in v1.measured
    speed = by_start["depthwise-separable convolution is 7.89x faster"]  # judged on the seed's own layer
    assert "3x3, 64 -> 64 channels, 14x14" in speed.measured and "rounds" in speed.measured


def test_seed_table_claims_on_mobilenetv3_are_computed():
    """Seed 5.2's MobileNetV3 rows are checked by the shared seed-table errata once the models are registered."""
    from repro.report import selection

    table = selection.figures_table(Options(models=("mobilenetv3_small_100", "mobilenetv3_large_100")))
    rows = {e.claim: e for e in selection.figures_errata(table)}
    assert rows["the parameter counts of the 2 models"].holds  # 2.5M, 5.4M: MobileNetV3 paper Table 3
    assert "5.48M" in rows["the parameter counts of the 2 models"].note  # the architecture counts 5,483,032
    top1 = rows["MobileNetV3-S and MobileNetV3-L top-1 is 56%"]  # one defect, one row, both instances in it
    assert not top1.holds and "74.04%" in top1.measured and "75.2%" in top1.measured and "67.4%" in top1.measured


def test_intro_names_the_settings_each_reference_needs():
    """The page does not say 'proven': it names the models built with other settings per reference."""
    from repro.report.densenet_mobilenet import per_reference_settings

    assert per_reference_settings(["mobilenetv3_small_100", "mobilenetv1_100", "mobilenetv3_large_100"]) == (
        " (they differ for mobilenetv3_large_100 and mobilenetv3_small_100: bn_eps, bn_momentum, head)"
    )
    assert per_reference_settings(["densenet121", "mobilenetv1_100"]) == ""
