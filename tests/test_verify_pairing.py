"""``repro.verify`` pairs what the dataflow decides (issue 19, item 3).

Each test builds two small implementations of one network that differ only in how they are
written (padding outside or inside the convolution, a Linear on a flattened map or a KxK
convolution, a bare Parameter or a module, branches in another order) and checks that they pair
and verify; and that a real mistake in the same place is still caught, at the module where it lives.
"""

from __future__ import annotations

import collections
import math
import warnings
from typing import Callable

from torch.utils._pytree import tree_flatten

import pytest
import torch
import timm
from timm.layers import BatchNormAct2d
import torch.nn.functional as F
import torchvision
from torch import nn

from repro.verify import PairingError, VerifyError, verify
from repro.verify import _run
from repro.verify._pairing import VectorsAlone, _describe_ties
from repro.verify._trace import INDEXING_INVISIBLE, _tensors, indexing_visible, python_body, trace

# Attention splits q, k and v by indexing (`qkv[0]`), relative-position tables are looked up by `table[index]`:
# where this torch hides single-index indexing from the trace (torch 2.2), verify says so instead of pairing them.
NEEDS_INDEXING = pytest.mark.skipif(not indexing_visible(), reason=INDEXING_INVISIBLE)

SMALL = (2, 3, 8, 8)


# -- padding done by a separate op or module is part of the convolution it feeds -----------------

def _same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "same": computed from the input size, the extra row and column at the bottom and right."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + kernel - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + kernel - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class Conv2dSame(nn.Conv2d):
    """Pads inside the convolution, dynamically (as timm's ``Conv2dSame`` does)."""

    def forward(self, x):
        return F.conv2d(_same_padding(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias, self.stride)


class PadsInside(nn.Module):
    """A "same" stride-2 convolution padded inside, then a 3x3 one with ``padding=1``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = Conv2dSame(3, 8, 3, 2)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.c2(self.c1(x).relu()).mean((2, 3)))


class PadsOutside(nn.Module):
    """The same network padded by an ``nn.ZeroPad2d`` module (asymmetric) and by ``F.pad`` (symmetric)."""

    def __init__(self, pad: tuple[int, int, int, int] = (0, 1, 0, 1), value: float = 0.0) -> None:
        super().__init__()
        self.pad = nn.ConstantPad2d(pad, value) if value else nn.ZeroPad2d(pad)
        self.down = nn.Conv2d(3, 8, 3, 2)
        self.conv = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.down(self.pad(x)).relu()
        return self.head(self.conv(F.pad(y, (1, 1, 1, 1))).mean((2, 3)))


@pytest.mark.parametrize("candidate, reference", [
    pytest.param(PadsOutside, PadsInside, id="candidate-pads-outside"),
    pytest.param(PadsInside, PadsOutside, id="reference-pads-outside"),
])
def test_padding_outside_the_convolution_is_part_of_it(candidate, reference):
    report = verify(candidate(), reference(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert report.layers["input_max_rel"].eq(0).all()  # each convolution's input is compared unpadded


@pytest.mark.parametrize("candidate, where", [
    pytest.param(lambda: PadsOutside(pad=(1, 1, 1, 1)), "down", id="symmetric-where-same-pads-bottom-right"),
    pytest.param(lambda: PadsOutside(value=1.0), "down", id="pads-with-ones"),
])
def test_wrong_padding_is_caught_at_the_convolution_it_feeds(candidate, where):
    report = verify(candidate(), PadsInside(), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == where, str(report)
    assert "while its input agrees" in report.divergence_detail


@pytest.mark.parametrize("candidate, words", [
    pytest.param(lambda: PadsOutside(pad=(1, 1, 1, 1)),
                 "[settings of down vs the reference's c1: Conv2d vs Conv2dSame; padding in all 1 on every side vs "
                 "top 0, bottom 1, left 0, right 1 (the candidate's: F.pad (1, 1, 1, 1) in pad, then padding (0, 0); "
                 "the reference's: F.pad (0, 1, 0, 1) inside c1, then padding (0, 0))]", id="zeros"),
    pytest.param(lambda: PadsOutside(value=1.0), "padding in all not by zeros alone vs top 0, bottom 1, left 0, "
                 "right 1 (the "
                 "candidate's: F.pad (0, 1, 0, 1) value 1 in pad, then padding (0, 0);", id="ones"),
])
def test_the_padding_of_a_convolution_fed_by_a_pad_is_shown_in_all(candidate, words):
    """Its ``padding`` setting is only a part of its padding: "padding (0, 0) vs (0, 0)" would hide the difference."""
    assert words in verify(candidate(), PadsInside(), input_size=SMALL).divergence_detail


class Doubled(nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


def test_padding_that_adds_up_to_the_same_is_not_named_as_a_difference():
    """``F.pad`` by 1 then ``padding=0`` is ``padding=1``: a divergence at that convolution names its class alone."""
    candidate = PadsOutside()
    candidate.conv = Doubled(8, 8, 3)
    report = verify(candidate, PadsInside(), input_size=SMALL)
    assert report.first_divergence == "conv", str(report)
    assert report.divergence_detail.endswith("[settings of conv vs the reference's c2: Doubled vs Conv2d]")


# -- a module holding no tensors where a divergence is located: its partner by the dataflow ----------

class Stem(nn.Module):
    """A convolution, an activation, a pooling; ``extra`` steps (an ``nn.Identity`` computes nothing) between."""

    def __init__(self, act: nn.Module, pool: nn.Module, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.extra = extra or nn.Identity()
        self.act, self.pool = act, pool
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.extra(self.conv(x)))).mean((2, 3)))


class OtherStem(nn.Module):
    """The same network, its steps named otherwise and without the ``nn.Identity``."""

    def __init__(self, act: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu, self.maxpool = act, pool
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.maxpool(self.relu(self.stem(x))).mean((2, 3)))


@pytest.mark.parametrize("candidate, where, words", [
    pytest.param(OtherStem(nn.ReLU6(), nn.MaxPool2d(3, 2, 1)), "relu", "[settings of relu vs the reference's act: "
                 "ReLU6 vs ReLU]", id="activation"),
    pytest.param(OtherStem(nn.ReLU(), nn.MaxPool2d(3, 2, 0)), "maxpool", "[settings of maxpool vs the reference's "
                 "pool: padding 0 vs 1]", id="pooling"),
])
def test_a_divergence_at_a_module_without_tensors_names_its_partners_settings(candidate, where, words):
    report = verify(candidate, Stem(nn.ReLU(), nn.MaxPool2d(3, 2, 1)), input_size=SMALL)
    assert report.first_divergence == where, str(report)
    assert report.divergence_detail.endswith(words)


def test_steps_that_are_not_one_for_one_name_no_partner():
    """Two steps of the reference (a Hardtanh, then a ReLU) where the candidate has one: which is its partner is not
    known, and none is named."""
    reference = Stem(nn.ReLU(), nn.MaxPool2d(3, 2, 1), extra=nn.Hardtanh(-8.0, 8.0))
    report = verify(OtherStem(nn.ReLU6(), nn.MaxPool2d(3, 2, 1)), reference, input_size=SMALL)
    assert report.first_divergence == "relu", str(report)
    assert "[settings" not in report.divergence_detail


class NoStep(nn.Module):
    """A convolution and its BatchNorm, then ``steps`` (modules, or a function) before the next convolution."""

    def __init__(self, *steps: nn.Module, function: Callable | None = None) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.steps, self.function = nn.Sequential(*steps), function
        self.conv2, self.fc = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.Linear(8, 2)

    def forward(self, x):
        y = self.steps(self.bn(self.conv(x)))
        return self.fc(self.conv2(self.function(y) if self.function else y).mean((2, 3)))


@pytest.mark.parametrize("candidate, words", [
    pytest.param(NoStep(), "the candidate's: none; the reference's: steps.0 (ReLU), steps.1 (MaxPool2d)",
                 id="both-missing"),
    pytest.param(NoStep(nn.ReLU()), "the candidate's: steps.0 (ReLU); the reference's: steps.0 (ReLU), steps.1 "
                 "(MaxPool2d)", id="pooling-missing"),
    pytest.param(NoStep(function=F.relu), "the candidate's: none; the reference's: steps.0 (ReLU), steps.1 "
                 "(MaxPool2d)", id="activation-as-a-function"),
])
def test_a_step_without_tensors_one_model_lacks_is_named(candidate, words):
    """A ReLU or a max-pool the reference runs between two paired modules and the candidate does not (a CIFAR
    ResNet's stem without torchvision's max-pool; a DenseNet transition without its ReLU): the steps each runs there
    are listed, whichever module the divergence is located at."""
    report = verify(candidate, NoStep(nn.ReLU(), nn.MaxPool2d(3, 2, 1)), input_size=SMALL, train=False)
    assert not report.equivalent, str(report)
    assert (f"[the modules computing from the output of bn alone (a step written as a function is not listed): "
            f"{words}]") in report.divergence_detail, report.divergence_detail
    same = verify(NoStep(nn.ReLU(), nn.MaxPool2d(3, 2, 0)), NoStep(nn.ReLU(), nn.MaxPool2d(3, 2, 1)),
                  input_size=SMALL, train=False)
    assert "the modules computing from" not in same.divergence_detail  # the same steps: their settings are said


class KernelStem(nn.Module):
    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.fc = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.conv2(self.bn1(self.conv1(x)).relu()).mean((2, 3)))


def test_a_module_in_the_place_of_another_with_other_shapes_is_named_with_it():
    """A CIFAR ResNet's 3x3 stem against the ImageNet 7x7 one: not only "no counterpart", but what stands there."""
    report = verify(KernelStem(3), KernelStem(7), input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED" and report.first_divergence == "conv1", str(report)
    assert ("the candidate's conv1 (Conv2d: weight [8, 3, 3, 3]) stands where the reference's conv1 (Conv2d: weight "
            "[8, 3, 7, 7]) does (both feed bn1), with tensors of other shapes") in report.divergence_detail
    assert str(report).splitlines()[1] == "decided by the structures alone (nothing compared numerically)"


class FunctionalReluStem(OtherStem):
    """The activation as a function, a flattening as a module: as many module steps as ``Stem``, shifted by one."""

    def __init__(self) -> None:
        super().__init__(nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.relu, self.flatten = None, nn.Flatten()
        self.head = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        return self.head(self.flatten(self.maxpool(F.relu(self.stem(x)))))


class FlattenedStem(Stem):
    def __init__(self, act: nn.Module) -> None:
        super().__init__(act, nn.MaxPool2d(3, 2, 1))
        self.fc = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.extra(self.conv(x)))).flatten(1))


def test_steps_shifted_by_one_written_as_a_function_name_no_partner():
    """As many module steps on each side, but not the same ones: shapes in and out tell (no 'LeakyReLU vs
    MaxPool2d')."""
    report = verify(FlattenedStem(nn.LeakyReLU(0.2)), FunctionalReluStem(), input_size=SMALL)
    assert report.first_divergence == "act", str(report)
    assert "[settings" not in report.divergence_detail


def test_padding_that_pads_alike_otherwise_than_by_zeros_is_not_named():
    """Reflect padding on both sides: nothing about the padding differs, whatever else does."""
    candidate, reference = PadsInside(), PadsInside()
    candidate.c2 = Doubled(8, 8, 3, padding=1, padding_mode="reflect")
    reference.c2 = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
    report = verify(candidate, reference, input_size=SMALL)
    assert report.divergence_detail.endswith("[settings of c2 vs the reference's c2: Doubled vs Conv2d]"), str(report)


class Crops(PadsInside):
    """Crops the map by 1 before ``c2`` (``F.pad`` by -1): not padding, which its ``padding=1`` must not hide."""

    def forward(self, x):
        return self.fc(self.c2(F.pad(self.c1(x).relu(), (-1, -1, -1, -1))).mean((2, 3)))


def test_a_crop_before_a_convolution_is_not_counted_as_padding():
    candidate = Crops()
    candidate.c2 = nn.Conv2d(8, 8, 3, padding=2)
    reference = PadsInside()
    reference.c2 = nn.Conv2d(8, 8, 3, padding=1)
    report = verify(candidate, reference, input_size=SMALL)
    assert report.first_divergence == "c2", str(report)
    assert "padding in all not by zeros alone vs 1 on every side (the candidate's: F.pad (-1, -1, -1, -1) in " \
           "(root), then padding (2, 2); the reference's: padding (1, 1))" in report.divergence_detail


# -- a permute done outside the module it feeds is part of it, as a pad is ---------------------------

class ChannelsFirstNorm(nn.LayerNorm):
    """timm's ``LayerNorm2d``: a norm over channels that permutes them last inside the module."""

    def forward(self, x):
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class NormPermutedInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = ChannelsFirstNorm(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)))


class NormPermutedOutside(nn.Module):
    """The same as an exported graph writes it: Transpose, LayerNormalization, Transpose (``swapped``: the
    map's height and width swapped after the norm, a layout mistake)."""

    def __init__(self, swapped: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.ln = nn.LayerNorm(4)
        self.out = nn.Conv2d(4, 2, 1)
        self.swapped = swapped

    def forward(self, x):
        y = self.ln(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out(y.transpose(2, 3) if self.swapped else y)


def test_a_norm_permuted_outside_pairs_with_one_permuted_inside():
    report = verify(NormPermutedOutside(), NormPermutedInside(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert dict(zip(report.layers["candidate"], report.layers["reference"], strict=True)) == {
        "stem": "conv", "ln": "norm", "out": "head"}


def test_a_wrong_permute_is_caught_at_the_module_it_feeds():
    report = verify(NormPermutedOutside(swapped=True), NormPermutedInside(), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "out" and "while its input agrees" in report.divergence_detail, str(report)


class Scale(nn.Module):
    """A layer scale in a module called without data, returning it reshaped (as an ONNX graph does)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(4) + 0.5)

    def forward(self):
        return self.gamma.reshape(1, -1, 1, 1)


class ScaledByAModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = Scale()

    def forward(self, x):
        return self.conv(x) * self.scale()


class ScaledByAParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x):
        return self.conv(x) * self.gamma.reshape(1, -1, 1, 1)


def test_a_module_called_without_data_is_called_where_its_result_meets_data():
    report = verify(ScaledByAModule(), ScaledByAParameter(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert dict(zip(report.layers["candidate"], report.layers["reference"], strict=True)) == {
        "conv": "conv", "scale": "(root)"}


# -- reshapes of the same numbers ----------------------------------------------------------------

class FlattenHead(nn.Module):
    """A Linear on a flattened 4x2x2 map (torchvision's VGG classifier)."""

    def __init__(self, nhwc: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.classifier = nn.Linear(16, 6)
        self.nhwc = nhwc

    def forward(self, x):
        y = self.features(x).relu()
        return self.classifier((y.permute(0, 2, 3, 1) if self.nhwc else y).flatten(1))


class ConvHead(nn.Module):
    """The same as a 2x2 convolution (timm's VGG ``pre_logits``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc = nn.Conv2d(4, 6, 2)

    def forward(self, x):
        return self.fc(self.stem(x).relu()).flatten(1)


def test_linear_on_a_flattened_map_pairs_with_a_kxk_convolution():
    report = verify(FlattenHead(), ConvHead(), input_size=SMALL)
    assert report.equivalent, str(report)
    assert dict(zip(report.layers["candidate"], report.layers["reference"], strict=True)) == {
        "features": "stem", "classifier": "fc"}
    assert any("classifier.weight [6, 16] <- fc.weight [6, 4, 2, 2]" in note for note in report.notes), report.notes


def test_flattening_in_another_order_is_caught_at_the_linear():
    report = verify(FlattenHead(nhwc=True), ConvHead(), input_size=SMALL)
    assert not report.equivalent
    assert report.layers.set_index("candidate").loc["classifier", "input_max_rel"] > 0


class ScaledBlock(nn.Module):
    """A residual block whose branch is scaled by a bare ``[C]`` or ``[C, 1, 1]`` Parameter of the block."""

    def __init__(self, channels: int, broadcast_shape: bool, scale_after_add: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        shape = (channels, 1, 1) if broadcast_shape else (channels,)
        self.gamma = nn.Parameter(torch.full(shape, 0.5))
        self.broadcast_shape, self.scale_after_add = broadcast_shape, scale_after_add

    def scale(self, x):
        return x * self.gamma if self.broadcast_shape else x.mul(self.gamma.reshape(1, -1, 1, 1))

    def forward(self, x):
        if self.scale_after_add:
            return self.scale(x + self.conv(x))
        return x + self.scale(self.conv(x))


class ScaledNet(nn.Module):
    def __init__(self, broadcast_shape: bool, scale_after_add: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(*[ScaledBlock(4, broadcast_shape, scale_after_add) for _ in range(2)])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_channel_scale_pairs_with_its_broadcast_shape():
    report = verify(ScaledNet(broadcast_shape=True), ScaledNet(broadcast_shape=False), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert "blocks.0.gamma [4, 1, 1] <- blocks.0.gamma [4]" in report.notes[0]


def test_scale_in_the_wrong_place_is_caught_at_its_block():
    report = verify(ScaledNet(broadcast_shape=True, scale_after_add=True), ScaledNet(broadcast_shape=False),
                    input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "blocks.0", str(report)


class ChannelsLastBlock(nn.Module):
    """A ConvNeXt-like block: depthwise conv, then a Linear in channels-last layout and a bare ``[C]`` layer scale,
    applied before permuting back (as Hugging Face's ConvNeXt does) or after (as timm's does)."""

    def __init__(self, channels: int, scale_channels_last: bool, scale: bool = True) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.fc = nn.Linear(channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))
        self.scale_channels_last, self.scale = scale_channels_last, scale

    def forward(self, x):
        y = self.fc(self.dw(x).permute(0, 2, 3, 1))
        if self.scale and self.scale_channels_last:
            y = self.gamma * y
        y = y.permute(0, 3, 1, 2)
        if self.scale and not self.scale_channels_last:
            y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return x + y


class ChannelsLastNet(nn.Module):
    def __init__(self, scale_channels_last: bool, scale: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = ChannelsLastBlock(4, scale_channels_last, scale)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def test_a_layer_scale_applied_in_another_layout_is_compared_in_the_matching_order():
    report = verify(ChannelsLastNet(scale_channels_last=True), ChannelsLastNet(scale_channels_last=False),
                    input_size=SMALL)
    assert report.bit_exact, str(report)


def test_a_missing_layer_scale_is_still_caught_across_layouts():
    report = verify(ChannelsLastNet(scale_channels_last=True, scale=False), ChannelsLastNet(scale_channels_last=False),
                    input_size=SMALL)
    assert not report.equivalent and report.first_divergence == "block.fc", str(report)
    assert "the reference's block (ChannelsLastBlock: gamma [4]) has no counterpart" in report.divergence_detail


# -- ties the dataflow decides -------------------------------------------------------------------

class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, eps: float = 1e-5) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout, eps=eps))


class Concat(nn.Module):
    """Two branches of one shape filling the two halves of a concatenation (an Inception block)."""

    def __init__(self, right_first: bool = False, right_eps: float = 1e-5) -> None:
        super().__init__()
        self.left, self.right = ConvBN(3, 4), ConvBN(3, 4, eps=right_eps)
        self.fuse = nn.Conv2d(8, 5, 1)
        self.right_first = right_first

    def forward(self, x):
        if self.right_first:  # runs (and defines) the branches in the other order; the same concatenation
            right = self.right(x).relu()
            left = self.left(x).relu()
        else:
            left = self.left(x).relu()
            right = self.right(x).relu()
        return self.fuse(torch.cat([left, right], 1)).mean((2, 3))


def test_branches_pair_by_their_concatenation_slot():
    report = verify(Concat(right_first=True), Concat(), input_size=SMALL)
    assert report.bit_exact, str(report)
    pairs = dict(zip(report.layers["candidate"], report.layers["reference"], strict=True))
    assert pairs["left.0"] == "left.0" and pairs["right.0"] == "right.0"
    assert any("ties settled by the dataflow" in note for note in report.notes)


def test_mistake_in_one_of_two_concatenated_branches_is_caught_in_that_branch():
    report = verify(Concat(right_first=True, right_eps=1e-2), Concat(), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "right.1", str(report)


class Bottleneck(nn.Module):
    """A block whose shortcut 1x1 and first 1x1 have one shape (RegNet): only what follows tells them apart."""

    def __init__(self, shortcut_first: bool = False, shortcut_eps: float = 1e-5) -> None:
        super().__init__()
        self.shortcut_first = shortcut_first
        self.reduce, self.mix = ConvBN(4, 6), ConvBN(6, 6, kernel=3)
        self.shortcut = ConvBN(4, 6, eps=shortcut_eps)

    def forward(self, x):
        if self.shortcut_first:
            s = self.shortcut(x)
            return (s + self.mix(self.reduce(x).relu())).relu()
        return (self.mix(self.reduce(x).relu()) + self.shortcut(x)).relu()


class TwoBlocks(nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.stem = ConvBN(3, 4, kernel=3)
        self.block = Bottleneck(**kwargs)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.block(self.stem(x).relu()).mean((2, 3)))


def test_shortcut_and_first_convolution_of_one_shape_pair_by_what_follows():
    report = verify(TwoBlocks(shortcut_first=True), TwoBlocks(), input_size=SMALL)
    assert report.bit_exact, str(report)
    pairs = dict(zip(report.layers["candidate"], report.layers["reference"], strict=True))
    assert pairs["block.shortcut.0"] == "block.shortcut.0" and pairs["block.reduce.0"] == "block.reduce.0"


def test_mistake_in_the_shortcut_is_caught_in_the_shortcut():
    report = verify(TwoBlocks(shortcut_first=True, shortcut_eps=1e-2), TwoBlocks(), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "block.shortcut.1", str(report)


# -- opaque regions: TorchScript inside the model ------------------------------------------------

def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _wrong_swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(2 * x)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, and still in use
    scripted_swish, scripted_wrong_swish = torch.jit.script(_swish), torch.jit.script(_wrong_swish)


class ScriptedSwish(nn.Module):
    def __init__(self, function=scripted_swish) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class ConvActConv(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.first, self.act, self.second = nn.Conv2d(3, 4, 3, padding=1), act, nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.second(self.act(self.first(x))).mean((2, 3)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("act, traced", [
    pytest.param(lambda: ScriptedSwish(), "scripted function", id="scripted-function"),
    pytest.param(lambda: torch.jit.script(nn.SiLU()), "scripted module", id="scripted-module"),
])
def test_scripted_activation_does_not_cut_the_dataflow(act, traced):
    report = verify(ConvActConv(act()), ConvActConv(nn.SiLU()), input_size=SMALL)
    assert report.equivalent and report.structure_matches, str(report)
    assert any(traced in note for note in report.notes), report.notes


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_wrong_scripted_activation_is_caught_there():
    report = verify(ConvActConv(ScriptedSwish(scripted_wrong_swish)), ConvActConv(nn.SiLU()), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "act", str(report)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_module_with_parameters_is_reported_as_opaque_by_name():
    candidate = ConvActConv(nn.SiLU())
    candidate.second = torch.jit.script(nn.Conv2d(4, 4, 3, padding=1))
    report = verify(candidate, ConvActConv(nn.SiLU()), input_size=SMALL)
    assert not report.equivalent and not report.structure_matches
    assert any("the scripted module second (Conv2d) is one opaque operation" in line for line in report.structure), \
        str(report)


# -- tensors used outside a module's usual slots --------------------------------------------------

class Tokens(nn.Module):
    """Patches, a class token and a position embedding as bare Parameters of the model (timm's ViT)."""

    def __init__(self, token_last: bool = False) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 6, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 6))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, 6))
        self.head = nn.Linear(6, 2)
        self.token_last = token_last

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        token = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([x, token] if self.token_last else [token, x], dim=1) + self.pos_embed
        return self.head(x[:, -1 if self.token_last else 0])


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, 6))
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        return self.dropout(x + self.pos_embedding)


class TokensElsewhere(nn.Module):
    """The same with the position embedding in a module of its own and a functional head (torchvision's ViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.randn(1, 1, 6))
        self.encoder = Encoder()
        self.heads = nn.Linear(6, 2)
        self.conv_proj = nn.Conv2d(3, 6, 4, stride=4)

    def forward(self, x):
        x = self.conv_proj(x).reshape(x.shape[0], 6, -1).permute(0, 2, 1)
        x = self.encoder(torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1))
        return F.linear(x[:, 0], self.heads.weight, self.heads.bias)


class TwoTokens(nn.Module):
    """Two tokens of one shape concatenated in one ``torch.cat`` (DeiT's class and distillation tokens), declared
    in either order under any names: which is which is their slot in the concatenation."""

    def __init__(self, names: tuple[str, str] = ("cls_token", "dist_token"), declared_reversed: bool = False) -> None:
        super().__init__()
        self.names = names
        for name in names[::-1] if declared_reversed else names:
            self.register_parameter(name, nn.Parameter(torch.randn(1, 1, 6)))
        self.proj, self.head = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        first, second = (getattr(self, n).expand(x.shape[0], -1, -1) for n in self.names)
        tokens = torch.cat([first, second, tokens], 1)
        return self.head(tokens[:, 0] + 2 * tokens[:, 1])


def test_tensors_in_one_concatenation_pair_by_their_slot():
    assert verify(TwoTokens(), TwoTokens(("tok_a", "tok_b"), declared_reversed=True), input_size=SMALL).bit_exact
    swapped = verify(TwoTokens(("dist_token", "cls_token")), TwoTokens(), input_size=SMALL)
    assert swapped.bit_exact  # the tensors follow their slots: named otherwise, the same function


def test_bare_parameters_pair_by_where_they_are_used():
    report = verify(TokensElsewhere(), Tokens(), input_size=SMALL)
    assert report.bit_exact, str(report)
    pairs = {(c, r) for c, r in zip(report.layers["candidate"], report.layers["reference"], strict=True)}
    # The reference's root holds both tokens, used in two places: two parts, the class token's named by it.
    assert pairs == {("conv_proj", "patch"), ("(root)", "(root)[cls_token]"), ("encoder", "(root)[pos_embed]"),
                     ("heads", "head")}
    ported = {p.target_key: p.source_key for p in report.port.pairs}
    assert ported["class_token"] == "cls_token" and ported["encoder.pos_embedding"] == "pos_embed"


def test_class_token_in_the_wrong_place_is_caught_where_it_is_used():
    report = verify(Tokens(token_last=True), Tokens(), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "(root)[cls_token]", str(report)
    assert "the output of (root)[cls_token]" in report.divergence_detail


# -- a network written with functional calls on tensors of its own -----------------------------------

class ModuleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        return self.fc(self.bn2(self.conv2(x)).relu().mean((2, 3)))


class FunctionalNet(nn.Module):
    """ModuleNet as F.conv2d / F.batch_norm / F.linear calls: parameters in a ``ParameterDict``, a ``ParameterList``
    or on the model itself, BatchNorm statistics and counts registered on the model (a MAML-style network)."""

    def __init__(self, holder: str, eps2: float = 1e-5, stride2: int = 2, ops: str = "F", counts: bool = True) -> None:
        super().__init__()
        self.holder, self.eps2, self.stride2, self.ops, self.counts = holder, eps2, stride2, ops, counts
        shapes = {"conv1": (8, 3, 3, 3), "bn1_weight": (8,), "bn1_bias": (8,), "conv2": (8, 8, 3, 3),
                  "bn2_weight": (8,), "bn2_bias": (8,), "fc_weight": (4, 8), "fc_bias": (4,)}
        self.order = list(shapes)
        made = {k: nn.Parameter(torch.randn(shape)) for k, shape in shapes.items()}
        if holder == "dict":
            self.params = nn.ParameterDict(made)
        elif holder == "list":
            self.params = nn.ParameterList(made.values())
        else:
            for k, p in made.items():
                self.register_parameter(k, p)
        for bn in ("bn1", "bn2"):
            self.register_buffer(f"{bn}_mean", torch.zeros(8))
            self.register_buffer(f"{bn}_var", torch.ones(8))
            if counts:
                self.register_buffer(f"{bn}_count", torch.tensor(0))

    def p(self, name: str) -> torch.Tensor:
        if self.holder == "dict":
            return self.params[name]
        return self.params[self.order.index(name)] if self.holder == "list" else getattr(self, name)

    def bn(self, x, name: str, eps: float = 1e-5):
        if self.training and self.counts:
            getattr(self, f"{name}_count").add_(1)
        mean, var, weight, bias = (getattr(self, f"{name}_mean"), getattr(self, f"{name}_var"),
                                   self.p(f"{name}_weight"), self.p(f"{name}_bias"))
        if self.ops == "F":
            return F.batch_norm(x, mean, var, weight, bias, self.training, 0.1, eps)
        # torch.batch_norm and ATen's take the weight and bias before the statistics, F.batch_norm after them.
        batch_norm = torch.batch_norm if self.ops == "torch" else torch.ops.aten.batch_norm.default
        return batch_norm(x, weight, bias, mean, var, self.training, 0.1, eps, False)

    def forward(self, x):
        x = self.bn(F.conv2d(x, self.p("conv1"), padding=1), "bn1").relu()
        x = self.bn(F.conv2d(x, self.p("conv2"), stride=self.stride2, padding=1), "bn2", self.eps2).relu()
        return F.linear(x.mean((2, 3)), self.p("fc_weight"), self.p("fc_bias"))


@pytest.mark.parametrize("holder, ops", [("dict", "F"), ("list", "F"), ("model", "F"), ("dict", "torch"),
                                         ("model", "aten")])
def test_a_network_of_functional_calls_pairs_by_where_each_tensor_is_used(holder, ops):
    """Each functional call is a module of its own (its tensors split off the one holding them); a count no call
    uses goes with the statistics beside it. Its tensors pair by the argument each is passed as, by name: the
    same for ``F.batch_norm``, ``torch.batch_norm`` and the ATen operator a ``torch.export`` program calls, which
    take them in another order."""
    report = verify(FunctionalNet(holder, ops=ops), ModuleNet(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert len(report.layers) == 5 and report.port is not None and len(report.port.pairs) == 14
    assert {p.target_key: p.source_key for p in report.port.pairs}["bn2_count"] == "bn2.num_batches_tracked"


def test_a_functional_batchnorm_keeping_no_count_pairs_and_leaves_the_count_alone():
    report = verify(FunctionalNet("dict", counts=False), ModuleNet(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert ("2 counts only the reference keeps, in modules paired with the candidate's (a BatchNorm beside one "
            "written out without a count, a frozen one say; neither ported nor compared): bn1.num_batches_tracked "
            "(BatchNorm2d); bn2.num_batches_tracked (BatchNorm2d)") in report.notes, str(report)


@pytest.mark.parametrize("mistake, where", [
    (dict(eps2=1e-3), "(root)[params.bn2_weight]"),
    (dict(stride2=1), "(root)[params.conv2]"),
])
def test_a_mistake_in_a_functional_call_is_named_by_the_tensors_it_uses(mistake, where):
    report = verify(FunctionalNet("dict", **mistake), ModuleNet(), input_size=SMALL)
    assert not report.equivalent and report.first_divergence == where, str(report)


# -- an extra module is named as the extra one ----------------------------------------------------

class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.downsample = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        x = self.norm1(x).relu()
        return self.conv2(self.norm2(self.conv1(x)).relu()) + self.downsample(x)


class PreActStem(nn.Module):
    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(4) if norm else None

    def forward(self, x):
        x = self.conv(x)
        return self.norm(x).relu() if self.norm is not None else x


class PreActNet(nn.Module):
    """A pre-activation network: its first block starts with a BatchNorm, so a stem BatchNorm is one too many."""

    def __init__(self, stem_norm: bool = False) -> None:
        super().__init__()
        self.stem, self.block = PreActStem(stem_norm), PreActBlock(4, 8)
        self.norm, self.fc = nn.BatchNorm2d(8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.norm(self.block(self.stem(x))).relu().mean((2, 3)))


def test_extra_stem_norm_is_named_as_the_extra_module():
    report = verify(PreActNet(stem_norm=True), PreActNet(), input_size=SMALL)
    assert not report.equivalent and report.verdict == "STRUCTURES DIFFER, NOT COMPARED"
    assert report.levels["eval"].state == "not checked"
    assert report.first_divergence == "stem.norm", str(report)
    assert [t.split(" ")[0] for t in report.unpaired_candidate] == [
        f"stem.norm.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert report.unpaired_reference == []


class PreConv(nn.Module):
    """BatchNorm, ReLU, convolution as one module (pytorchcv's PreConvBlock): a block of two nests its norms a
    level deeper than one written flat (timm's PreActBasic)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(self.bn(x).relu())


class NestedPreActBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1, self.c2 = PreConv(channels), PreConv(channels)

    def forward(self, x):
        return self.c2(self.c1(x)) + x


class FlatPreActBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(self.norm2(self.conv1(self.norm1(x).relu())).relu()) + x


class PreActOfNesting(nn.Module):
    def __init__(self, block: type, stem_norm: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(4) if stem_norm else None
        self.block, self.head = block(4), nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        if self.stem_norm is not None:
            x = self.stem_norm(x).relu()
        return self.head(self.block(x).mean((2, 3)))


def test_extra_stem_norm_before_a_block_nested_otherwise_is_named_as_the_extra_module():
    """Both the extra stem norm and the block's first norm follow the stem; what follows them tells them apart
    (pytorchcv's preresnet18 against timm's resnetv2_18)."""
    assert verify(PreActOfNesting(NestedPreActBlock), PreActOfNesting(FlatPreActBlock), input_size=SMALL).bit_exact
    report = verify(PreActOfNesting(NestedPreActBlock, stem_norm=True), PreActOfNesting(FlatPreActBlock),
                    input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED" and report.first_divergence == "stem_norm", str(report)


def test_missing_stem_norm_is_named_in_the_reference():
    report = verify(PreActNet(), PreActNet(stem_norm=True), input_size=SMALL)
    assert not report.equivalent and report.unpaired_candidate == []
    assert report.unpaired_reference[0].startswith("stem.norm.weight")


def _head(bias: bool, linear: bool = False) -> nn.Module:
    """A network whose last 1x1 convolution (or Linear) has a bias or not (pytorchcv's MobileNetV3 head against
    timm's, say)."""
    last = nn.Linear(8, 6, bias=bias) if linear else nn.Conv2d(8, 6, 1, bias=bias)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         *([nn.Flatten()] if linear else []), last, *([] if linear else [nn.Flatten()]),
                         nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize("linear", [False, True], ids=["convolution", "Linear"])
def test_a_bias_on_one_side_only_is_named_as_the_only_difference(linear):
    report = verify(_head(bias=False), _head(bias=True, linear=linear), input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED" and report.first_divergence == "3", str(report)
    assert "the reference's also holds bias [6], which the candidate's lacks (a bias on one side only)" \
        in report.divergence_detail, str(report)


class ConvBNStack(nn.Module):
    """Three convolution-BatchNorm-ReLU layers, the second a residual, each convolution with a bias or not (as
    ``nn.Conv2d`` has by default), the second BatchNorm with its affine pair or not."""

    def __init__(self, bias: bool = False, affine: bool = True) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8, affine=affine)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.b1(self.c1(x)).relu()
        x = x + self.b2(self.c2(x)).relu()
        return self.fc(self.b3(self.c3(x)).relu().mean((2, 3)))


def test_a_bias_on_every_convolution_names_each_and_pairs_the_modules_between():
    """Each convolution stands where the reference's does, but for its bias: all three are named, and the
    BatchNorms between them pair (not left tied, as when the first difference cut the dataflow)."""
    report = verify(ConvBNStack(bias=True), ConvBNStack(), input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED" and report.first_divergence == "c1", str(report)
    assert report.divergence_detail.startswith("structure: the candidate's c1 (Conv2d: weight [8, 3, 3, 3], bias [8])")
    assert "has no counterpart" not in report.divergence_detail  # it has one, but for its bias
    assert not any("could not be paired unambiguously" in line for line in report.structure), report.structure
    assert {"b1", "b2", "b3", "fc"} <= set(report.layers["candidate"]), report.layers
    biased = [line for line in report.structure if "holds bias [8], which the reference's lacks" in line]
    assert [line.split(" ")[2] for line in biased] == ["c1", "c2", "c3"], report.structure
    # The same convolutions without a bias verify.
    assert verify(ConvBNStack(), ConvBNStack(), input_size=SMALL).bit_exact


def test_a_batchnorm_without_its_affine_pair_names_the_pair():
    report = verify(ConvBNStack(affine=False), ConvBNStack(), input_size=SMALL)
    assert report.first_divergence == "b2", str(report)
    assert "the reference's also holds weight [8], bias [8], which the candidate's lacks (an affine weight and " \
        "bias on one side only)" in report.divergence_detail, report.divergence_detail


@pytest.mark.parametrize(("held", "words"), [
    ((("bias", (8,)),), "a bias on one side only"),
    ((("weight", (8,)), ("bias", (8,))), "an affine weight and bias on one side only"),
    ((("weight", (8,)),), "vectors on one side only"),  # a scale alone is not called an affine pair
    ((("scale", (8,)), ("shift", (8,))), "vectors on one side only"),
])
def test_vectors_one_side_holds_are_called_what_their_names_say(held, words):
    assert VectorsAlone("candidate", held).what == words


class ShortcutFromTheInput(PreActBlock):
    """The projection shortcut fed the block's input instead of the pre-activation: a right tensor, wrong place."""

    def forward(self, x):
        y = self.norm1(x).relu()
        return self.conv2(self.norm2(self.conv1(y)).relu()) + self.downsample(x)


class TwoPreActBlocks(nn.Module):
    def __init__(self, second: type = PreActBlock) -> None:
        super().__init__()
        self.stem, self.first, self.second = nn.Conv2d(3, 4, 3, padding=1), PreActBlock(4, 4), second(4, 8)

    def forward(self, x):
        return self.second(self.first(self.stem(x))).mean((2, 3))


def test_a_right_tensor_handed_to_the_wrong_module_is_blamed_on_the_module_that_hands_it():
    """The shortcut's input differs while that very tensor agrees as the input of the block's first norm: the
    block before is right, the block whose forward wires it is to blame."""
    report = verify(TwoPreActBlocks(ShortcutFromTheInput), TwoPreActBlocks(), input_size=SMALL)
    assert not report.equivalent and report.first_divergence == "second", str(report)
    assert "the input of second.downsample" in report.divergence_detail
    assert "agrees with the reference's as the input of second.norm1" in report.divergence_detail
    assert verify(TwoPreActBlocks(), TwoPreActBlocks(), input_size=SMALL).bit_exact


# -- a BatchNorm written out on buffers (a frozen one) pairs with a BatchNorm -----------------------

class WrittenOutNorm(nn.Module):
    """A BatchNorm frozen for fine-tuning, its four vectors buffers and no count (torchvision's FrozenBatchNorm2d,
    detection backbones): written out as ``x * scale + shift``, or as ``F.batch_norm`` in eval mode; its vectors
    ``[C]`` or ``[1, C, 1, 1]``. ``mean_from_var``: the mistake of normalizing by the wrong statistic."""

    def __init__(self, channels: int, eps: float = 1e-5, functional: bool = False, broadcast: bool = False,
                 mean_from_var: bool = False) -> None:
        super().__init__()
        shape = (1, channels, 1, 1) if broadcast else (channels,)
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full(shape, fill))
        self.eps, self.functional, self.mean_from_var = eps, functional, mean_from_var

    def forward(self, x):
        mean = self.running_var if self.mean_from_var else self.running_mean
        if self.functional:
            flat = [t.reshape(-1) for t in (mean, self.running_var, self.weight, self.bias)]
            return F.batch_norm(x, *flat, training=False, eps=self.eps)
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        return x * scale + (self.bias.reshape(1, -1, 1, 1) - mean.reshape(1, -1, 1, 1) * scale)


class NormedNet(nn.Module):
    def __init__(self, norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 second_norm: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), norm(4)
        self.conv2, self.norm2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), (second_norm or norm)(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.norm1(self.conv1(x)).relu()
        return self.fc(self.norm2(self.conv2(x)).relu().mean((2, 3)))


FROZEN = {
    "written out": WrittenOutNorm,
    "F.batch_norm on buffers": lambda c: WrittenOutNorm(c, functional=True),
    "[1, C, 1, 1] buffers": lambda c: WrittenOutNorm(c, broadcast=True),
    "torchvision FrozenBatchNorm2d": torchvision.ops.FrozenBatchNorm2d,
}


@pytest.mark.parametrize("frozen", FROZEN.values(), ids=FROZEN.keys())
def test_a_frozen_batchnorm_pairs_with_a_batchnorm_and_differs_in_train_mode_only(frozen):
    report = verify(NormedNet(frozen), NormedNet(), input_size=SMALL)
    assert report.levels["eval"].holds, str(report)
    train = report.levels["train step"]
    assert not train.holds and train.first_divergence == "norm1", str(report)
    assert "the candidate's norm1 holds its weight and bias as buffers, a frozen BatchNorm" in train.detail
    assert any("2 counts only the reference keeps" in note and "norm1.num_batches_tracked (BatchNorm2d)" in note
               for note in report.notes), str(report)
    assert report.port is not None and report.unpaired_candidate == report.unpaired_reference == []


def test_a_batchnorm_verified_against_a_frozen_one_keeps_its_count():
    candidate = NormedNet()
    count = candidate.norm1.num_batches_tracked.clone()
    report = verify(candidate, NormedNet(WrittenOutNorm), input_size=SMALL)
    assert report.levels["eval"].holds and not report.levels["train step"].holds, str(report)
    assert "the reference's norm1 holds its weight and bias as buffers" in report.levels["train step"].detail
    assert any("2 counts only the candidate keeps" in note for note in report.notes), str(report)
    assert torch.equal(candidate.norm1.num_batches_tracked, count)


class OtherNames(nn.Module):
    """A frozen BatchNorm whose buffers are named otherwise (``gamma``, ``beta``, ``mean``, ``var``); ``swap``: the
    mistake of taking the variance for the scale, which the identity a fresh one holds (1, 0, 0, 1) hides."""

    def __init__(self, channels: int, swap: bool = False) -> None:
        super().__init__()
        for name, fill in (("gamma", 1.0), ("beta", 0.0), ("mean", 0.0), ("var", 1.0)):
            self.register_buffer(name, torch.full((channels,), fill))
        self.swap = swap

    def forward(self, x):
        scale, var = (self.var, self.gamma) if self.swap else (self.gamma, self.var)
        scale = scale.view(1, -1, 1, 1) * (var.view(1, -1, 1, 1) + 1e-5).rsqrt()
        return x * scale + (self.beta.view(1, -1, 1, 1) - self.mean.view(1, -1, 1, 1) * scale)


def test_a_frozen_batchnorm_named_otherwise_is_randomized_so_that_a_swap_shows():
    assert verify(NormedNet(OtherNames), NormedNet(OtherNames), input_size=SMALL).bit_exact
    report = verify(NormedNet(lambda c: OtherNames(c, swap=True)), NormedNet(OtherNames), input_size=SMALL)
    assert not report.equivalent and report.first_divergence == "norm1", str(report)


def test_a_frozen_batchnorm_named_otherwise_does_not_pair_with_a_batchnorm():
    """Which buffer is the variance is not known from the names: not paired, rather than guessed."""
    report = verify(NormedNet(OtherNames), NormedNet(), input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED", str(report)


MISTAKES = {
    "eps": lambda c: WrittenOutNorm(c, eps=1e-2),
    "the variance as the mean": lambda c: WrittenOutNorm(c, mean_from_var=True),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_in_a_frozen_batchnorm_is_caught_there_in_eval_mode(mistake):
    report = verify(NormedNet(WrittenOutNorm, second_norm=mistake), NormedNet(), input_size=SMALL)
    assert not report.levels["eval"].holds and report.levels["eval"].first_divergence == "norm2", str(report)


def test_torchvision_resnet_with_frozen_batchnorm_is_timm_resnet_in_eval_mode():
    """A detection backbone's ResNet-18 (torchvision's, BatchNorms frozen) against timm's."""
    model = torchvision.models.resnet18(norm_layer=torchvision.ops.FrozenBatchNorm2d)
    report = verify(model, "timm:resnet18", input_size=(2, 3, 32, 32))
    assert report.levels["eval"].holds and not report.levels["train step"].holds, str(report)
    assert report.levels["train step"].first_divergence == "bn1"
    assert report.port is not None and len(report.layers) == 41


# -- modules called in train mode alone (auxiliary heads) ------------------------------------------

class WithAuxHead(nn.Module):
    """A classifier with an auxiliary head on its first block, run in train mode alone (Inception-v3, GoogLeNet):
    ``(logits, aux)`` in train mode, the logits in eval mode. ``aux_eps``: a mistake in the auxiliary head."""

    def __init__(self, aux: bool = True, aux_eps: float = 1e-5) -> None:
        super().__init__()
        self.stem, self.block = ConvBN(3, 4, kernel=3), ConvBN(4, 6, kernel=3)
        self.fc = nn.Linear(6, 2)
        self.aux = nn.Sequential(ConvBN(4, 5, eps=aux_eps), nn.Flatten(2), nn.Linear(64, 3)) if aux else None

    def forward(self, x):
        x = self.stem(x).relu()
        logits = self.fc(self.block(x).relu().mean((2, 3)))
        if self.training and self.aux is not None:
            return logits, self.aux(x).mean(1)
        return logits


def test_auxiliary_heads_run_in_train_mode_alone_pair_by_a_train_mode_trace():
    report = verify(WithAuxHead(), WithAuxHead(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert report.port is not None and "aux.2.weight" in {pair.target_key for pair in report.port.pairs}
    assert any(note.startswith("3 modules run in train mode alone") and note.endswith(": aux.0.0, aux.0.1, aux.2")
               for note in report.notes), str(report)


class AuxInEvalToo(WithAuxHead):
    """Runs its auxiliary head in eval mode too, and drops it there (timm's Inception-v3): the same eval function."""

    def forward(self, x):
        x = self.stem(x).relu()
        logits, aux = self.fc(self.block(x).relu().mean((2, 3))), self.aux(x).mean(1)
        return (logits, aux) if self.training else logits


@pytest.mark.parametrize("candidate, reference", [(AuxInEvalToo, WithAuxHead), (WithAuxHead, AuxInEvalToo)])
def test_an_auxiliary_head_one_model_also_runs_in_eval_mode_pairs_by_the_train_mode_trace(candidate, reference):
    report = verify(candidate(), reference(), input_size=SMALL)
    assert report.bit_exact, str(report)
    side = "candidate" if candidate is AuxInEvalToo else "reference"
    assert any(f"aux.0.0 (the {side}'s runs in eval mode too)" in note for note in report.notes), str(report)
    assert not verify(candidate(aux_eps=1e-2), reference(), input_size=SMALL).equivalent


def test_a_mistake_in_an_auxiliary_head_is_caught_by_the_train_step():
    report = verify(WithAuxHead(aux_eps=1e-2), WithAuxHead(), input_size=SMALL)
    assert report.levels["eval"].holds and not report.levels["train step"].holds, str(report)
    assert report.levels["train step"].first_divergence == "aux.0.1", str(report)


def test_an_auxiliary_head_on_one_side_only_is_a_structure_difference():
    report = verify(WithAuxHead(), WithAuxHead(aux=False), input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED", str(report)
    assert report.unpaired_candidate[0].startswith("aux.0.0.weight") and "never called" in report.unpaired_candidate[0]


# -- attention written as one functional call ------------------------------------------------------

class FusedAttention(nn.Module):
    """A qkv Linear, ``F.scaled_dot_product_attention`` and a proj Linear (timm's ViT attention)."""

    def __init__(self, dim: int, heads: int, scale: float | None = None, interleave_heads: bool = False) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.heads, self.scale, self.interleave_heads = heads, scale, interleave_heads

    def forward(self, x):
        b, n, c = x.shape
        if self.interleave_heads:  # head h takes channels h, h + heads, ...: another function
            qkv = self.qkv(x).reshape(b, n, 3, c // self.heads, self.heads).permute(2, 0, 4, 1, 3)
        else:
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class TorchAttention(nn.Module):
    """``nn.MultiheadAttention`` (torchvision's ViT): one call of ``F.multi_head_attention_forward``, which uses
    the in-projection of the module and the out-projection of its child ``out_proj`` at once."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


class SeparateAttention(nn.Module):
    """Separate q, k and v Linears (Hugging Face's ViT attention)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.heads = heads

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (self.q(x), self.k(x),
                                                                                        self.v(x)))
        return self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    def __init__(self, attention: nn.Module, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), attention, nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches of 2x2 pixels as 16 tokens of width 8, two encoder blocks of two heads, a mean-pooled head."""

    def __init__(self, attention=TorchAttention, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.blocks = nn.Sequential(*[EncoderBlock(attention(dim, heads), dim) for _ in range(2)])
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        return self.head(self.blocks(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


@NEEDS_INDEXING
@pytest.mark.parametrize("candidate, reference", [
    pytest.param(TorchAttention, FusedAttention, id="multihead-attention-against-qkv-and-sdpa"),
    pytest.param(FusedAttention, TorchAttention, id="qkv-and-sdpa-against-multihead-attention"),
])
def test_attention_in_one_functional_call_is_traced_through(candidate, reference):
    report = verify(TinyViT(candidate), TinyViT(reference), input_size=SMALL)
    assert report.equivalent and report.structure_matches, str(report)
    pairs = {(c, r) if candidate is TorchAttention else (r, c)
             for c, r in zip(report.layers["candidate"], report.layers["reference"], strict=True)}
    # The in-projection is a call of the MultiheadAttention module ([3E, E] like the qkv Linear), the
    # out-projection a call of its child out_proj, whose own forward never runs.
    assert {("blocks.0.attn.attention", "blocks.0.attn.qkv"),
            ("blocks.0.attn.attention.out_proj", "blocks.0.attn.proj")} <= pairs
    assert any("multi_head_attention_forward uses the tensors of several modules at once, traced through its Python "
               "body: blocks.0.attn.attention, blocks.0.attn.attention.out_proj; blocks.1.attn.attention, "
               "blocks.1.attn.attention.out_proj" in n for n in report.notes), report.notes
    # Inside the call the tokens are sequence-first: compared row by row against the batch-first reference.
    assert any("points hold their rows in another order than the reference's" in n for n in report.notes), report.notes


@NEEDS_INDEXING
@pytest.mark.parametrize("candidate, where", [
    pytest.param(lambda d, h: FusedAttention(d, h, scale=0.3), "blocks.0.attn", id="scale"),
    pytest.param(lambda d, h: FusedAttention(d, h, interleave_heads=True), "blocks.0.attn", id="head-split-order"),
    pytest.param(lambda d, h: TorchAttention(d, 2 * h), "blocks.0.attn.attention", id="number-of-heads"),
])
def test_mistake_inside_attention_is_caught_at_the_attention(candidate, where):
    reference = TinyViT(TorchAttention if isinstance(candidate(8, 2), FusedAttention) else FusedAttention)
    report = verify(TinyViT(candidate), reference, input_size=SMALL)
    assert not report.equivalent and report.structure_matches
    assert report.first_divergence == where, str(report)
    assert "attn" in report.divergence_detail and "from tensors that agree" in report.divergence_detail


def test_tracing_through_a_torch_function_computes_what_it_computes_and_changes_nothing():
    attention = nn.MultiheadAttention(8, 2).double()
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    args = (x, x, x, 8, 2, attention.in_proj_weight, attention.in_proj_bias, None, None, False, 0.0,
            attention.out_proj.weight, attention.out_proj.bias)
    body = python_body(F.multi_head_attention_forward)
    assert body is not F.multi_head_attention_forward
    assert torch.equal(body(*args)[0], F.multi_head_attention_forward(*args)[0])
    assert python_body(F.linear) is None  # implemented in C++: one operation
    assert F.multi_head_attention_forward.__globals__["has_torch_function"] is torch.overrides.has_torch_function
    # A model that fails inside the traced body leaves no recorder behind.
    broken = TinyViT()
    broken.blocks[0].attn.attention.num_heads = 3  # 8 channels cannot split into 3 heads
    with pytest.raises(VerifyError, match="fails on the verification input"):
        verify(broken, TinyViT(), input_size=SMALL)
    assert not torch.overrides.has_torch_function((x,))  # no torch function mode left active


def test_fused_qkv_against_separate_projections_is_reported_as_such():
    report = verify(TinyViT(SeparateAttention), TinyViT(FusedAttention), input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "blocks.0.attn.q", str(report)
    assert ("the candidate's blocks.0.attn.q, blocks.0.attn.k, blocks.0.attn.v and the reference's blocks.0.attn.qkv "
            "(affine) hold as many values (216) and feed the same modules (blocks.0.attn.proj), in 3 modules "
            "against 1") in report.divergence_detail


class CrossAttention(nn.Module):
    """Tokens attending to a 6-wide context computed from them: ``nn.MultiheadAttention`` with ``kdim=6`` keeps
    separate q, k and v projection weights and one bias for the three; or separate Linears, each with its bias."""

    def __init__(self, torch_attention: bool) -> None:
        super().__init__()
        self.patch, self.context, self.head = nn.Conv2d(3, 8, 2, stride=2), nn.Linear(8, 6), nn.Linear(8, 3)
        if torch_attention:
            self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True)
        else:
            self.q, self.k, self.v, self.o = nn.Linear(8, 8), nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 8)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        c = self.context(x)
        if hasattr(self, "attn"):
            return self.head((x + self.attn(x, c, c, need_weights=False)[0]).mean(1))
        q, k, v = (t.reshape(x.shape[0], -1, 2, 4).transpose(1, 2) for t in (self.q(x), self.k(c), self.v(c)))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        return self.head((x + self.o(y)).mean(1))


def test_attention_with_separate_projection_weights_is_traced_through():
    assert verify(CrossAttention(True), CrossAttention(True), input_size=SMALL).bit_exact
    report = verify(CrossAttention(True), CrossAttention(False), input_size=SMALL)
    # The first part of attn's tensors that its functional body uses (the q projection and the three biases).
    assert not report.equivalent and report.first_divergence == "attn[q_proj_weight]", str(report)
    assert ("the candidate's attn[q_proj_weight], attn[v_proj_weight] and the reference's q, k, v (affine) hold as "
            "many values (184)") in str(report)


# -- architecture constants: index tables one model stores and the other only holds ----------------

class RelativeBias(nn.Module):
    """Attention over 4 tokens with a learned bias per relative position, looked up through an index table (a
    Swin window's): stored flat and persistent (torchvision), or square and non-persistent (timm)."""

    def __init__(self, persistent: bool, transposed: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.table = nn.Parameter(torch.randn(7))
        index = torch.arange(4)[:, None] - torch.arange(4)[None, :] + 3
        index = index.t() if transposed else index  # relative positions counted the other way: another function
        self.register_buffer("index", index.flatten() if persistent else index, persistent=persistent)

    def forward(self, x):
        bias = self.table[self.index.reshape(-1)].reshape(4, 4)
        return self.proj(torch.softmax(x @ x.transpose(1, 2) + bias, dim=-1) @ x)


class BiasNet(nn.Module):
    def __init__(self, persistent: bool, transposed: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 4, stride=4)  # 2x2 tokens
        self.attn = RelativeBias(persistent, transposed)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.attn(self.stem(x).flatten(2).transpose(1, 2)).mean(1))


@NEEDS_INDEXING
@pytest.mark.parametrize("candidate_stores", [True, False])
def test_index_table_only_one_model_stores_is_compared_not_ported(candidate_stores):
    report = verify(BiasNet(persistent=candidate_stores), BiasNet(persistent=not candidate_stores), input_size=SMALL)
    assert report.bit_exact and report.structure_matches, str(report)
    side, other = ("candidate", "reference") if candidate_stores else ("reference", "candidate")
    assert f"1 constant only the {side} stores" in str(report)
    assert f"attn.index [16] (compared with the {other}'s attn.index, which it holds without storing)" in str(report)
    assert report.port.kept == (("attn.index",) if candidate_stores else ())
    assert "attn.index" not in {p.source_key for p in report.port.pairs}


@NEEDS_INDEXING
@pytest.mark.parametrize("reference_stores", [True, False])
def test_wrong_index_table_is_caught_and_not_overwritten_by_the_port(reference_stores):
    report = verify(BiasNet(persistent=True, transposed=True), BiasNet(persistent=reference_stores),
                    input_size=SMALL)
    assert not report.equivalent
    assert report.first_divergence == "attn", str(report)
    assert "the candidate's constant attn.index [16] differs from the reference's attn.index" in str(report)


class ScaledByBuffer(nn.Module):
    def __init__(self, buffer: bool) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        if buffer:
            self.register_buffer("scale", torch.tensor([0.5]))

    def forward(self, x):
        y = self.conv(x)
        return self.fc((y * (self.scale if hasattr(self, "scale") else 0.5)).mean((2, 3)))


def test_floating_buffer_only_one_model_holds_is_a_structure_difference():
    report = verify(ScaledByBuffer(buffer=True), ScaledByBuffer(buffer=False), input_size=SMALL)
    assert not report.equivalent and not report.structure_matches
    assert report.unpaired_candidate == ["scale [1] (ScaledByBuffer)"], str(report)


# -- ties the dataflow cannot break are settled by trying ------------------------------------------

class Branches(nn.Module):
    """Convolutions of one shape on the input, each through its own parameter-free activation, then summed: only
    the activations tell the branches apart, and the dataflow does not see them."""

    def __init__(self, *activations) -> None:
        super().__init__()
        self.activations = activations or (F.relu, F.gelu)
        self.branches = nn.ModuleList(nn.Conv2d(3, 4, 3, padding=1) for _ in self.activations)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = sum(act(branch(x)) for act, branch in zip(self.activations, self.branches, strict=True))
        return self.fc(y.mean((2, 3)))


def test_tie_the_dataflow_cannot_break_is_settled_by_trying_each_way():
    report = verify(Branches(), Branches(), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert ("tie settled by trying 2 assignments (candidate <-> reference): branches.0 <-> branches.0, "
            "branches.1 <-> branches.1, the only one under which every paired module agrees") in str(report)


def test_branches_defined_the_other_way_round_are_the_same_function():
    report = verify(Branches(F.gelu, F.relu), Branches(F.relu, F.gelu), input_size=SMALL)
    assert report.bit_exact, str(report)
    assert "branches.0 <-> branches.1, branches.1 <-> branches.0, the only one" in str(report)


def test_wrong_activation_in_a_tied_branch_is_refused_whichever_way_they_pair():
    with pytest.raises(PairingError, match="under none of them does every paired module agree") as err:
        verify(Branches(F.relu, torch.tanh), Branches(F.relu, F.gelu), input_size=SMALL)
    assert "branches.0 <-> branches.0, branches.1 <-> branches.1: the input of fc differs" in str(err.value)
    assert "branches.0 <-> branches.1, branches.1 <-> branches.0: the input of fc differs" in str(err.value)


def test_tie_under_which_either_way_agrees_is_refused():
    with pytest.raises(PairingError, match="every paired module agrees under 2 of them"):
        verify(Branches(F.relu, F.relu), Branches(F.relu, F.relu), input_size=SMALL)


def test_tie_with_too_many_ways_to_try_is_refused_with_the_candidates():
    with pytest.raises(PairingError, match="more than 24 ways to pair them") as err:
        verify(Branches(*[F.relu] * 5), Branches(*[F.relu] * 5), input_size=SMALL)
    assert "candidate branches.0, branches.1, branches.2, branches.3, branches.4 <-> reference" in str(err.value)


# -- the libraries' own transformers, in tiny configurations ---------------------------------------

@NEEDS_INDEXING
def test_torchvision_vit_is_timm_vit():
    """torchvision's ViT calls ``nn.MultiheadAttention``; timm's a qkv Linear and ``F.scaled_dot_product_attention``."""
    candidate = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2,
                                                     hidden_dim=8, mlp_dim=16, num_classes=3)
    reference = timm.models.vision_transformer.VisionTransformer(img_size=16, patch_size=8, embed_dim=8, depth=2,
                                                                 num_heads=2, mlp_ratio=2, num_classes=3,
                                                                 global_pool="token")
    report = verify(candidate, reference, input_size=(2, 3, 16, 16))
    assert report.equivalent and report.structure_matches, str(report)
    pairs = dict(zip(report.layers["candidate"], report.layers["reference"], strict=True))
    assert pairs["encoder.layers.encoder_layer_1.self_attention"] == "blocks.1.attn.qkv"
    assert pairs["encoder.layers.encoder_layer_1.self_attention.out_proj"] == "blocks.1.attn.proj"


@NEEDS_INDEXING
def test_torchvision_swin_is_timm_swin_though_only_torchvision_stores_its_index_tables():
    candidate = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                                   window_size=[2, 2], stochastic_depth_prob=0.0, num_classes=3)
    reference = timm.models.swin_transformer.SwinTransformer(img_size=16, patch_size=4, embed_dim=8, depths=(1, 1),
                                                             num_heads=(1, 2), window_size=2, num_classes=3,
                                                             drop_path_rate=0.0)
    report = verify(candidate, reference, input_size=(2, 3, 16, 16))
    assert report.equivalent and report.structure_matches, str(report)
    assert "2 constants only the candidate stores" in str(report)
    assert report.port.kept == tuple(f"features.{i}.0.attn.relative_position_index" for i in (1, 3))


def test_where_this_torch_hides_indexing_a_structure_difference_says_so(monkeypatch):
    """On a torch that does not show `x[i]` to the trace, a structure difference names that as a possible cause."""
    monkeypatch.setattr(_run, "indexing_visible", lambda: False)
    report = verify(BiasNet(persistent=True), TinyViT(FusedAttention), input_size=SMALL)
    assert not report.structure_matches and INDEXING_INVISIBLE in report.structure
    monkeypatch.setattr(_run, "indexing_visible", lambda: True)
    report = verify(BiasNet(persistent=True), TinyViT(FusedAttention), input_size=SMALL)
    assert INDEXING_INVISIBLE not in report.structure


class _TupleOfItsOwn(tuple):
    """A tuple subclass that is neither a named tuple nor registered: a leaf to ``tree_flatten``."""


@pytest.mark.parametrize("tree", [
    "plain", "nested", "named tuple", "structseq", "tuple subclass", "ordered dict", "no tensors"])
def test_the_recorders_tensor_finder_finds_what_tree_flatten_finds(tree):
    """The recorder lists each operation's tensors without ``tree_flatten`` where the arguments are plain
    containers: the same tensors, in the same order, as ``tree_flatten`` (which it still asks for the rest)."""
    a, b, c = torch.ones(1), torch.zeros(2), torch.ones(3)
    pair = collections.namedtuple("pair", "x y")
    value = {"plain": (a, [b, 1, None], {"k": c}), "nested": {"z": [pair(b, a)], "w": (c, (slice(0, 1), ...))},
             "named tuple": pair(a, b), "structseq": torch.max(torch.ones(3, 3), 0),
             "tuple subclass": _TupleOfItsOwn((a, b)), "ordered dict": collections.OrderedDict(x=c, y=a),
             "no tensors": (1, 2.0, "s", torch.float32, torch.device("cpu"), torch.contiguous_format)}[tree]
    expected = [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
    found = _tensors(value)
    assert len(found) == len(expected) and all(x is y for x, y in zip(found, expected, strict=True))


class Bottleneck1x1(nn.Module):
    """A 1x1 convolution down and one up: [4, 8, 1, 1] and [8, 4, 1, 1], as many values each."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.up = nn.Conv2d(8, 4, 1, bias=False), nn.Conv2d(4, 8, 1, bias=False)

    def forward(self, x):
        return self.up(self.down(x))


def test_a_tie_of_modules_of_other_shapes_shows_each_shape():
    """Modules tied by their element counts alone (a relaxed pairing) are not labelled with one of their shapes."""
    graphs = [trace(Bottleneck1x1(), torch.randn(1, 8, 4, 4))[0] for _ in range(2)]
    ids = [[n.id for n in graph.called()] for graph in graphs]
    assert _describe_ties(*graphs, [(ids[0], ids[1])]) == [
        "candidate down, up <-> reference down, up (affine as many values each, in [(4, 8, 1, 1)] or [(8, 4, 1, 1)])"]
    same = [[ids[0][0]], [ids[1][0]]]
    assert _describe_ties(*graphs, [tuple(same)]) == ["candidate down <-> reference down (affine [(4, 8, 1, 1)])"]


class ExtraAfterStem(nn.Module):
    """A stem convolution and its norm, then (``extra``) a 1x1 convolution and norm, then a depthwise convolution: an
    inverted-residual block with expansion 1 that keeps its expansion convolution (tonylins' MobileNetV2, kuangliu's
    EfficientNet) against one without. ``norm`` builds the stem's norm: a BatchNorm and a ReLU6 module, or timm's
    BatchNormAct2d, which uses its own tensors in a forward with child modules."""

    def __init__(self, extra: bool, fused: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.stem_bn = BatchNormAct2d(8, act_layer=nn.ReLU6) if fused else nn.BatchNorm2d(8)
        self.stem_act = nn.Identity() if fused else nn.ReLU6()
        self.extra = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()) if extra else None
        self.dw, self.bn = nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = self.extra(x) if self.extra is not None else x
        return self.fc(self.bn(self.dw(x)).mean((2, 3)))


class NestedStem(nn.Module):
    """The stem in a module of its own, the first block keeping its expansion convolution beside its depthwise one
    (tonylins' MobileNetV2: ``conv_bn``, then an inverted residual with expansion 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                          nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8)))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class FlatStem(nn.Module):
    """timm's MobileNetV2 stem and first block: ``conv_stem``, ``bn1`` (a BatchNormAct2d), a block of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False), BatchNormAct2d(8, act_layer=nn.ReLU6)
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8)))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.bn1(self.conv_stem(x))).mean((2, 3)))


@pytest.mark.parametrize("candidate, reference, extra", [
    (ExtraAfterStem(extra=True), ExtraAfterStem(extra=False), "extra"),
    (ExtraAfterStem(extra=True), ExtraAfterStem(extra=False, fused=True), "extra"),
    (NestedStem(), FlatStem(), "features.1"),
], ids=["batchnorm-and-relu6", "timm-batchnormact2d", "nested-stem"])
def test_an_extra_module_after_a_stems_norm_is_the_one_left_over(candidate, reference, extra):
    """The stems' norms pair (each beside its stem's convolution, however either model nests them; a module using
    its own tensors in its own forward sits where the module does), and the extra convolution is the first
    divergence, not the stem's norm."""
    report = verify(candidate, reference, input_size=SMALL)
    assert report.verdict == "STRUCTURES DIFFER, NOT COMPARED" and report.first_divergence == f"{extra}.0", str(report)
    unpaired = {line.split(" ")[0].rsplit(".", 1)[0] for line in report.unpaired_candidate}
    assert unpaired == {f"{extra}.0", f"{extra}.1"}, report.unpaired_candidate  # the convolution and its norm


class HardSigmoidModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6()

    def forward(self, x):
        return self.relu(x + 3) / 6


class HardSwishModules(nn.Module):
    """A hard-swish written as modules: ``x * relu6(x + 3) / 6``, the ReLU6 a value the reference never computes."""

    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = HardSigmoidModules()

    def forward(self, x):
        return x * self.sigmoid(x)


class PooledHead(nn.Module):
    def __init__(self, act: Callable[[], nn.Module], post: Callable[[], nn.Module] | None) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), act()
        self.pool, self.post, self.fc = nn.AdaptiveAvgPool2d(1), post() if post else nn.Identity(), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.post(self.pool(self.act(self.bn(self.conv(x))))).flatten(1))


def test_a_step_inside_a_module_that_comes_out_right_is_not_to_blame():
    """d-li14's older MobileNetV3 head: a hard-swish (written as modules) after the pool, which the reference lacks.
    The hard-swish before the pool computes a ReLU6 the reference never does, inside a module whose output agrees:
    the extra one after the pool is to blame."""
    report = verify(PooledHead(HardSwishModules, HardSwishModules), PooledHead(nn.Hardswish, None), input_size=SMALL)
    assert report.first_divergence.startswith("post"), str(report)
