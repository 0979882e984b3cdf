"""``repro.verify``'s verdict: decided in float64, in levels, on copies, frozen parameters included.

Each capability on small synthetic models, each with the mismatch it must still catch and locate.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import DropPath
from torch import nn
from torchvision.ops import StochasticDepth
from transformers.modeling_outputs import ImageClassifierOutput

from helpers import assert_state_unchanged, state_snapshot
from repro.equivalence import FLOAT64_RTOL, compare_ported, randomize_
from repro.verify import PairingError, VerifyError, verify
from repro.verify.__main__ import main
from repro.verify._trace import DropoutCallsOff, RandomWatch

SIZE = (2, 3, 8, 8)


class Net(nn.Module):
    """conv -> BN -> activation -> conv -> (stochastic layer) -> pool -> Linear, the pieces configurable."""

    def __init__(self, act: nn.Module | None = None, drop: nn.Module | None = None, eps: float = 1e-5,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, eps=eps)
        self.act = act or nn.SiLU()
        self.mix = nn.Conv2d(8, 8, 1)
        self.drop = drop or nn.Identity()
        self.drop_rate = drop_rate  # a functional dropout before the classifier, as timm models have
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = y + self.drop(self.mix(y))
        y = F.dropout(y.mean((2, 3)), p=self.drop_rate, training=self.training)
        return self.fc(y)


class Swish(nn.Module):
    def __init__(self, slope: float = 1.0) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x):
        return x * torch.sigmoid(self.slope * x)


class HardSigmoidByHand(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3) / 6


# -- one definition of equivalence, decided in float64 ---------------------------------------------

@pytest.mark.parametrize("candidate_act, reference_act", [
    (Swish(), nn.SiLU()),
    (HardSigmoidByHand(), nn.Hardsigmoid()),
], ids=["swish-by-hand", "hard-sigmoid-by-hand"])
def test_rounding_differences_are_equivalent_not_bit_identical(candidate_act, reference_act):
    """The same function computed with other operations: float32 rounding differs, float64 agrees."""
    report = verify(Net(candidate_act), Net(reference_act), input_size=SIZE)
    assert report.equivalent and not report.bit_exact, str(report)
    assert report.verdict == "EQUIVALENT" and report.tolerance.dtype == "float64"
    assert report.rtol == FLOAT64_RTOL
    assert not all(d.bit_exact for d in report.float32.values())  # the stronger fact is reported, and fails
    assert report.levels["eval"].holds and report.levels["train step"].holds
    # Where float32 eval passes part is said, so that this rounding is told from a difference that matters (the
    # hand-written hard-sigmoid's forward is bit-identical: its backward alone rounds otherwise).
    parting = [n for n in report.notes if n.startswith("float32 is not bit-identical from act on (float32 eval: "
                                                       "the output of act")]
    assert len(parting) == (not report.float32["eval output"].bit_exact) == isinstance(candidate_act, Swish), \
        report.notes
    assert not any(n.startswith("float32 is not") for n in verify(Net(), Net(), input_size=SIZE).notes)


def test_a_mistake_below_float32_rounding_still_fails_and_is_located():
    """A swish whose slope is off by 1e-5: the size of float32 noise in a deep network, found in float64."""
    report = verify(Net(Swish(1 + 1e-5)), Net(nn.SiLU()), input_size=SIZE)
    assert not report.equivalent and report.verdict == "NOT EQUIVALENT"
    assert report.first_divergence == "act", str(report)
    assert report.levels["eval"].first_divergence == "act"


def test_check_reference_and_verify_share_one_definition():
    """compare_ported (the 75-reference sweep and the report) decides in float64 within the same tolerance."""
    ref = randomize_(Net(nn.SiLU()), SIZE)
    ours = Net(Swish())
    ours.load_state_dict(ref.state_dict())
    mapping = {k: k for k in ours.state_dict()}
    result = compare_ported(ref, ours, mapping, SIZE)
    assert result.tolerance.dtype == "float64" and result.tolerance.rtol == FLOAT64_RTOL
    assert not result.failures() and not result.bit_exact
    assert result.float32["eval output"].max_rel > 0
    wrong = Net(Swish(1 + 1e-5))
    wrong.load_state_dict(ref.state_dict())
    assert "eval output" in " ".join(compare_ported(ref, wrong, mapping, SIZE).failures())


class Float32Only(Net):
    """Casts its input to float32 inside forward: it cannot run in float64."""

    def forward(self, x):
        return super().forward(x.float())


def test_a_model_that_cannot_run_in_float64_falls_back_to_a_calibrated_float32_tolerance():
    report = verify(Float32Only(Swish()), Net(nn.SiLU()), input_size=SIZE)
    assert report.tolerance.dtype == "float32" and "float64 fails" in report.tolerance.basis
    assert "float32-vs-float64 error" in report.tolerance.basis and "decided in float32" in str(report)
    assert report.equivalent, str(report)
    broken = Float32Only(Swish(), eps=1e-2)
    report = verify(broken, Net(nn.SiLU()), input_size=SIZE)
    assert not report.equivalent and report.first_divergence == "bn"
    # What preparing the copies noted survives the comparison starting afresh in float32.
    report = verify(Float32Only(Swish()).half(), Net(nn.SiLU()), input_size=SIZE)
    assert report.tolerance.dtype == "float32" and report.equivalent, str(report)
    assert any(note.startswith("the candidate holds float16 tensors") for note in report.notes), str(report)


# -- levels: eval, train step, stochastic configuration ------------------------------------------

@pytest.mark.parametrize("make", [
    lambda p: Net(drop=nn.Dropout(p)),
    lambda p: Net(drop=nn.Dropout2d(p)),
    lambda p: Net(drop=DropPath(p)),
    lambda p: Net(drop=StochasticDepth(p, "row")),
    lambda p: Net(drop_rate=p),
], ids=["dropout", "dropout2d", "timm-drop-path", "torchvision-stochastic-depth", "functional-dropout"])
def test_stochastic_layers_are_found_compared_side_by_side_and_turned_off(make):
    same = verify(make(0.2), make(0.2), input_size=SIZE)
    assert same.equivalent and same.bit_exact, str(same)
    assert [s.rate for s in same.stochastic_candidate] == [s.rate for s in same.stochastic_reference] == [0.2]
    assert same.levels["stochastic configuration"].holds
    assert not any("draws random numbers" in n for n in same.notes)  # turned off: the train step is deterministic

    other = verify(make(0.2), make(0.0), input_size=SIZE)
    assert not other.equivalent
    assert other.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(other)
    assert other.levels["eval"].holds and other.levels["eval"].bit_exact
    assert other.levels["train step"].holds and other.levels["train step"].bit_exact
    level = other.levels["stochastic configuration"]
    assert level.holds is False and "reference: none" in level.detail and "=0.2" in level.detail
    data = json.loads(json.dumps(other.to_dict()))
    assert data["levels"]["stochastic configuration"]["state"] == "DIFFERS"
    assert data["stochastic"]["candidate"][0]["rate"] == 0.2


class HandsItsRateDown(Net):
    """Keeps ``drop_rate`` as a setting for its head's ``Dropout`` module and draws nothing itself (as timm's VGG)."""

    def __init__(self, p: float) -> None:
        super().__init__(drop=nn.Dropout(p))
        self.drop_rate = p

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = y + self.drop(self.mix(y))
        return self.fc(y.mean((2, 3)))


def test_a_rate_a_container_never_applies_is_not_a_stochastic_layer():
    report = verify(HandsItsRateDown(0.3), Net(drop=nn.Dropout(0.3)), input_size=SIZE)
    assert report.equivalent and report.levels["stochastic configuration"].holds, str(report)
    idle = [layer for layer in report.stochastic_candidate if not layer.acts]
    assert [(layer.module, layer.attribute) for layer in idle] == [("", "drop_rate")]
    assert any("draws no random numbers itself" in note for note in report.notes)
    # The same rate applied by the container itself (Net's functional dropout) is a stochastic layer of its own.
    applied = verify(Net(drop=nn.Dropout(0.3), drop_rate=0.3), Net(drop=nn.Dropout(0.3)), input_size=SIZE)
    assert applied.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(applied)
    assert "Dropout.p 0.3" in applied.levels["stochastic configuration"].detail


class DropsInEvalToo(Net):
    """Its functional dropout is called without ``training=``: it drops in eval mode too, at the rate it keeps in
    ``drop_rate`` (as kuangliu's CIFAR EfficientNet blocks do)."""

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = y + self.drop(self.mix(y))
        return self.fc(F.dropout(y.mean((2, 3)), p=self.drop_rate))


def test_a_rate_applied_in_eval_mode_too_is_part_of_the_eval_function():
    """Rates are turned off for the train step alone: a dropout acting in eval mode is not hidden by it."""
    report = verify(DropsInEvalToo(drop_rate=0.3), Net(drop_rate=0.3), input_size=SIZE)
    assert report.levels["eval"].holds is False and not report.equivalent, str(report)
    assert report.levels["train step"].holds, str(report)  # in train mode both drop, and both are turned off
    assert any("draws random numbers in eval mode: dropout" in note for note in report.notes), report.notes
    # The same model whose rate is zero computes the reference's function.
    assert verify(DropsInEvalToo(drop_rate=0.0), Net(drop_rate=0.3), input_size=SIZE).levels["eval"].holds


def test_each_differing_level_says_how_it_differs_in_the_printed_report():
    """The report's first divergence is the eval level's; the stochastic level's rates are printed beside it."""
    report = verify(Net(act=nn.ReLU(), drop_rate=0.2), Net(), input_size=SIZE)
    assert report.levels["eval"].holds is False and report.levels["stochastic configuration"].holds is False
    line = next(line for line in str(report).splitlines() if line.startswith("level stochastic configuration"))
    assert "candidate: Net.drop_rate 0.2 (single values); reference: none" in line, line
    eval_line = next(line for line in str(report).splitlines() if line.startswith("level eval"))
    assert "(" not in eval_line  # its detail is the report's first divergence, said once


class HeadDropout(Net):
    """``drop`` applied to the pooled features before the classifier (where ``Net`` applies its ``drop_rate``)."""

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = y + self.mix(y)
        return self.fc(self.drop(y.mean((2, 3), keepdim=True)).flatten(1))


@pytest.mark.parametrize("candidate, reference, size, same", [
    (nn.Dropout2d(0.5), nn.Dropout(0.5), SIZE, False),  # whole channels against single values
    (nn.Dropout2d(0.5), nn.Dropout(0.5), (2, 3, 1, 1), True),  # on a 1x1 map, a channel is a single value
    (DropPath(0.2), StochasticDepth(0.2, "row"), SIZE, True),  # whole samples, both
    (StochasticDepth(0.2, "batch"), StochasticDepth(0.2, "row"), SIZE, False),  # the whole batch against samples
    (nn.Dropout(0.2), "functional dropout", SIZE, True),  # the model's own F.dropout, made again on a probe
    (nn.Dropout2d(0.2), "functional dropout", SIZE, True),  # after pooling: a 1x1 map, single values either way
    (nn.AlphaDropout(0.2), nn.Dropout(0.2), SIZE, None),  # what alpha dropout drops is not seen (no zeros)
    (nn.AlphaDropout(0.2), nn.AlphaDropout(0.2), SIZE, True),  # one class at one rate: drawn alike, seen or not
], ids=["dropout2d-vs-dropout", "dropout2d-vs-dropout-on-1x1", "droppath-vs-stochastic-depth",
        "batch-vs-row", "dropout-module-vs-functional", "dropout2d-after-pooling-vs-functional",
        "unseen-vs-dropout", "unseen-vs-its-own-class"])
def test_the_same_rate_dropping_other_units_is_another_stochastic_configuration(candidate, reference, size, same):
    """Compared in the order the layers draw (a model's head dropout, kept on the model, draws last)."""
    if reference == "functional dropout":  # Net's F.dropout before its classifier, its rate kept on the model
        report = verify(HeadDropout(drop=candidate), Net(drop_rate=candidate.p), input_size=size)
    else:
        report = verify(Net(drop=candidate), Net(drop=reference), input_size=size)
    level = report.levels["stochastic configuration"]
    assert report.levels["eval"].holds and report.levels["train step"].holds, str(report)
    assert level.holds is same, str(report)
    if same is None:
        assert "is not seen here" in level.detail and "not decided" in level.detail, level.detail
    if same is False:
        assert report.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(report)
        assert report.first_divergence == "drop"
        assert "each draw dropping other units" in level.detail, level.detail


class TwoBranches(nn.Module):
    """Two residual branches, each behind drop-path: one module applied to both (as torchvision's Swin) or one each
    (as timm's)."""

    def __init__(self, p: float, shared: bool) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
        self.drop_a = DropPath(p)
        self.drop_b = self.drop_a if shared else DropPath(p)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = x + self.drop_a(self.a(x))
        x = x + self.drop_b(self.b(x))
        return self.fc(x.mean((2, 3)))


def test_a_stochastic_module_applied_twice_counts_twice():
    report = verify(TwoBranches(0.1, shared=True), TwoBranches(0.1, shared=False), input_size=SIZE)
    assert report.equivalent and report.levels["stochastic configuration"].holds, str(report)
    other = verify(TwoBranches(0.1, shared=True), TwoBranches(0.2, shared=False), input_size=SIZE)
    assert other.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(other)
    assert ("DropPath.drop_prob 0.1 x2 (whole samples); reference: DropPath.drop_prob 0.2 x2 (whole samples)"
            in other.levels["stochastic configuration"].detail)


class UnusedDropPath(Net):
    """Builds a drop-path it never calls (timm's blocks build one and call it only where they have a residual)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = DropPath(0.1)


def test_a_stochastic_layer_never_called_applies_no_rate():
    report = verify(UnusedDropPath(), Net(), input_size=SIZE)
    assert report.bit_exact, str(report)
    assert report.levels["stochastic configuration"].detail == "candidate: none; reference: none"


def test_a_rate_only_the_reference_has_is_a_divergence_at_the_candidates_root():
    report = verify(Net(), Net(drop=nn.Dropout(0.2)), input_size=SIZE)
    assert report.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION"
    assert report.first_divergence == "(root)"
    assert "none vs drop (Dropout.p=0.2, single values)" in report.divergence_detail


def test_a_real_mistake_behind_dropout_is_still_the_verdict():
    report = verify(Net(drop=nn.Dropout(0.2), eps=1e-3), Net(drop=nn.Dropout(0.2)), input_size=SIZE)
    assert report.verdict == "NOT EQUIVALENT" and report.first_divergence == "bn"
    assert report.levels["eval"].holds is False and report.levels["eval"].first_divergence == "bn"
    assert "eps 0.001 vs 1e-05" in report.divergence_detail  # the cause, in the paired modules' settings
    assert report.levels["stochastic configuration"].holds


class RateUnderItsOwnName(Net):
    """Passes a rate kept under a name no library uses (``droprate``, as CIFAR DenseNets and WideResNets keep it)
    to ``F.dropout``: in ``forward`` always (``training=self.training``), or only ``if self.training``."""

    def __init__(self, droprate: float, train_only: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.droprate, self.train_only = droprate, train_only

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = y + self.mix(y)
        y = y.mean((2, 3))
        if not self.train_only:
            y = F.dropout(y, p=self.droprate, training=self.training)
        elif self.training:
            y = F.dropout(y, self.droprate)
        return self.fc(y)


@pytest.mark.parametrize("train_only", [False, True], ids=["called-in-eval-too", "called-in-train-mode-alone"])
def test_a_rate_under_a_name_not_known_is_found_and_turned_off_at_the_call(train_only):
    """Found where ``F.dropout`` is given it, whatever it is called: compared with the reference's, and turned off
    at the call for the train step, which is then decided."""
    same = verify(RateUnderItsOwnName(0.2, train_only), Net(drop_rate=0.2), input_size=SIZE)
    assert same.bit_exact and same.levels["stochastic configuration"].holds, str(same)
    assert [(s.module, s.call, s.attribute, s.rate, s.unit) for s in same.stochastic_candidate] == [
        ("", "dropout", "p", 0.2, "single values")]
    assert same.levels["stochastic configuration"].detail == (
        "candidate: dropout(p) in RateUnderItsOwnName 0.2 (single values); reference: Net.drop_rate 0.2 (single "
        "values)")
    assert not any("draws random numbers" in n for n in same.notes)  # turned off: the train step is deterministic
    other = verify(RateUnderItsOwnName(0.3, train_only), Net(drop_rate=0.2), input_size=SIZE)
    assert other.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(other)
    assert other.first_divergence == "(root)" and "the first that differs: (root) (dropout(p) in " \
        "RateUnderItsOwnName=0.3, single values) vs (root) (Net.drop_rate=0.2" in other.divergence_detail
    assert other.levels["train step"].holds and other.levels["train step"].bit_exact
    # The mismatch behind it is still caught and located.
    wrong = verify(RateUnderItsOwnName(0.2, train_only, eps=1e-3), Net(drop_rate=0.2), input_size=SIZE)
    assert wrong.verdict == "NOT EQUIVALENT" and wrong.first_divergence == "bn", str(wrong)


def test_a_rate_found_at_the_call_is_compared_without_a_train_step():
    """``train=False``: the eval pass calls ``F.dropout`` with the rate (and ``training=False``), which is enough to
    look for it."""
    same = verify(RateUnderItsOwnName(0.2), Net(drop_rate=0.2), input_size=SIZE, train=False)
    assert same.levels["stochastic configuration"].holds, str(same)
    other = verify(RateUnderItsOwnName(0.3), Net(drop_rate=0.2), input_size=SIZE, train=False)
    assert other.levels["stochastic configuration"].holds is False, str(other)


class Attention(nn.Module):
    """Self-attention whose attention-weight dropout is an ``nn.Dropout``: applied as a module (``fused=False``), or
    its rate handed to ``F.scaled_dot_product_attention`` and the module never called (``fused=True``, as timm's
    fused attention does)."""

    def __init__(self, fused: bool, p: float = 0.1) -> None:
        super().__init__()
        self.fused, self.embed, self.qkv = fused, nn.Linear(4, 8), nn.Linear(8, 24)
        self.attn_drop, self.head = nn.Dropout(p), nn.Linear(8, 3)

    def forward(self, x):
        q, k, v = self.qkv(self.embed(x)).chunk(3, -1)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            y = self.attn_drop((q @ k.transpose(-2, -1) * 8 ** -0.5).softmax(-1)) @ v
        return self.head(y.mean(1))


def test_an_attention_dropout_rate_is_found_where_attention_is_given_it():
    """The fused model's ``attn_drop`` is never called: its rate acts through the attention call, and is found
    there, not missed."""
    same = verify(Attention(fused=True), Attention(fused=False), input_size=(2, 5, 4))
    assert same.equivalent and same.levels["train step"].holds, str(same)
    level = same.levels["stochastic configuration"]
    assert level.holds is None and "scaled_dot_product_attention(dropout_p) in Attention 0.1" in level.detail
    assert "is not seen here" in level.detail  # what the attention call drops is not probed
    other = verify(Attention(fused=True, p=0.2), Attention(fused=False), input_size=(2, 5, 4))
    assert other.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(other)


def test_dropout_calls_off_makes_every_dropout_call_at_rate_zero_and_says_which():
    x = torch.randn(4, 16)
    with DropoutCallsOff() as calls, RandomWatch() as watch:  # a watch inside it sees no draw
        assert torch.equal(F.dropout(x, 0.5, training=True), x)
        assert torch.equal(nn.Dropout(0.3).train()(x), x)
        assert torch.equal(torch.dropout(x, 0.25, True), x)
        assert torch.equal(F.dropout(x, 0.5, training=False), x)  # not dropping: nothing to turn off
    assert calls.turned_off == [("dropout", 0.5), ("dropout", 0.3), ("dropout", 0.25)] and not watch.seen
    assert not torch.equal(F.dropout(x, 0.5, training=True), x)  # given back


class RandomByHand(Net):
    """Draws random numbers in train mode without any rate attribute: it cannot be turned off."""

    def forward(self, x):
        if self.training:
            x = x * (torch.rand_like(x[:, :1]) < 0.9)
        return super().forward(x)


def test_random_numbers_that_cannot_be_turned_off_leave_the_level_undecided():
    report = verify(RandomByHand(), RandomByHand(), input_size=SIZE)
    level = report.levels["stochastic configuration"]
    assert level.holds is None and "not turned off" in level.detail and "(root)" in level.detail
    assert report.equivalent  # the train step ran both with one seed and agreed


class DropConnectByArgument(Net):
    """A drop-connect whose rate is a forward argument (as EfficientNet ports pass it to each block), not an
    attribute: found as random draws, never turned off. ``path``: the reference's drop-path in the same place."""

    def __init__(self, rate: float = 0.2, path: float = 0.0, **kwargs) -> None:
        super().__init__(drop=DropPath(path) if path else None, **kwargs)
        self.rates = (rate,)  # a tuple: no float attribute to find

    def forward(self, x):
        return self.block(x, self.rates[0])

    def block(self, x, rate):
        y = self.act(self.bn(self.conv(x)))
        branch = self.drop(self.mix(y))
        if self.training and rate:
            branch = branch * (torch.rand(branch.shape[0], 1, 1, 1) >= rate) / (1 - rate)
        return self.fc(F.dropout((y + branch).mean((2, 3)), p=self.drop_rate, training=self.training))


def _drop_connect(x, p, training):
    """EfficientNet-PyTorch's way: a mask drawn with ``torch.rand``, one number per sample."""
    if not training:
        return x
    keep = 1 - p
    return x / keep * torch.floor(keep + torch.rand([x.shape[0], 1, 1, 1], dtype=x.dtype))


class _RateByKeywordBlock(nn.Module):
    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.conv, self.bn, self.residual = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), residual

    def forward(self, x, drop_connect_rate=None):
        y = F.relu(self.bn(self.conv(x)))
        if not self.residual:
            return y
        if drop_connect_rate:
            y = _drop_connect(y, p=drop_connect_rate, training=self.training)
        return y + x


class RateByKeyword(nn.Module):
    """Each block's forward is given its drop-connect rate, scheduled by the model, as a keyword (EfficientNet-PyTorch's
    ``block(x, drop_connect_rate=...)``) or by position; the second block has no residual and leaves its rate
    unused."""

    def __init__(self, rate: float = 0.2, by_position: bool = False) -> None:
        super().__init__()
        self.stem, self.head, self.rate = nn.Conv2d(3, 4, 1), nn.Linear(4, 5), (rate,)
        self.blocks = nn.ModuleList(_RateByKeywordBlock(residual=i != 1) for i in range(4))
        self.by_position = by_position

    def forward(self, x):
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            rate = self.rate[0] * i / len(self.blocks)
            x = block(x, rate) if self.by_position else block(x, drop_connect_rate=rate)
        return self.head(x.mean((2, 3)))


class _DropPathBlock(_RateByKeywordBlock):
    def __init__(self, rate: float, residual: bool = True) -> None:
        super().__init__(residual)
        self.drop_path = DropPath(rate) if rate else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        return self.drop_path(y) + x if self.residual else y


class RateInDropPath(RateByKeyword):
    """The same network with timm's ``DropPath`` modules holding the same schedule."""

    def __init__(self, rate: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_DropPathBlock(rate * i / 4, residual=i != 1) for i in range(4))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("by_position", [False, True])
def test_a_rate_a_modules_forward_is_given_by_keyword_is_found_compared_and_turned_off(by_position):
    report = verify(RateByKeyword(by_position=by_position), RateInDropPath(), input_size=SIZE)
    assert report.bit_exact and report.levels["train step"].bit_exact, str(report)
    stochastic = report.levels["stochastic configuration"]
    assert stochastic.holds and "forward(drop_connect_rate) in _RateByKeywordBlock 0.1 to 0.15 x2 (whole samples)" \
        in stochastic.detail and "DropPath.drop_prob 0.1 to 0.15 x2 (whole samples)" in stochastic.detail
    # The block without a residual is given a rate it never applies: named, not counted.
    assert any(note.startswith("rates the candidate keeps on, or gives to, a module that draws no random")
               and "blocks.1 (forward(drop_connect_rate) in _RateByKeywordBlock=0.05);" in note
               for note in report.notes)
    # Another schedule: the same function, another stochastic configuration, located at the first rate that differs.
    report = verify(RateByKeyword(rate=0.3, by_position=by_position), RateInDropPath(), input_size=SIZE)
    assert report.verdict == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION", str(report)
    assert report.levels["stochastic configuration"].first_divergence == "blocks.2"
    # A mistake in the train-mode math is still found with the draws off.
    candidate = RateByKeyword(by_position=by_position)
    candidate.blocks[3].bn.momentum = 0.2
    report = verify(candidate, RateInDropPath(), input_size=SIZE)
    assert report.levels["train step"].holds is False and report.first_divergence == "blocks.3.bn", str(report)


class _HandedDropout(nn.Module):
    """A module handed its dropout rate by keyword, which it passes on to ``F.dropout``: one stochastic layer."""

    def forward(self, x, dropout=0.0):
        return F.dropout(x, dropout, self.training)


class _HeadWithHandedDropout(nn.Module):
    def __init__(self, handed: bool) -> None:
        super().__init__()
        self.conv, self.fc, self.handed = nn.Conv2d(3, 4, 3), nn.Linear(4, 5), handed
        self.drop = _HandedDropout() if handed else nn.Dropout(0.1)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return self.fc(self.drop(x, dropout=0.1) if self.handed else self.drop(x))


def test_a_rate_handed_to_a_forward_that_passes_it_to_dropout_is_one_layer_not_two():
    report = verify(_HeadWithHandedDropout(handed=True), _HeadWithHandedDropout(handed=False), input_size=SIZE)
    assert report.bit_exact and report.levels["stochastic configuration"].holds, str(report)
    assert [layer.rate for layer in report.stochastic_candidate if layer.acts] == [0.1]


class _SharedBlockTwice(RateByKeyword):
    """One block applied twice, handed a rate each time: two applications, as a DropPath inside it called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_RateByKeywordBlock()])

    def forward(self, x):
        x = self.stem(x)
        for _ in range(2):
            x = self.blocks[0](x, drop_connect_rate=self.rate[0])
        return self.head(x.mean((2, 3)))


class _SharedDropPathTwice(RateInDropPath):
    def __init__(self, rate: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_DropPathBlock(rate)])

    def forward(self, x):
        x = self.stem(x)
        for _ in range(2):
            x = self.blocks[0](x)
        return self.head(x.mean((2, 3)))


def test_a_rate_handed_to_a_block_applied_twice_counts_twice():
    report = verify(_SharedBlockTwice(), _SharedDropPathTwice(), input_size=SIZE)
    stochastic = report.levels["stochastic configuration"]
    assert report.bit_exact and stochastic.holds, str(report)
    assert "forward(drop_connect_rate) in _RateByKeywordBlock 0.2 x2" in stochastic.detail


@pytest.mark.parametrize("args, kwargs, shape, unit", [
    (((2, 1, 1, 1),), {}, (2, 8, 4, 4), "whole samples"),
    ((), {"size": (2, 1, 1, 1)}, (2, 8, 4, 4), "whole samples"),
    ((2, 8, 1, 1), {}, (2, 8, 4, 4), "whole channels"),
    (([2, 8, 4, 4],), {}, (2, 8, 4, 4), "single values"),
    (((1, 1, 1, 1),), {}, (1, 8, 4, 4), ""),  # one sample: per sample and per batch are one draw
    (((3, 1, 1, 1),), {}, (2, 8, 4, 4), ""),  # not the input's batch
    (((2, 1, 4, 1),), {}, (2, 8, 4, 4), ""),  # another pattern: not named
])
def test_what_a_mask_drawn_for_the_purpose_drops_is_read_off_its_size(args, kwargs, shape, unit):
    from repro.verify._stochastic import _drawn_unit

    assert _drawn_unit(torch.rand, args, kwargs, shape) == unit


def test_a_train_step_random_draws_may_explain_is_undecided_not_different():
    """A drop-connect no rate attribute turns off, against the same drop-connect as a DropPath (turned off) or
    against none: the train step differs, but the draws may be the whole difference; the eval function is
    decided, and a real mistake is still the verdict."""
    for reference in (Net(drop=DropPath(0.2)), Net()):
        report = verify(DropConnectByArgument(), reference, input_size=SIZE)
        assert report.verdict == "SAME EVAL FUNCTION, TRAIN STEP UNDECIDED" and report.undecided, str(report)
        assert not report.equivalent and report.first_divergence is None
        assert report.levels["eval"].holds and report.levels["eval"].bit_exact
        train = report.levels["train step"]
        assert train.holds is None and train.state == "undecided" and "still drawn" in train.detail
        assert "the candidate in (root)" in train.detail and "turn that randomness off" in train.detail
        stochastic = report.levels["stochastic configuration"]
        assert stochastic.holds is None and "not turned off" in stochastic.detail
    # Both drop-connects switched off by hand: the same function, decided.
    assert verify(DropConnectByArgument(rate=0.0), Net(), input_size=SIZE).bit_exact
    # A definite rate difference stays a difference beside the undecided train step.
    report = verify(DropConnectByArgument(drop_rate=0.5), Net(), input_size=SIZE)
    assert report.verdict == "SAME EVAL FUNCTION, TRAIN STEP UNDECIDED, DIFFERENT STOCHASTIC CONFIGURATION"
    assert report.levels["stochastic configuration"].holds is False and not report.undecided
    # A mistake the eval pass sees is the verdict, draws or not.
    report = verify(DropConnectByArgument(eps=1e-3), Net(), input_size=SIZE)
    assert report.verdict == "NOT EQUIVALENT" and report.first_divergence == "bn", str(report)
    # A train-mode mistake that arises before the first draw is one the draws cannot explain.
    report = verify(DropConnectByArgument(act=SiLUUnlessTraining()), Net(), input_size=SIZE)
    assert report.levels["train step"].holds is False and report.first_divergence == "act", str(report)
    # So is a running statistic updated otherwise before the first draw, while every forward point agrees there.
    candidate = DropConnectByArgument()
    candidate.bn.momentum = 0.2
    report = verify(candidate, Net(), input_size=SIZE)
    train = report.levels["train step"]
    assert train.holds is False and train.first_divergence == "bn", str(report)
    assert "before any random number is drawn" in train.detail and "momentum 0.2 vs 0.1" in train.detail


def test_rates_a_side_may_hold_in_draws_not_turned_off_leave_the_configuration_undecided():
    """The candidate's drop-connect (not turned off) draws before its head dropout: its known rates [0.5] are the
    reference's [0.2, 0.5] with one left out, which its draws may hold (lukemelas' EfficientNet against timm's with
    the same rates): undecided, not different. Known rates the other side lacks in that order still differ."""
    report = verify(DropConnectByArgument(drop_rate=0.5), Net(drop=DropPath(0.2), drop_rate=0.5), input_size=SIZE)
    level = report.levels["stochastic configuration"]
    assert level.holds is None and "the candidate's rates beyond those known may be in those draws" in level.detail, \
        str(report)
    report = verify(DropConnectByArgument(drop_rate=0.3), Net(drop=DropPath(0.2), drop_rate=0.5), input_size=SIZE)
    assert report.levels["stochastic configuration"].holds is False, str(report)


class DrawsAndKeepsEverything(Net):
    """Draws random numbers in train mode that change nothing: every forward point agrees."""

    def forward(self, x):
        if self.training:
            x = x * (torch.rand(x.shape[0], 1, 1, 1) >= 0.0)
        return super().forward(x)


def test_a_difference_where_every_forward_point_agrees_is_not_put_down_to_random_draws():
    candidate = DrawsAndKeepsEverything()
    candidate.bn.momentum = 0.2
    report = verify(candidate, Net(), input_size=SIZE)
    assert report.verdict == "NOT EQUIVALENT" and report.first_divergence == "bn", str(report)
    assert report.levels["train step"].holds is False and "momentum 0.2 vs 0.1" in report.divergence_detail


class Checkpointed(nn.Module):
    """conv -> BN -> ReLU under activation checkpointing in train mode (torchvision's memory-efficient DenseNet):
    the backward pass runs the BN again, which updates its running statistics a second time."""

    def __init__(self, checkpoint: bool) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        def features(t):
            return torch.relu(self.bn(self.conv(t)))
        use = self.checkpoint and x.requires_grad
        return self.head(torch.utils.checkpoint.checkpoint(features, x, use_reentrant=False) if use else features(x))


def test_a_module_run_twice_in_the_step_is_named_with_its_count():
    report = verify(Checkpointed(True), Checkpointed(False), input_size=SIZE)
    assert report.levels["eval"].bit_exact and report.verdict == "NOT EQUIVALENT" and report.first_divergence == "bn"
    assert "bn.num_batches_tracked grew by 2 vs 1 in one step" in report.divergence_detail, str(report)
    assert "checkpointing" in report.divergence_detail and "momentum" not in report.divergence_detail


class CopiedStatistics(nn.BatchNorm2d):
    """Normalizes with copies of its running statistics (as onnx2torch's BatchNorm does): train mode updates the
    copies, and the statistics stay as they were."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(), self.weight, self.bias,
                            self.training, self.momentum, self.eps)


def test_statistics_a_train_step_leaves_as_they_were_are_said_to_be():
    candidate = Net()
    candidate.bn = CopiedStatistics(8)
    report = verify(candidate, Net(), input_size=SIZE)
    assert report.levels["eval"].bit_exact and report.first_divergence == "bn", str(report)
    assert "the candidate's step leaves it as it was while the reference's updates it" in report.divergence_detail


def test_settings_that_differ_by_rounding_alone_are_not_a_cause_and_close_ones_are_written_in_full():
    """momentum ``1 - 0.9`` against 0.1 (2e-16 apart: no comparison could show it) is not named beside the eps that
    differs; 0.1000001 against 0.1 is, in full, not as two equal-looking numbers."""
    candidate = Net(eps=1e-3)
    candidate.bn.momentum = 1 - 0.9
    report = verify(candidate, Net(), input_size=SIZE)
    assert "[settings of bn vs the reference's bn: eps 0.001 vs 1e-05]" in report.divergence_detail, str(report)
    candidate.bn.momentum = 0.1000001
    report = verify(candidate, Net(), input_size=SIZE)
    assert "eps 0.001 vs 1e-05; momentum 0.1000001 vs 0.1" in report.divergence_detail, str(report)


def test_every_paired_module_whose_settings_differ_is_noted_not_only_the_first():
    """The first divergence names one cause; the notes list every paired module whose settings differ, grouped by
    the difference, so that a second one is seen before the first is fixed."""
    candidate = Net(eps=1e-3)
    candidate.mix = nn.Conv2d(8, 8, 1, dilation=2)
    report = verify(candidate, Net(), input_size=SIZE)
    note = next(n for n in report.notes if n.startswith("settings that differ between paired modules"))
    assert "eps 0.001 vs 1e-05 in 1 module (bn)" in note and "dilation (2, 2) vs (1, 1) in 1 module (mix)" in note, note
    assert not any(n.startswith("settings that differ") for n in verify(Net(), Net(), input_size=SIZE).notes)


class SiLUUnlessTraining(nn.Module):
    """SiLU in eval mode; in train mode a slightly different function: a mistake only a train step shows."""

    def forward(self, x):
        return F.silu(x) * (1.001 if self.training else 1.0)


def test_the_train_step_is_recorded_only_to_locate_what_differs():
    """Every paired module is compared in the eval pass; the train step compares outputs, gradients and
    buffers, and runs recorded (every module's train-mode output compared) only when one of those differs,
    so a train-mode-only mistake is still located, at its module."""
    same = verify(Net(), Net(), input_size=SIZE)
    assert same.bit_exact and {"eval_max_rel", "grad_max_rel"} <= set(same.layers.columns)
    assert "train_max_rel" not in same.layers.columns  # agreed plainly: not recorded
    report = verify(Net(act=SiLUUnlessTraining()), Net(), input_size=SIZE)
    assert report.levels["eval"].holds and report.levels["eval"].bit_exact
    train = report.levels["train step"]
    assert train.holds is False and train.first_divergence == "act", str(report)
    assert "train_max_rel" in report.layers.columns and report.first_divergence == "act"


class SwishWithWrongBackward(torch.autograd.Function):
    """A swish whose hand-written backward is 1% off (a memory-efficient swish): its forward is right."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s)) * 1.01


class GradientOnePercentOff(torch.autograd.Function):
    """The identity, whose backward scales the gradient by 1.01."""

    @staticmethod
    def forward(ctx, w):
        return w.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.01


class MixWithWrongWeightGradient(nn.Conv2d):
    """A 1x1 convolution whose weight gradient is 1% off; its input gradient is right."""

    def forward(self, x):
        return F.conv2d(x, GradientOnePercentOff.apply(self.weight), self.bias)


def test_a_wrong_backward_is_located_where_backward_goes_wrong():
    """The gradient at every point of the train step is compared: an activation without parameters whose backward
    is wrong is named, not the convolution before it whose weight gradient it spoils; a module whose own weight
    gradient is wrong while its output's gradient agrees is named too."""
    class Act(nn.Module):
        def forward(self, x):
            return SwishWithWrongBackward.apply(x)

    report = verify(Net(act=Act()), Net(), input_size=SIZE)
    assert report.levels["eval"].holds and report.levels["train step"].holds is False
    assert report.first_divergence == "act", str(report)
    assert "backward goes wrong in act" in report.divergence_detail
    candidate = Net()
    candidate.mix = MixWithWrongWeightGradient(8, 8, 1)
    report = verify(candidate, Net(), input_size=SIZE)
    assert report.first_divergence == "mix", str(report)
    assert "the gradient of mix.weight differs" in report.divergence_detail and "its backward goes wrong" in \
        report.divergence_detail


class TwoActivations(Net):
    """Net with ``act`` (a wrong backward) followed by a ReLU, or with a second branch from the norm's output: the
    gradient at the norm's output is the first that differs, and more than one module takes it there."""

    def __init__(self, branch: bool) -> None:
        super().__init__(act=_WrongBackwardSwish())
        self.branch = branch
        self.relu = nn.ReLU()
        self.side = nn.Conv2d(8, 8, 1) if branch else None

    def forward(self, x):
        z = self.bn(self.conv(x))
        y = self.act(z) + self.side(z) if self.branch else self.relu(self.act(z))
        y = y + self.drop(self.mix(y))
        return self.fc(y.mean((2, 3)))


class _WrongBackwardSwish(nn.Module):
    def forward(self, x):
        return SwishWithWrongBackward.apply(x)


class TwoActivationsReference(TwoActivations):
    def __init__(self, branch: bool) -> None:
        super().__init__(branch)
        self.act = nn.SiLU()


@pytest.mark.parametrize("branch, suspects", [(False, "one of act, relu"), (True, "one of side, act")])
def test_where_backward_cannot_be_told_apart_every_suspect_is_named(branch, suspects):
    report = verify(TwoActivations(branch), TwoActivationsReference(branch), input_size=SIZE)
    assert report.levels["train step"].holds is False and report.first_divergence == "(root)", str(report)
    assert suspects in report.divergence_detail


class CutAfterTheActivation(Net):
    """Net whose forward detaches the activation's output: the same eval function, no gradient before the cut."""

    def forward(self, x):
        y = self.act(self.bn(self.conv(x))).detach()
        y = y + self.drop(self.mix(y))
        return self.fc(F.dropout(y.mean((2, 3)), p=self.drop_rate, training=self.training))


def test_a_gradient_cut_is_named_where_no_gradient_reaches():
    report = verify(CutAfterTheActivation(), Net(), input_size=SIZE)
    assert report.levels["eval"].bit_exact and report.levels["train step"].holds is False
    assert report.first_divergence == "(root)", str(report)
    assert "no gradient reaches the input of mix in the candidate" in report.divergence_detail


def test_a_difference_only_on_the_scaled_up_sample_is_located():
    """The eval pass on the first sample scaled up is compared at the output, and recorded to locate a difference."""
    class ClampedAbove(nn.Module):  # SiLU below 20, clamped above: agrees on the input, not on the scaled-up one
        def forward(self, x):
            return F.silu(x).clamp(max=20.0)

    report = verify(Net(act=ClampedAbove()), Net(), input_size=SIZE, train=False, wide_input_scale=50.0)
    assert report.checks["eval output"].bit_exact and not report.checks["eval output, first sample x50"].ok(1e-3)
    assert not report.levels["eval"].holds and report.levels["eval"].first_divergence == "act", str(report)
    assert "wide_max_rel" in report.layers.columns


class Saturated(Net):
    """Its output saturates (``tanh(100 y)``): on a scaled-up input it hides a difference made upstream."""

    def forward(self, x):
        return torch.tanh(100 * super().forward(x))


def test_a_difference_a_saturating_output_hides_is_still_found_where_it_arises():
    class ClampedAbove(nn.Module):
        def forward(self, x):
            return F.silu(x).clamp(max=20.0)

    report = verify(Saturated(act=ClampedAbove()), Saturated(), input_size=SIZE, train=False, wide_input_scale=50.0)
    assert report.checks["eval output"].bit_exact
    assert not report.levels["eval"].holds and report.levels["eval"].first_divergence == "act", str(report)


class RandomFromItsOwnGenerator(Net):
    """Draws random numbers in train mode from a generator of its own (the global one does not move)."""

    def forward(self, x):
        if self.training:
            x = x * (torch.rand(x[:, :1].shape, generator=torch.Generator().manual_seed(0)) < 0.9)
        return super().forward(x)


def test_random_numbers_from_a_models_own_generator_are_seen_too():
    report = verify(RandomFromItsOwnGenerator(), RandomFromItsOwnGenerator(), input_size=SIZE)
    level = report.levels["stochastic configuration"]
    assert level.holds is None and "not turned off" in level.detail and "(root)" in level.detail
    assert report.equivalent


def test_levels_are_printed_and_serialized():
    report = verify(Net(drop=nn.Dropout(0.5)), Net(), input_size=SIZE)
    text = str(report)
    assert "level eval: bit-identical" in text and "level train step: bit-identical" in text
    assert "level stochastic configuration: DIFFERS" in text and "drop (Dropout.p=0.5, single values)" in text
    assert "level stochastic configuration" in report.to_markdown()


# -- never changes the user's model -----------------------------------------------------------------

def _trained(model: nn.Module) -> nn.Module:
    """Weights nothing like a fresh model's, a few frozen, in train mode."""
    randomize_(model, SIZE, seed=5)
    model.conv.weight.requires_grad_(False)
    return model.train()


class TwinNet(Net):
    """Two 1x1 convolutions of one shape on one input, added: the dataflow cannot tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.twin = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.fc((self.mix(y) + self.twin(y)).mean((2, 3)))


@pytest.mark.parametrize("outcome", ["equivalent", "not equivalent", "pairing error"])
def test_verify_never_changes_the_candidate(outcome):
    build = {"equivalent": Net, "not equivalent": lambda: Net(eps=1e-3), "pairing error": TwinNet}[outcome]
    candidate = _trained(build())
    reference = TwinNet() if outcome == "pairing error" else Net()
    snapshot, flags = state_snapshot(candidate), [p.requires_grad for p in candidate.parameters()]
    if outcome == "pairing error":
        try:  # a tie may one day be settled by trying both assignments; either way nothing may change
            verify(candidate, reference, input_size=SIZE)
        except PairingError:
            pass
    else:
        report = verify(candidate, reference, input_size=SIZE)
        assert report.equivalent is (outcome == "equivalent")
    assert_state_unchanged(candidate, snapshot)
    assert [p.requires_grad for p in candidate.parameters()] == flags and candidate.training
    assert all(p.grad is None for p in candidate.parameters())


@pytest.mark.parametrize("port", [True, False])
def test_verify_leaves_the_callers_random_state_as_it_was(port):
    """Building a reference from its spec initializes it (timm and torchvision draw from the global generator;
    built to be randomized, it skips those draws), and each pass draws where a model does: none of it is the
    caller's."""
    candidate, reference = Net(), Net()
    resnet = torchvision.models.resnet18()
    torch.manual_seed(11)
    state = torch.get_rng_state()
    verify(candidate, reference, input_size=SIZE, port=port)
    verify(resnet, "timm:resnet18", input_size=(2, 3, 32, 32), port=port)
    assert torch.equal(torch.get_rng_state(), state)


def test_copying_the_reference_weights_into_the_candidate_is_explicit():
    reference = randomize_(Net(), SIZE, seed=3)
    candidate = Net()
    before = state_snapshot(candidate)
    verify(candidate, reference, input_size=SIZE)
    assert_state_unchanged(candidate, before)
    verify(candidate, reference, input_size=SIZE, port_into_candidate=True)
    randomized = randomize_(copy.deepcopy(reference), SIZE, seed=0)  # what verify compared with
    assert_state_unchanged(candidate, state_snapshot(randomized))


# -- models as users hold them: another precision, lazy modules -------------------------------------

class LazyNet(Net):
    """``Net`` with its first convolution and its classifier lazy (shapes known at the first call)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.LazyConv2d(8, 3, padding=1, bias=False), nn.LazyLinear(4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_model_converted_to_another_precision_is_verified_as_a_float32_copy(dtype):
    candidate = Net().to(dtype)
    report = verify(candidate, Net(), input_size=SIZE)
    assert report.equivalent and not report.bit_exact and report.converted == ["candidate"], str(report)
    name = str(dtype).removeprefix("torch.")
    assert any(note.startswith(f"the candidate holds {name} tensors and cannot run on the float32 verification input")
               and (f"what it computes in {name} is not checked" in note) is (dtype != torch.float64)
               for note in report.notes), str(report)
    assert all(t.dtype == dtype for t in itertools.chain(candidate.parameters(), candidate.buffers())
               if t.is_floating_point())
    assert not verify(Net(eps=1e-3).to(dtype), Net(), input_size=SIZE).equivalent


class CastsItsInput(Net):
    """Casts its input to its own precision: runs on a float32 input as it is, in that precision."""

    def forward(self, x):
        return super().forward(x.to(self.conv.weight.dtype)).float()


def test_a_model_that_runs_on_the_input_in_its_own_precision_is_verified_as_it_is():
    report = verify(CastsItsInput().to(torch.bfloat16), Net(), input_size=SIZE)
    assert report.converted == [] and not any("holds bfloat16" in note for note in report.notes), str(report)
    assert report.equivalent and not report.float32["eval output"].bit_exact  # it computes in bfloat16


def test_lazy_modules_are_materialized_on_the_copy():
    candidate = LazyNet()
    report = verify(candidate, Net(), input_size=SIZE)
    assert report.bit_exact, str(report)
    assert "the candidate's lazy modules were materialized by one eval pass on the verification input: conv, fc" \
        in report.notes
    assert nn.parameter.is_lazy(candidate.conv.weight) and nn.parameter.is_lazy(candidate.fc.weight)
    assert not verify(LazyNet(), Net(eps=1e-3), input_size=SIZE).equivalent


def test_lazy_modules_that_hold_no_weights_yet_cannot_be_compared_as_they_are():
    with pytest.raises(VerifyError, match="port=False compares the weights the models hold, and the candidate's lazy"):
        verify(LazyNet(), Net(), input_size=SIZE, port=False)
    with pytest.raises(VerifyError, match="port_into_candidate=True copies weights into the candidate, whose lazy"):
        verify(LazyNet(), Net(), input_size=SIZE, port_into_candidate=True)


# -- frozen parameters ----------------------------------------------------------------------------

def test_frozen_parameters_verify_like_unfrozen_ones_and_are_named():
    candidate = Net()
    candidate.conv.weight.requires_grad_(False)
    report = verify(candidate, Net(), input_size=SIZE)
    assert report.bit_exact, str(report)
    assert report.frozen_candidate == ["conv.weight"] and "conv.weight" in str(report)
    assert not candidate.conv.weight.requires_grad
    broken = Net(eps=1e-3)
    broken.conv.weight.requires_grad_(False)
    assert verify(broken, Net(), input_size=SIZE).first_divergence == "bn"


def test_timm_resnet18_with_a_frozen_convolution_is_timms_resnet18():
    """The issue's case: one frozen convolution used to read NOT EQUIVALENT, blamed on conv1."""
    import timm

    model = timm.create_model("resnet18")
    model.layer1[0].conv1.weight.requires_grad_(False)
    report = verify(model, "timm:resnet18", input_size=(2, 3, 32, 32), wide_input_scale=None)
    assert report.equivalent and report.bit_exact, str(report)
    assert report.frozen_candidate == ["layer1.0.conv1.weight"]


# -- outputs ------------------------------------------------------------------------------------------

class Returns(Net):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x):
        logits = super().forward(x)
        features = x.mean((2, 3))
        if self.kind == "tuple":
            return features, logits
        if self.kind == "dict":
            return {"features": features, "logits": logits}
        return ImageClassifierOutput(logits=logits, hidden_states=(features,))


@pytest.mark.parametrize("kind, output, said", [
    ("tuple", 1, "tensor 1 of 2 (tuple)"),
    ("dict", None, "'logits' (dict)"),
    ("hf", None, "'logits' (ImageClassifierOutput)"),
])
def test_the_compared_output_is_chosen_and_said(kind, output, said):
    report = verify(Returns(kind), Net(), input_size=SIZE, output=output)
    assert report.equivalent, str(report)
    assert report.outputs[0]["what"] == said and said in str(report)
    if kind != "hf":  # the features are not the reference's logits
        wrong = verify(Returns(kind), Net(), input_size=SIZE, output=0 if kind == "tuple" else "features")
        assert not wrong.equivalent


class ReturnsFeaturesFirst(Net):
    """A dict without ``logits``, the features first: compared on its first tensor, which is not the logits."""

    def forward(self, x):
        return {"feat": x.mean((2, 3)), "out": super().forward(x)}


def test_the_first_of_several_outputs_is_named_and_a_matching_other_one_suggested():
    report = verify(ReturnsFeaturesFirst(), Net(), input_size=SIZE)
    assert not report.equivalent and report.outputs[0]["what"] == "'feat', the first of 2 tensors (dict)"
    assert "the candidate also returns 'out' of the reference output's shape [2, 4]: output='out' compares it" \
        in report.notes, str(report)
    assert verify(ReturnsFeaturesFirst(), Net(), input_size=SIZE, output="out").bit_exact


class Squeezes(Net):
    """``squeeze()`` where ``flatten(1)`` belongs: right on a batch, a single sample's batch dimension dropped."""

    def forward(self, x):
        return super().forward(x).squeeze()


def test_an_output_of_another_shape_differs_even_holding_the_same_numbers():
    report = verify(Squeezes(), Net(), input_size=SIZE)
    assert not report.equivalent and not report.levels["eval"].holds, str(report)
    assert report.checks["eval output"].bit_exact  # batch 2: the same shape
    assert not report.checks["eval output, first sample x8"].ok(report.rtol)
    assert ("the model output has shape [4] where the reference's has [1, 4]: dimensions of size 1 dropped or "
            "added") in report.levels["eval"].detail
    assert not report.float32["eval output, first sample x8"].bit_exact


class Flattens(Net):
    def forward(self, x):
        return super().forward(x).reshape(-1)


def test_an_output_of_the_same_numbers_arranged_otherwise_differs():
    report = verify(Flattens(), Net(), input_size=SIZE)
    assert not report.levels["eval"].holds, str(report)
    assert ("the model output has shape [8] where the reference's has [2, 4]: the same number of values arranged "
            "otherwise") in report.levels["eval"].detail


def test_a_missing_output_field_is_a_verify_error():
    with pytest.raises(VerifyError, match="output='scores'"):
        verify(Returns("dict"), Net(), input_size=SIZE, output="scores")


def test_an_output_field_that_chooses_nothing_is_said():
    """Both models return one tensor: ``output=`` names nothing, and the report says so rather than ignore it."""
    report = verify(Net(), Net(), input_size=SIZE, output="scores")
    assert report.bit_exact
    assert "output='scores' chooses nothing: both models return one tensor, and it is compared" in report.notes
    assert not any("chooses nothing" in n for n in verify(Returns("dict"), Net(), input_size=SIZE).notes)


@pytest.mark.parametrize("keywords, message", [
    (dict(input_size="2,3,8,8"), "input_size must be positive integers"),
    (dict(input_size=(2, 3, 8.5, 8)), "input_size must be positive integers"),  # never rounded
    (dict(input_size=(2, 3, 0, 8)), "input_size must be positive integers"),
    (dict(rtol=-1e-5), "rtol must be a positive number"),
    (dict(rtol=float("nan")), "rtol must be a positive number"),
    (dict(rtol="1e-5"), "rtol must be a positive number"),
    (dict(seed="0"), "seed must be an integer"),
    (dict(wide_input_scale=0.0), "wide_input_scale must be a positive number"),
    (dict(reference_kwargs=[("drop_rate", 0.0)]), "reference_kwargs must be a mapping"),
    (dict(reference_kwargs={"drop_rate": 0.0}), "the reference given is a module"),
    (dict(output=1.5), "output must be a field name, a key or an index"),
    (dict(train="no"), "train must be True or False"),
])
def test_a_bad_argument_is_a_one_line_error_before_anything_runs(keywords, message):
    keywords.setdefault("input_size", SIZE)
    with pytest.raises(VerifyError, match=message) as caught:
        verify(Net(), Net(), **keywords)
    assert "\n" not in str(caught.value)


def test_cli_bad_rtol_is_exit_2(models, capsys):
    assert main([f"{models}:Net", "--against", f"{models}:Net", "--input-size", "8", "--rtol", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: rtol must be a positive number")


# -- deployment artifacts: a torch.export program, an fx graph; TorchScript said ----------------------

def _exported(model: nn.Module, dynamic: bool = True) -> torch.export.ExportedProgram:
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic else None
    return torch.export.export(model.eval(), (torch.randn(SIZE),), dynamic_shapes=shapes)


@pytest.mark.parametrize("dynamic", [True, False], ids=["any-batch", "its-batch-alone"])
@pytest.mark.parametrize("as_module", [False, True], ids=["program", "module"])
def test_a_torch_export_program_is_verified_in_the_mode_it_was_exported_in(dynamic, as_module):
    """Its weights sit in modules without a forward, its operators are ATen's; its train() raises, so the train step
    and the dropout rates do not apply; exported for one batch size, it runs on the whole batch."""
    program = _exported(Net(drop=nn.Dropout(0.2)), dynamic)
    report = verify(program.module() if as_module else program, Net(), input_size=SIZE)
    assert report.bit_exact, str(report)
    assert set(report.layers["candidate"]) == {"conv", "bn", "mix", "fc"}  # named by the modules holding them
    for level in ("train step", "stochastic configuration"):
        assert report.levels[level].holds is None
        assert "train() raises NotImplementedError" in report.levels[level].detail
    assert any(n.startswith("the candidate fails on a single sample") for n in report.notes) is not dynamic


def test_a_mistake_in_a_torch_export_program_is_caught_where_it_lives():
    report = verify(_exported(Net(eps=1e-3)), Net(), input_size=SIZE)
    assert not report.equivalent and report.first_divergence == "bn", str(report)


def test_an_fx_graph_module_is_verified_like_the_model_it_traces():
    assert verify(torch.fx.symbolic_trace(Net()), Net(), input_size=SIZE).bit_exact
    report = verify(torch.fx.symbolic_trace(Net(eps=1e-3)), Net(), input_size=SIZE)
    assert not report.equivalent and report.first_divergence == "bn", str(report)


class LockedForward(nn.Module):
    """A forward set on the instance whose closure holds what cannot be copied (a lock), and maybe the model's own
    module too (as a ``torch.export`` program's guard function holds a context variable)."""

    def __init__(self, holds_the_model: bool) -> None:
        super().__init__()
        self.net = Net()
        held = {"lock": threading.Lock(), "net": self.net if holds_the_model else None}

        def forward(x):
            with held["lock"]:
                return self.net(x)

        self.forward = forward


def test_what_a_closure_holds_and_cannot_be_copied_is_shared_only_where_it_reaches_nothing_of_the_model():
    assert verify(LockedForward(holds_the_model=False), Net(), input_size=SIZE).bit_exact
    with pytest.raises(VerifyError, match="cannot copy the candidate"):  # sharing it would run the user's model
        verify(LockedForward(holds_the_model=True), Net(), input_size=SIZE)


@pytest.mark.parametrize("make", [torch.jit.script, lambda m: torch.jit.trace(m.eval(), torch.randn(SIZE))],
                         ids=["script", "trace"])
def test_a_torchscript_model_is_a_verify_error_saying_what_to_verify_instead(make):
    with pytest.raises(VerifyError, match=r"TorchScript module .* its ONNX export"):
        verify(make(Net()), Net(), input_size=SIZE)


# -- command line ----------------------------------------------------------------------------------

@pytest.fixture
def models(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, width=4, drop=0.0):\n"
        "        super().__init__()\n"
        "        self.body = nn.Conv2d(3, width, 3, padding=1)\n"
        "        self.drop = nn.Dropout(drop)\n"
        "        self.head = nn.Linear(width, 2)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.drop(self.body(x).relu().mean((2, 3))))\n"
    )
    return path


def test_cli_passes_keyword_arguments_to_both_models(models, capsys):
    args = [f"{models}:Net", "--against", f"{models}:Net", "--input-size", "2", "3", "8", "8", "--format", "json"]
    assert main(args + ["--candidate-kwargs", '{"drop": 0.3}', "--reference-kwargs", '{"drop": 0.3}']) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["levels"]["stochastic configuration"]["holds"] is True
    assert main(args + ["--candidate-kwargs", '{"drop": 0.3}']) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION"


@pytest.mark.parametrize("size", [["2", "3", "8", "8"], ["2x3x8x8"], ["2,3,8,8"], ["2,", "3,", "8,", "8"], ["8"]])
def test_cli_input_size_as_written_here_or_in_the_atlas(models, size, capsys):
    assert main([f"{models}:Net", "--against", f"{models}:Net", "--input-size", *size, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == [2, 3, 8, 8]


@pytest.mark.parametrize("size", [["2x3x8x"], ["2", "3", "0", "8"], ["two"], ["3x8x8"], ["8x8"]])
def test_cli_bad_input_size_is_one_line_and_exit_2(models, size, capsys):
    assert main([f"{models}:Net", "--against", f"{models}:Net", "--input-size", *size]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --input-size takes") and err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    (["--candidate-kwargs", "{drop: 1}"], "--candidate-kwargs takes a JSON object"),
    (["--reference-kwargs", "[1, 2]"], "--reference-kwargs takes a JSON object"),
    (["--candidate-kwargs", '{"depth": 3}'], "unexpected keyword argument 'depth'"),
])
def test_cli_bad_keyword_arguments_are_one_line_and_exit_2(models, extra, message, capsys):
    assert main([f"{models}:Net", "--against", f"{models}:Net", "--input-size", "2", "3", "8", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_cli_exit_status_3_when_the_train_step_is_undecided(tmp_path, capsys):
    path = tmp_path / "drop_connect.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, rate=0.2):\n"
        "        super().__init__()\n"
        "        self.rates = (rate,)\n"
        "        self.body = nn.Conv2d(3, 4, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        y = self.body(x)\n"
        "        if self.training and self.rates[0]:\n"
        "            y = y * (torch.rand(y.shape[0], 1, 1, 1) >= self.rates[0]) / (1 - self.rates[0])\n"
        "        return y.mean((2, 3))\n"
    )
    args = [f"{path}:Net", "--against", f"{path}:Net", "--input-size", "2", "3", "8", "8"]
    assert main(args + ["--reference-kwargs", '{"rate": 0.0}']) == 3
    assert "SAME EVAL FUNCTION, TRAIN STEP UNDECIDED" in capsys.readouterr().out
    assert main(args + ["--reference-kwargs", '{"rate": 0.0}', "--candidate-kwargs", '{"rate": 0.0}']) == 0


def test_cli_bad_reference_keyword_for_a_library_spec_is_exit_2(models, capsys):
    assert main([f"{models}:Net", "--against", "timm:resnet18", "--reference-kwargs", '{"no_such_option": 1}']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot build timm:resnet18" in err and "no_such_option" in err


def test_a_compiled_model_is_verified_as_the_module_it_compiles():
    """``torch.compile`` wraps a module whose verification hooks it would compile too: the module inside is
    verified (never run compiled), and the report says so."""
    model = Net()
    report = verify(torch.compile(model), Net(), input_size=SIZE)
    assert report.bit_exact, str(report)
    assert any("torch.compile wrapper" in note for note in report.notes)


def test_a_forward_set_on_the_instance_runs_on_the_copy():
    """``net.forward = lambda x: ...net...``: the copy's forward must call the copy's modules."""
    candidate = Net()
    candidate.forward = lambda x: candidate.fc(candidate.act(candidate.bn(candidate.conv(x))).mean((2, 3)))
    reference = Net()
    reference.forward = lambda x: reference.fc(reference.act(reference.bn(reference.conv(x))).mean((2, 3)))
    del reference.mix, candidate.mix
    snapshot = state_snapshot(candidate)
    report = verify(candidate, reference, input_size=SIZE)
    assert report.bit_exact, str(report)
    assert_state_unchanged(candidate, snapshot)
    candidate.bn.eps = 1e-3
    assert verify(candidate, reference, input_size=SIZE).first_divergence == "bn"


class NotFinite(nn.Module):
    """A model whose output is NaN whatever its weights (the log of a negative number)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x.mean((2, 3))) + torch.log(-torch.ones(1))


def test_a_reference_computing_nan_decides_nothing():
    """Checked against itself, a model whose output is NaN would read 'differs' (NaN equals nothing): the
    reference's own numbers are not finite, so each level is undecided, saying why and what would decide it;
    a candidate computing NaN against a finite reference still differs."""
    report = verify(NotFinite(), NotFinite(), input_size=(2, 3, 8, 8))
    assert report.verdict == "UNDECIDED" and report.undecided and not report.equivalent, str(report)
    for name in ("eval", "train step"):
        assert report.levels[name].state == "undecided" and "not finite" in report.levels[name].detail
    finite = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    against_finite = verify(NotFinite(), finite, input_size=(2, 3, 8, 8))
    assert against_finite.verdict == "NOT EQUIVALENT", str(against_finite)
