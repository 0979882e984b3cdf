"""ResNet variants of seed sections 2.3 and 7: pre-activation (v2), SE-ResNet, the original SENet
layout, ResNeXt and wide ResNet. Equivalence with every reference runs in test_equivalence.py;
here: the structure each option builds, that each option is visible to the equivalence check,
mismatched ports, seed-style (Linear) SE weights, and the report page."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import reference
import repro
from repro.equivalence import compare_ported, randomize_
from repro.models import resnet
from repro.models.resnet import PreActBottleneck, se_reduced_width
from repro.porting import PortError, port_weights
from repro.ports.resnet import TIMM_RESNET
from repro.registry import REFERENCES
from repro.report import Options
from repro.report import Outcome
from repro.report.resnet_variants import (
    SEED_SE_BLOCK_RULES,
    build as resnet_variants_page,
    meta_model,
    params_and_macs as cost,
    seed_variant_blocks,
)
from repro.seed.code import SeedResNeXtBlock, SeedSEResidualBlock

from helpers import assert_state_unchanged, state_snapshot

DEPTHS = (18, 34, 50, 101, 152)
VARIANT_MODELS = (
    [f"resnetv2_{d}" for d in DEPTHS] + [f"seresnet{d}" for d in DEPTHS] + [f"legacy_seresnet{d}" for d in DEPTHS]
    + ["resnext50_32x4d", "resnext101_32x4d", "resnext101_32x8d", "resnext101_64x4d"]
    + ["wide_resnet50_2", "wide_resnet101_2"]
)
VARIANT_REFERENCES = (
    [f"timm:{m}" for m in VARIANT_MODELS if not m.startswith("wide")]
    + [f"torchvision:{m}" for m in (
        "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"
    )]
)


def test_every_variant_and_reference_is_registered_and_expected_bit_identical():
    assert set(VARIANT_MODELS) <= set(repro.list_models())
    assert len(VARIANT_REFERENCES) == 24
    for spec in VARIANT_REFERENCES:
        assert spec in REFERENCES, spec
        assert REFERENCES[spec].expect_bit_exact, spec
        assert REFERENCES[spec].model == spec.split(":")[1]


def test_variants_are_options_of_one_class():
    names = ("resnetv2_18", "seresnet18", "legacy_seresnet50", "resnext50_32x4d")
    assert {type(repro.create_model(n)).__name__ for n in names} == {"ResNet"}


# ---- what each option builds -----------------------------------------------------------------


def test_preact_resnet_structure():
    model = repro.create_model("resnetv2_50")
    assert not hasattr(model, "bn1") and isinstance(model.final_bn, nn.BatchNorm2d)
    block = model.layer2[0]
    assert isinstance(block, PreActBottleneck)
    assert isinstance(block.downsample, nn.Conv2d)  # no BN on a pre-activated projection
    assert block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1)
    assert isinstance(model.fc, nn.Conv2d) and model.fc.weight.shape == (1000, 2048, 1, 1)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    linear_head = repro.create_model("resnetv2_18", conv_head=False)
    assert isinstance(linear_head.fc, nn.Linear)


def test_se_widths_follow_each_reference():
    timm_style, legacy = repro.create_model("seresnet18"), repro.create_model("legacy_seresnet18")
    assert timm_style.layer1[0].se.conv_reduce.out_channels == 8  # 64 / 16 = 4, raised to the divisor 8
    assert legacy.layer1[0].se.conv_reduce.out_channels == 4  # 64 // 16, the original SENet and the seed
    assert timm_style.layer4[0].se.conv_reduce.out_channels == legacy.layer4[0].se.conv_reduce.out_channels == 32
    assert [se_reduced_width(c, 16, None) for c in (64, 256, 2048)] == [4, 16, 128]
    assert [se_reduced_width(c) for c in (64, 256, 2048)] == [8, 16, 128]


def test_stride_placement():
    v15, caffe = meta_model("seresnet50"), meta_model("legacy_seresnet50")
    assert (v15.layer2[0].conv1.stride, v15.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    assert (caffe.layer2[0].conv1.stride, caffe.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert caffe.maxpool.ceil_mode and caffe.maxpool.padding == 0
    assert cost("legacy_seresnet50")[1] < cost("seresnet50")[1]  # the 1x1 runs on the strided map


def test_resnext_and_wide_widths():
    for name, groups, width in (("resnext50_32x4d", 32, 128), ("resnext101_32x8d", 32, 256),
                                ("resnext101_64x4d", 64, 256), ("wide_resnet50_2", 1, 128)):
        conv = meta_model(name).layer1[0].conv2
        assert (conv.groups, conv.out_channels) == (groups, width), name


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("resnetv2_50", dict(se_reduction=16), "does not support se_layer"),
        ("resnet18", dict(stride_in_1x1=True), "no 1x1 convolution"),
        ("resnet50", dict(relu_before_se=True), "legacy SE basic block only"),
        ("resnet18", dict(relu_before_se=True), "needs an SE module"),
        ("resnet18", dict(groups=32, base_width=4), "only groups=1"),
        ("resnet18", dict(drop_rate=1.0), "drop_rate"),
    ],
)
def test_impossible_option_combinations_raise(name, options, message):
    with pytest.raises(ValueError, match=message):
        repro.create_model(name, **options)


def test_zero_init_residual_for_every_block_kind():
    preact = repro.create_model("resnetv2_50", zero_init_residual=True)
    assert all((b.conv3.weight == 0).all() for b in preact.layer3)
    se = repro.create_model("seresnet18", zero_init_residual=True)
    assert all((b.bn2.weight == 0).all() for b in se.layer2)


def test_legacy_dropout_is_on_by_default_like_the_reference():
    model = repro.create_model("legacy_seresnet18")
    assert model.drop_rate == reference.create("timm:legacy_seresnet18").drop_rate == 0.2
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # dropout is train-only


# ---- each option is visible to the equivalence check ----------------------------------------


@pytest.mark.parametrize(
    "spec, wrong",
    [
        ("timm:legacy_seresnet50", dict(stride_in_1x1=False)),
        ("timm:legacy_seresnet18", dict(caffe_maxpool=False)),
        ("timm:legacy_seresnet18", dict(relu_before_se=False)),
    ],
)
def test_each_legacy_option_changes_the_output(spec, wrong):
    """Same tensor shapes either way (porting cannot see these options): only outputs can."""
    size = (2, 3, 64, 64)
    ref = reference.create(spec, drop_rate=0.0)
    randomize_(ref, size)
    name = REFERENCES[spec].model
    for options, equal in (({}, True), (wrong, False)):
        ours = repro.create_model(name, drop_rate=0.0, **options)
        report = port_weights(ref, ours)
        result = compare_ported(ref, ours, report.target_to_source, size, train=False)
        assert result.eval_output.ok(1e-5) is equal, (options, result.eval_output)


def test_preact_shortcut_must_take_the_preactivation():
    size = (2, 3, 64, 64)
    ref = reference.create("timm:resnetv2_18")
    randomize_(ref, size)
    ours = repro.create_model("resnetv2_18")
    report = port_weights(ref, ours)
    block = ours.layer2[0]
    # The seed's PreActResidualBlock: the projection reads the raw input instead.
    block.forward = lambda x: (
        block.conv2(block.relu(block.bn2(block.conv1(block.relu(block.bn1(x)))))) + block.downsample(x)
    )
    assert not compare_ported(ref, ours, report.target_to_source, size, train=False).eval_output.ok(1e-5)


# ---- mismatched ports raise and change nothing -----------------------------------------------


@pytest.mark.parametrize(
    "spec, target, message",
    [
        ("timm:seresnet18", "resnet18", r"layer1\.0\.se\.conv_reduce\.weight .*no such tensor in target"),
        ("timm:resnet50", "seresnet50", r"target tensors nothing maps to:\s+layer1\.0\.se\.conv_reduce"),
        ("timm:resnext50_32x4d", "resnet50",
         r"layer1\.0\.conv1\.weight \[128, 64, 1, 1\] -> layer1\.0\.conv1\.weight \[64, 64, 1, 1\]"),
        ("torchvision:wide_resnet50_2", "resnext50_32x4d", r"shape mismatches"),
        ("timm:legacy_seresnet18", "seresnet18",
         r"fc1\.weight \[4, 64, 1, 1\] -> layer1\.0\.se\.conv_reduce\.weight \[8, 64, 1, 1\]"),
        ("timm:resnetv2_50", "resnet50", r"final_bn\.weight .*no such tensor in target"),
        ("timm:resnet50", "resnetv2_50", r"\n\s+bn1\.weight \[64\] -> bn1\.weight \(no such tensor in target\)"),
    ],
)
def test_mismatched_variant_port_raises_and_changes_nothing(spec, target, message):
    src = reference.create(spec)
    dst = repro.create_model(target)
    before = state_snapshot(dst)
    rules = REFERENCES[spec].rules
    with pytest.raises(PortError, match=message) as err:
        port_weights(src, dst, rules=rules)
    assert "the target is unchanged" in str(err.value)
    assert_state_unchanged(dst, before)


# ---- seed-style SE weights (nn.Linear) port into the 1x1-conv SE ---------------------------


def test_seed_linear_se_block_ports_into_conv_se():
    seed = SeedSEResidualBlock(64, 128, stride=2)
    randomize_(seed, (2, 64, 32, 32))
    ours = repro.create_model("seresnet18").layer2[0]  # 64 -> 128, stride 2, SE width 8 = 128 // 16
    report = port_weights(seed, ours, rules=SEED_SE_BLOCK_RULES)
    assert sorted(p.target_key for p in report.transformed) == ["se.conv_expand.weight", "se.conv_reduce.weight"]
    assert all("Linear -> 1x1 conv" in p.transform for p in report.transformed)
    assert torch.equal(ours.se.conv_reduce.weight.flatten(1), seed.se[2].weight)
    x = torch.randn(2, 64, 32, 32)
    seed.eval()
    ours.eval()
    with torch.no_grad():
        expected, actual = seed(x), ours(x)
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_linear_form_se_checkpoint_ports_with_the_registered_rules():
    """A whole SE-ResNet checkpoint whose SE layers are Linear ([out, in]) loads like the conv form."""
    src = reference.create("timm:seresnet18")
    linear_form = {
        k: (v.flatten(1) if ".se.fc" in k and k.endswith("weight") else v) for k, v in src.state_dict().items()
    }
    assert linear_form["layer1.0.se.fc1.weight"].shape == (8, 64)
    ours = repro.create_model("seresnet18")
    report = port_weights(linear_form, ours, rules=TIMM_RESNET)
    assert len(report.transformed) == 2 * 8  # fc1 and fc2 of 8 blocks
    source_to_target = {p.source_key: p.target_key for p in report.pairs}
    for key, value in src.state_dict().items():
        assert torch.equal(ours.state_dict()[source_to_target[key]], value)


# ---- the seed's blocks and the report --------------------------------------------------------


def test_seed_resnext_block_forward_returns_none():
    assert SeedResNeXtBlock(256, 64)(torch.randn(1, 256, 8, 8)) is None


def test_seed_errata():
    rows = {e.claim: e for e in seed_variant_blocks(Options())}
    assert len(rows) == 7
    outcomes = [e.outcome for e in rows.values()]
    assert outcomes == [Outcome.HOLDS, Outcome.FAILS, Outcome.HOLDS, Outcome.HOLDS, Outcome.UNDECIDED,
                        Outcome.HOLDS, Outcome.FAILS], list(rows)
    # its layers are ResNeXt's (holds); the seed elides the forward, which returns None (does not hold)
    layers, forward = (e for e in rows.values() if "ResNeXtBlock" in e.claim)
    assert layers.holds and "names and shapes of resnext50_32x4d's layer1.1" in layers.measured
    assert not forward.holds and "标准残差块逻辑" in forward.measured and "not runnable as printed" in forward.measured
    stability = next(e for e in rows.values() if "training stability" in e.claim)  # not measured: says what would
    assert "training runs" in stability.decide
    assert "7.61% (original unit) -> 4.92% (pre-activation)" in stability.measured and "Figure 1" in stability.measured
    identity, projection = (e for e in rows.values() if "PreActResidualBlock" in e.claim)
    assert identity.holds and "max rel output diff 0" in identity.measured  # identity-shortcut blocks agree exactly
    assert not projection.holds and "projects the raw x" in projection.measured
    assert not seed_variant_blocks(Options(models=("resnet18",)))


def test_variants_page_measures_cost_against_plain_resnet():
    page = resnet_variants_page(Options(models=("seresnet50", "resnext50_32x4d", "resnetv2_18")))
    frame = page.tables[0].frame.set_index("model")
    assert list(frame.index) == ["resnetv2_18", "seresnet50", "resnext50_32x4d"]
    se = frame.loc["seresnet50"]
    assert se["params"] == 28_088_024 and se["params (baseline)"] == 25_557_032
    assert 1.09 < se["params ratio"] < 1.11 and 1.0 < se["GMACs ratio"] < 1.001
    assert frame.loc["resnext50_32x4d", "params ratio"] < 1 < frame.loc["resnext50_32x4d", "GMACs ratio"]
    assert frame.loc["resnetv2_18", "GMACs ratio"] == 1.0
    # every cause of v2's parameter difference, read off the models, adds up to the difference itself
    explained = frame.loc["resnetv2_18", "measured"]
    assert explained.startswith("-1,792 parameters") and "in-block BatchNorms -896" in explained
    assert "together -1,792" in explained and "layer2.0, layer3.0, layer4.0" in explained
    assert "cardinality" in frame.loc["resnext50_32x4d", "seed's claim"]
    assert "32 groups x 4 channels" in frame.loc["resnext50_32x4d", "measured"]
    assert resnet_variants_page(Options(models=("resnet18",))) is None


# ---- random configurations against timm, odd resolutions included --------------------------

PROPERTY_SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
layer_counts = st.lists(st.integers(min_value=1, max_value=2), min_size=4, max_size=4)
resolutions = st.integers(min_value=33, max_value=64)  # odd sizes: Caffe's ceil-mode pooling must agree


def assert_ported_equivalent(ref, ours, resolution):
    size = (2, 3, resolution, resolution)
    randomize_(ref, size)
    report = port_weights(ref, ours)  # the registered rules for this pair of types
    result = compare_ported(ref, ours, report.target_to_source, size)
    result.assert_equivalent(rtol=1e-5)
    assert result.bit_exact


@PROPERTY_SETTINGS
@given(layers=layer_counts, bottleneck=st.booleans(), se=st.booleans(),
       width=st.sampled_from([(1, 64), (2, 16), (4, 4), (32, 4), (1, 128)]), resolution=resolutions)
def test_se_resnext_configurations(layers, bottleneck, se, width, resolution):
    from timm.models import resnet as timm_resnet

    groups, base_width = width if bottleneck else (1, 64)
    ref = timm_resnet.ResNet(block=timm_resnet.Bottleneck if bottleneck else timm_resnet.BasicBlock, layers=layers,
                             cardinality=groups, base_width=base_width,
                             block_args=dict(attn_layer="se") if se else None)
    block = resnet.Bottleneck if bottleneck else resnet.BasicBlock
    ours = resnet.ResNet(block, layers, groups=groups, base_width=base_width, se_reduction=16 if se else None)
    assert_ported_equivalent(ref, ours, resolution)


@PROPERTY_SETTINGS
@given(layers=layer_counts, bottleneck=st.booleans(), resolution=resolutions)
def test_preact_configurations(layers, bottleneck, resolution):
    from timm.layers import BatchNormAct2d, create_conv2d
    from timm.models import resnetv2 as timm_resnetv2

    shape = dict(basic=not bottleneck, bottle_ratio=0.25 if bottleneck else 1.0,
                 channels=(256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512))
    ref = timm_resnetv2.ResNetV2(layers, conv_layer=create_conv2d, norm_layer=BatchNormAct2d, **shape)
    block = resnet.PreActBottleneck if bottleneck else resnet.PreActBasicBlock
    assert_ported_equivalent(ref, resnet.ResNet(block, layers, conv_head=True), resolution)


@PROPERTY_SETTINGS
@given(layers=layer_counts, bottleneck=st.booleans(), resolution=resolutions)
def test_legacy_senet_configurations(layers, bottleneck, resolution):
    from timm.models import senet as timm_senet

    block = timm_senet.SEResNetBottleneck if bottleneck else timm_senet.SEResNetBlock
    ref = timm_senet.SENet(block, layers, groups=1, reduction=16, drop_rate=0.0)
    legacy = dict(stride_in_1x1=True) if bottleneck else dict(relu_before_se=True)
    ours = resnet.ResNet(resnet.Bottleneck if bottleneck else resnet.BasicBlock, layers, se_reduction=16,
                         se_round_to=None, caffe_maxpool=True, **legacy)
    assert_ported_equivalent(ref, ours, resolution)


def test_table_1_reading():
    from repro.report.resnet import table_1_reading

    assert table_1_reading(7.570, 7.6) == "the count rounded"
    assert table_1_reading(3.858, 3.8) == "the count truncated (rounded: 3.9)"
    assert table_1_reading(3.95, 3.7).startswith("neither")
