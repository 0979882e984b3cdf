"""repro.fuse: BatchNorm folded into convolutions, outputs unchanged, original untouched."""

import copy

import pytest
import torch
from torch import nn

import reference
import repro
from repro.equivalence import Diff, randomize_
from repro.fuse import fold_in_place
from repro.registry import MODELS

from helpers import assert_state_unchanged, state_snapshot

SIZE = (2, 3, 64, 64)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_model_matches(name):
    """Folding is exact algebra, so it is checked in float64 on randomized weights and statistics (a
    wrong mean, bias or eps would show). In float32 the fused model is checked against the float64
    result, as built (default initialization): no further from it than 1e-5 relative, or than 4x the
    unfused float32 model's own error where that is larger; skipped where the unfused float32 model
    is itself more than 1e-4 from float64 (the 152-layer nets at default init amplify rounding).
    Randomized statistics are not used for the float32 check: near-zero running variances make the
    folded weights large and their cancellation ill-conditioned, which says nothing about fusion."""
    x = torch.randn(SIZE)
    model = repro.create_model(name).eval()
    fused = repro.fuse(model)
    assert fused.folded_batchnorms > 0
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        truth = model64(x.double())
        unfused_error = Diff.of(model(x).double(), truth).max_rel
        fused_error = Diff.of(fused(x).double(), truth).max_rel
    if unfused_error < 1e-4:  # else float32 itself is lost in this net at default init (ResNet-152 depths)
        assert fused_error <= max(1e-5, 4 * unfused_error), (fused_error, unfused_error)

    model = randomize_(repro.create_model(name), SIZE).eval()
    with torch.no_grad():  # keep statistics random but away from 0: a tiny variance makes folded
        for m in model.modules():  # weights huge and their cancellation ill-conditioned, which is no test of folding
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.clamp_(min=0.5)
    before = state_snapshot(model)
    model64 = copy.deepcopy(model).double()
    fused64 = repro.fuse(model64)
    assert_state_unchanged(model64, {k: v.double() if v.is_floating_point() else v for k, v in before.items()})
    with torch.no_grad():
        assert Diff.of(fused64(x.double()), model64(x.double())).max_rel < 1e-9  # float64 rounding


def test_resnet_has_no_batchnorm_left():
    model = repro.create_model("resnet50")
    fused = repro.fuse(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert fused.folded_batchnorms == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_channels_last_by_default_with_nchw_input():
    """The default fused copy holds NHWC weights and converts its NCHW input itself; the result
    is the same function. ``channels_last=False`` keeps the model's own layout."""
    model = repro.create_model("efficientnet_b0").eval()  # randomized: float64 in test_fused_model_matches
    x = torch.randn(SIZE)
    fused = repro.fuse(model)
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert next(n for n in fused.graph.nodes if n.op != "placeholder").target == "contiguous"
    plain = repro.fuse(model, channels_last=False)
    assert all(c.weight.is_contiguous() for c in plain.modules() if isinstance(c, nn.Conv2d))
    with torch.no_grad():
        expected = model(x)
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            assert Diff.of(fused(inp), expected).ok(1e-5)
        assert Diff.of(fused(x), plain(x)).ok(1e-5)


def test_nothing_to_fold_is_an_error():
    with pytest.raises(repro.FuseError, match="no convolution -> BatchNorm pair"):
        repro.fuse(nn.Sequential(nn.Linear(3, 3)))


def test_fold_in_place_keeps_the_module_tree_and_the_function():
    """Named pairs folded where they are, for models ``fuse`` leaves alone: timm's ``BatchNormAct2d`` (not a
    leaf module for torch.fx) keeps its activation and holds no state of its own any more."""
    model = randomize_(reference.create("timm:mobilenetv3_small_050"), (2, 3, 32, 32)).eval().double()
    folded = copy.deepcopy(model)
    fold_in_place(folded, [("conv_stem", "bn1"), ("blocks.1.0.conv_pw", "blocks.1.0.bn1")])
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert Diff.of(folded(x), model(x)).max_rel < 1e-12
    assert not any(k.startswith(("bn1.", "blocks.1.0.bn1.")) for k in folded.state_dict())
    assert folded.conv_stem.bias is not None and isinstance(folded.bn1.act, nn.Hardswish)
    assert set(dict(folded.named_modules())) == set(dict(model.named_modules()))
    with pytest.raises(repro.FuseError, match="cannot fold conv_stem"):
        fold_in_place(copy.deepcopy(model), [("bn1", "conv_stem")])


def test_frozen_for_cpu_inference():
    model = randomize_(repro.create_model("resnet18"), SIZE).eval()
    x = torch.randn(1, 3, 64, 64)
    frozen = repro.fuse(model, freeze=True, example_input=x)
    with torch.no_grad():
        assert Diff.of(frozen(x), model(x)).max_rel <= 2 * Diff.of(repro.fuse(model)(x), model(x)).max_rel + 1e-6
    with pytest.raises(repro.FuseError, match="needs example_input"):
        repro.fuse(model, freeze=True)
