"""Every covered reference, randomized, ported and compared (the minGPT import test, made strict)."""


import pytest
import torch
import torchvision
from torch import nn

import reference
import repro
from repro import equivalence
from repro.equivalence import Diff, build_to_randomize, build_uninitialized, check_reference, compare_ported, randomize_
from repro.porting import port_weights
from repro.registry import REFERENCES

ALL_REFERENCES = repro.list_references()


@pytest.mark.parametrize("spec", ALL_REFERENCES)
def test_reference_is_equivalent(spec):
    result = check_reference(spec)
    assert result.tolerance.dtype == "float64"  # decided where float32 rounding can neither hide nor fake a difference
    result.assert_equivalent()
    assert result.counts_reference == result.counts_ours
    assert result.param_grads and result.running_stats, "train-mode checks must have run"
    n_params = sum(1 for _ in repro.create_model(result.model).parameters())
    assert len(result.param_grads) == n_params
    if REFERENCES[spec].expect_bit_exact:
        failing = [k for k, d in result.float32.items() if not d.bit_exact]
        assert not failing, f"expected bit-identical, differs in {failing[:5]}"


def test_resnet_references_are_bit_identical():
    """Recorded fact: every ResNet pair is bit-identical (eval, train outputs, grads, running stats)."""
    depths = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    resnets = [s for s in ALL_REFERENCES if REFERENCES[s].model in depths]
    assert len(resnets) == 10
    assert all(REFERENCES[s].expect_bit_exact for s in resnets)


# ---- the harness must be able to fail -------------------------------------------------------


def _ported_pair(spec="timm:resnet18", size=(2, 3, 64, 64)):
    ref = reference.create(spec)
    randomize_(ref, size)
    ours = repro.create_model(REFERENCES[spec].model)
    report = port_weights(ref, ours)
    return ref, ours, report


def _compare(ref, ours, report, size=(2, 3, 64, 64)):
    return compare_ported(ref, ours, report.target_to_source, size)


def test_uninitialized_build_hides_nothing():
    """check_reference builds both models without initialization: every parameter starts as NaN, so
    one that randomize_ or the port misses poisons the outputs instead of passing unseen."""
    ref = build_uninitialized(lambda: reference.create("timm:resnet18"))
    assert all(torch.isnan(p).all() for p in ref.parameters())
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.running_mean == 0).all() and (m.running_var == 1).all() for m in bns)
    randomize_(ref, (2, 3, 64, 64))
    assert all(torch.isfinite(p).all() for p in ref.parameters())
    ours = build_uninitialized(lambda: repro.create_model("resnet18"))
    report = port_weights(ref, ours)
    assert _compare(ref, ours, report).bit_exact
    ours = build_uninitialized(lambda: repro.create_model("resnet18"))
    report = port_weights(ref, ours)
    with torch.no_grad():
        ours.layer2[0].conv1.weight.fill_(float("nan"))  # as if the port had skipped it
    assert any("non-finite" in f for f in _compare(ref, ours, report).failures())


@pytest.mark.parametrize("build", [
    lambda: repro.create_model("efficientnet_b0"),
    lambda: reference.create("timm:resnet50"),
    lambda: reference.create("torchvision:densenet121"),
], ids=["ours", "timm", "torchvision"])
def test_build_on_meta_is_a_meta_build_without_the_random_draws(build):
    """build_on_meta skips only the random fills of meta tensors (which write nothing): the model
    has exactly the parameters and buffers of a plain meta-device build."""
    from repro.flops import build_on_meta

    def layout(model):
        return ([(n, p.shape, p.dtype, p.requires_grad, p.is_meta) for n, p in model.named_parameters()],
                [(n, b.shape, b.dtype, b.is_meta) for n, b in model.named_buffers()])

    with torch.device("meta"):
        plain = build()
    assert layout(build_on_meta(build)) == layout(plain)


def test_build_on_meta_still_draws_into_real_tensors():
    from repro.flops import build_on_meta

    class WithTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.table = nn.Parameter(torch.empty(8, device="cpu").normal_(generator=torch.Generator().manual_seed(0)))

    model = build_on_meta(WithTable)
    assert model.proj.weight.is_meta
    assert torch.equal(model.table.detach(), torch.empty(8).normal_(generator=torch.Generator().manual_seed(0)))


def test_uninitialized_build_refuses_unknown_buffers():
    class WithTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.register_buffer("table", torch.arange(4.0))

    with pytest.raises(ValueError, match="table"):
        build_uninitialized(WithTable)


class _Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_a_model_to_randomize_skips_its_initialization_and_randomizes_the_same():
    """Built to be randomized: no initialization draws (the global random state is left alone), every parameter
    NaN until randomize_ redraws it, to the very values an initialized build gets."""
    state = torch.get_rng_state()
    skipped = build_to_randomize(_Stem)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.isnan().all() for p in skipped.parameters())
    built = randomize_(_Stem(), (2, 3, 8, 8), seed=3)
    randomize_(skipped, (2, 3, 8, 8), seed=3)
    for (name, ours), theirs in zip(skipped.state_dict().items(), built.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name


class _WithTable(_Stem):  # a buffer randomize_ keeps
    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.arange(4.0))


class _WithAttribute(_Stem):  # a tensor held as a plain attribute
    def __init__(self):
        super().__init__()
        self.scale = torch.full((4,), 2.0)


class _Tied(_Stem):  # one parameter in two modules: to_empty would untie them
    def __init__(self):
        super().__init__()
        self.other = nn.Conv2d(3, 4, 3)
        self.other.weight = self.conv.weight


class _Computing(_Stem):  # a constructor that computes with tensors (torchvision's RegNets)
    def __init__(self):
        super().__init__()
        self.width = int(torch.tensor([4.0]).item())


@pytest.mark.parametrize("kind", [_WithTable, _WithAttribute, _Tied, _Computing])
def test_a_model_to_randomize_is_built_as_it_is_where_skipping_initialization_would_change_it(kind):
    torch.manual_seed(0)
    expected = kind()
    torch.manual_seed(0)
    model = build_to_randomize(kind)
    for (name, ours), theirs in zip(model.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    assert all(not t.is_meta for t in vars(model).values() if isinstance(t, torch.Tensor))
    if kind is _Tied:
        assert model.other.weight is model.conv.weight


def test_randomize_leaves_no_zero_gamma_and_calibrated_stats():
    ref = reference.create("timm:resnet50")  # timm zero-initializes each block's last BN gamma
    assert any((m.weight == 0).all() for m in ref.modules() if isinstance(m, nn.BatchNorm2d))
    randomize_(ref, (2, 3, 64, 64))
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight.abs() >= 0.5).all()
            assert (m.running_var > 0).all() and m.num_batches_tracked > 0


def test_randomize_redraws_a_frozen_batchnorm_and_keeps_other_floating_buffers():
    """A BatchNorm frozen into buffers (torchvision's, a detection backbone's) starts as the identity (weight and
    variance 1, bias and mean 0), under which a mean and a variance swapped, or a weight taken for the variance,
    compute the same: redrawn like a BatchNorm's. A floating buffer of the architecture's (a mask) is kept."""
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torchvision.ops.FrozenBatchNorm2d(8)
            self.register_buffer("mask", torch.tril(torch.ones(3, 3)))

    model = randomize_(Masked(), input_size=None)
    norm = model.norm
    assert len({norm.weight[0].item(), norm.running_var[0].item(), norm.bias[0].item(),
                norm.running_mean[0].item()}) == 4
    assert (norm.weight >= 0.5).all() and (norm.running_var >= 0.5).all()
    assert torch.equal(model.mask, torch.tril(torch.ones(3, 3)))
    assert equivalence.is_frozen_batchnorm(norm) and not equivalence.is_frozen_batchnorm(nn.BatchNorm2d(8))


def test_randomize_calibrates_a_frozen_batchnorm_on_its_input():
    """Its statistics are those of its input (perturbed as a BatchNorm's), not drawn blind: deep in a network,
    blind ones let activations grow stage by stage until a mistake is a rounding-sized change of the output."""
    class Amplify(nn.Module):  # an input of variance about 2e4 where a blind draw would say about 1
        def forward(self, x):
            return 100 * x

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Amplify(), torchvision.ops.FrozenBatchNorm2d(8))
    randomize_(model, input_size=(4, 3, 16, 16), seed=1)
    x = torch.randn((4, 3, 16, 16), generator=torch.Generator().manual_seed(2))
    variance = model[:2](x).detach().var((0, 2, 3), unbiased=False)
    ratio = model[2].running_var / variance
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio


def test_default_init_hides_residual_branch_bug_randomized_does_not():
    """With timm's zero gammas a broken residual branch is invisible; after randomizing it is not."""
    spec = "timm:resnet18"
    size = (2, 3, 64, 64)

    def break_branch(model):  # drop the inner ReLU of every block's residual branch
        for block in [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]:
            block.forward = (lambda blk: lambda x: blk.relu(blk.bn2(blk.conv2(blk.bn1(blk.conv1(x))))
                             + (x if blk.downsample is None else blk.downsample(x))))(block)
        return model

    ref = reference.create(spec).eval()
    ours = break_branch(repro.from_reference(spec, source=ref).eval())
    x = torch.randn(size)
    with torch.no_grad():
        assert torch.equal(ref(x), ours(x)), "default init: the bug is invisible"

    ref, ours, report = _ported_pair(spec, size)
    result = _compare(ref, break_branch(ours), report, size)
    assert not result.eval_output.ok(1e-5)
    assert result.failures()


def test_wrong_bn_eps_is_caught():
    ref, ours, report = _ported_pair()
    ours.layer2[0].bn1.eps = 1e-3
    assert "eval output" in " ".join(_compare(ref, ours, report).failures())


def test_wrong_bn_momentum_is_caught_by_running_stats_only():
    ref, ours, report = _ported_pair()
    ours.layer3[1].bn2.momentum = 0.01
    result = _compare(ref, ours, report)
    assert result.eval_output.ok(1e-5) and result.train_output.ok(1e-5)
    failures = result.failures()
    assert failures and all("layer3.1.bn2.running" in f for f in failures)


def test_stride_on_the_1x1_is_caught():
    ref = reference.create("timm:resnet50")
    randomize_(ref, (2, 3, 64, 64))
    ours = repro.create_model("resnet50")
    block = ours.layer2[0]
    block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)  # ResNet v1 (Caffe) placement
    report = port_weights(ref, ours)  # same shapes: porting cannot see it
    assert not _compare(ref, ours, report).eval_output.ok(1e-5)


def test_missing_relu_after_addition_is_caught():
    ref, ours, report = _ported_pair()
    block = ours.layer4[1]
    block.forward = lambda x: block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))) + x
    assert _compare(ref, ours, report).failures()


def test_nan_never_passes():
    nan = torch.full((2, 3), float("nan"))
    d = Diff.of(nan, nan.clone())
    assert not d.finite and not d.ok(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
def test_diff_measures_as_float64_does(dtype):
    """``Diff.of`` takes differences in the tensors' own precision where it can: the numbers it reports are
    those of the exact float64 computation, to within one rounding of the difference."""
    gen = torch.Generator().manual_seed(0)
    b = (torch.randn(1000, generator=gen) * 100).to(dtype)
    a = b.clone()
    a[17] += 3
    a[400] -= 5
    d, exact = Diff.of(a, b), Diff.of(b.clone(), b)
    truth = (a.double() - b.double()).abs().max().item()
    assert d.max_abs == pytest.approx(truth, rel=1e-6) and not d.bit_exact and d.finite
    assert d.max_rel == pytest.approx(truth / b.double().abs().max().item(), rel=1e-6)
    assert exact == Diff(0.0, 0.0, True, True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("side", ["actual", "expected", "both"])
def test_diff_of_a_non_finite_tensor_is_never_ok(monkeypatch, bad, side):
    """Wherever the NaN or infinity is (in a later slice too), the difference is not finite and never passes."""
    monkeypatch.setattr(equivalence, "DIFF_CHUNK", 4)
    a, b = torch.ones(10), torch.ones(10)
    for t in {"actual": [a], "expected": [b], "both": [a, b]}[side]:
        t[9] = bad
    d = Diff.of(a, b)
    assert not d.finite and not d.ok(1.0)


def test_diff_of_a_float32_difference_that_overflows_is_measured_in_float64():
    a, b = torch.tensor([3e38, 1.0]), torch.tensor([-3e38, 1.0])
    d = Diff.of(a, b)
    assert d.finite and d.max_abs == pytest.approx(6e38) and d.max_rel == pytest.approx(2.0)


def test_gradient_diffs_are_relative_to_the_largest_gradient_of_the_module():
    expected = {"bn.weight": torch.tensor([4.0, -8.0]), "bn.bias": torch.tensor([1e-12, 0.0])}
    actual = {"bn.weight": torch.tensor([4.0, -8.0]), "bn.bias": torch.tensor([2e-12, 0.0])}
    diffs, missing = equivalence.gradient_diffs(actual, expected, [("bn.weight", "bn.weight"), ("bn.bias", "bn.bias")])
    assert not missing and diffs["bn.weight"].bit_exact
    assert diffs["bn.bias"].max_rel == pytest.approx(1e-12 / 8.0)


def test_deterministic_kwargs_reach_both_sides():
    for entry in REFERENCES.values():
        ref = reference.create(entry.spec, **entry.deterministic_reference_kwargs)
        dropouts = [m for m in ref.modules() if isinstance(m, nn.Dropout) and m.p > 0]
        assert not dropouts, f"{entry.spec}: dropout left on for train-mode comparison"
        break  # building every reference here is the sweep's job; one proves the wiring


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resolution=16), "too small for resnet18"),
        (dict(batch=0), "batch size must be at least 1"),
        (dict(batch=1, resolution=32), "one value per channel"),
    ],
)
def test_bad_input_sizes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_reference("timm:resnet18", **kwargs)


def test_wrong_channel_count_is_refused():
    from repro.equivalence import validate_input_size

    with pytest.raises(ValueError, match="takes 3-channel images, got 4"):
        validate_input_size((2, 4, 64, 64), "resnet18")


def test_non_finite_outputs_fail_the_comparison():
    ref, ours, report = _ported_pair()
    with torch.no_grad():
        ours.fc.bias[0] = float("inf")
    result = _compare(ref, ours, report)
    assert any("non-finite" in f for f in result.failures())
