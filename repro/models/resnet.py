"""ResNet (He et al., 2015, "Deep Residual Learning for Image Recognition"), its plain baselines,
and the variants of seed sections 2.3 and 7, all as options of one family.

Written after the seed document's section 2.2 code, with these departures, each needed to be
exactly the timm / torchvision model:

* Stride 2 sits on the 3x3 convolution of a Bottleneck (ResNet "v1.5", as in torchvision and
  timm). The paper and the original Caffe models put it on the first 1x1 (``stride_in_1x1``);
  the seed does the same as v1.5 already.
* Widths take ``groups`` and ``base_width`` so the same blocks build ResNeXt (Xie et al., 2017)
  and wide ResNet (Zagoruyko & Komodakis, 2016). Seed section 7 sketches a ResNeXt block whose
  ``forward`` is ``pass``; its width formula is the one used here.
* ``shortcut=False`` builds the seed's PlainBlock networks (the paper's plain baselines): no
  identity addition and no projection, everything else equal.

The variants of seed section 2.3:

* Pre-activation, ResNet v2 (He et al., 2016, "Identity Mappings in Deep Residual Networks"): the
  block kinds ``PreActBasicBlock`` / ``PreActBottleneck``. They are a block kind, not a separate
  network, because everything else follows from the block: the stem loses its BN-ReLU (the first
  block pre-activates its input), projection shortcuts are bare 1x1 convolutions fed by the block's
  pre-activation, and one BN-ReLU (``final_bn``) closes the last stage. Matches timm's BatchNorm
  ``resnetv2_*`` models (not the BiT ones, which use GroupNorm and weight standardization).
* Squeeze-and-Excitation (Hu et al., 2018): ``se_reduction=16`` gates each block's residual
  branch after its last BN, before the addition (timm's ``seresnet*``).
* The original SENet layout (timm's ``legacy_seresnet*``, from the Caffe models): stride on the
  first 1x1, a max-pool without padding in ceil mode, SE widths not rounded, dropout before the
  classifier; see ``_legacy_seresnet``.

Module names follow the seed (and torchvision): conv1/bn1/layer1..4/fc, ``downsample.0/1``, ``se``.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn

from repro.layers import SqueezeExcite, conv_bn, init_conv_bn_, make_divisible
from repro.registry import register_model

SELayer = Callable[[int], nn.Module]  # channels -> SE module


def se_reduced_width(channels: int, reduction: int = 16, round_to: int | None = 8) -> int:
    """The squeezed width of an SE module.

    timm's SE-ResNets round ``channels / reduction`` to the nearest multiple of ``round_to``, at
    least ``round_to`` (64 channels -> 8). The original SENet (timm's legacy models) floors ``channels // reduction``
    (64 -> 4), and so does the seed's ``SEResidualBlock`` (``nn.Linear(out_channels,
    out_channels // reduction)``): ``round_to=None``. The two agree from 128 channels on.
    """
    if round_to is None:
        return channels // reduction
    return make_divisible(channels / reduction, round_to, round_limit=0.0)


def squeeze_excite(channels: int, reduction: int = 16, round_to: int | None = 8) -> SqueezeExcite:
    # The seed's SE uses nn.Linear layers; the references' 1x1 convolutions hold the same numbers
    # (the porting layer reshapes one into the other) and their widths follow se_reduced_width.
    return SqueezeExcite(channels, se_reduced_width(channels, reduction, round_to))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). ``out = relu(se(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))``."""

    expansion = 1
    preact = False

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
        se_layer: SELayer | None = None,
        stride_in_1x1: bool = False,
        relu_before_se: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        if stride_in_1x1:
            raise ValueError("BasicBlock has no 1x1 convolution to put the stride on (stride_in_1x1)")
        if relu_before_se and se_layer is None:
            raise ValueError("BasicBlock: relu_before_se needs an SE module (se_reduction)")
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = se_layer(channels) if se_layer is not None else None
        # timm's legacy SE basic block (SEResNetBlock) applies a ReLU before the SE gate as well
        # as after the addition; its bottleneck and timm's SE-ResNets do not.
        self.relu_before_se = relu_before_se
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(self.relu(out) if self.relu_before_se else out)
        if self.shortcut:  # in place, as timm's and torchvision's ResNets (no second activation buffer)
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.last_bn.weight)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, optionally grouped), 1x1 expand by 4 (ResNet-50/101/152, ResNeXt, wide ResNet)."""

    expansion = 4
    preact = False

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
        se_layer: SELayer | None = None,
        stride_in_1x1: bool = False,
        relu_before_se: bool = False,
    ) -> None:
        super().__init__()
        if relu_before_se:
            raise ValueError("Bottleneck: relu_before_se is a quirk of timm's legacy SE basic block only")
        # ResNeXt's grouped width: C groups of d channels, e.g. 32x4d at stage 1 -> 128.
        width = int(channels * (base_width / 64.0)) * groups
        out_channels = channels * self.expansion
        # v1.5 strides the 3x3; the original (Caffe) ResNet and SENet stride the first 1x1.
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.se = se_layer(out_channels) if se_layer is not None else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.shortcut:  # in place, as timm's and torchvision's ResNets (no second activation buffer)
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.last_bn.weight)


def _check_preact_options(block: str, se_layer: SELayer | None, stride_in_1x1: bool, relu_before_se: bool) -> None:
    given = [name for name, value in (("se_layer", se_layer), ("stride_in_1x1", stride_in_1x1),
                                      ("relu_before_se", relu_before_se)) if value]
    if given:
        raise ValueError(f"{block} does not support {', '.join(given)} (no reference model combines them)")


class PreActBasicBlock(nn.Module):
    """ResNet v2 basic block: ``out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``, no ReLU after the sum.

    The seed's ``PreActResidualBlock`` projects the raw input ``x`` in its shortcut; the v2 paper's
    code and timm project the pre-activation ``relu(bn1(x))`` (the same BN-ReLU feeds both paths).
    The latter is done here: only it holds timm's weights to timm's outputs.
    """

    expansion = 1
    preact = True

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
        se_layer: SELayer | None = None,
        stride_in_1x1: bool = False,
        relu_before_se: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("PreActBasicBlock supports only groups=1 and base_width=64")
        _check_preact_options("PreActBasicBlock", se_layer, stride_in_1x1, relu_before_se)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)  # first, in timm's order
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut if self.shortcut else out

    def zero_init_last(self) -> None:  # no BN after the last convolution: zero the convolution (timm)
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """ResNet v2 bottleneck: BN-ReLU-conv 1x1, BN-ReLU-conv 3x3 (strided), BN-ReLU-conv 1x1, plus the shortcut."""

    expansion = 4
    preact = True

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
        se_layer: SELayer | None = None,
        stride_in_1x1: bool = False,
        relu_before_se: bool = False,
    ) -> None:
        super().__init__()
        _check_preact_options("PreActBottleneck", se_layer, stride_in_1x1, relu_before_se)
        width = int(channels * (base_width / 64.0)) * groups
        out_channels = channels * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)  # first, in timm's order
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut if self.shortcut else out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four stages, global average pool, classifier.

    With a pre-activation ``block`` the stem is conv and max-pool only and a final BN-ReLU
    (``final_bn``) follows the last stage. Options (all default to the plain ResNet):

    * ``groups``, ``base_width``: ResNeXt cardinality and per-group width; wide ResNet is ``base_width=128``.
    * ``se_reduction``: a Squeeze-and-Excitation module per block with this reduction (16 in the
      paper); ``se_round_to`` rounds the squeezed width (see ``se_reduced_width``).
    * ``stride_in_1x1``, ``caffe_maxpool``, ``relu_before_se``: the original SENet layout.
    * ``drop_rate``: dropout before the classifier (train mode only).
    * ``conv_head``: the classifier as a 1x1 convolution on the pooled map, as timm's ResNetV2 has
      it. It holds the same numbers as ``nn.Linear`` but runs a different kernel, so it is needed
      for bit-identical outputs, not for the value of the result.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
        se_reduction: int | None = None,
        se_round_to: int | None = 8,
        stride_in_1x1: bool = False,
        relu_before_se: bool = False,
        caffe_maxpool: bool = False,
        drop_rate: float = 0.0,
        conv_head: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.block, self.layers, self.shortcut = block, tuple(layers), shortcut
        self.preact = block.preact
        self.drop_rate = drop_rate
        self.conv_head = conv_head
        self.in_channels = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if not self.preact:
            self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        if caffe_maxpool:
            # Caffe's pooling rounds the output size up instead of padding: same 56x56 at 224, but
            # each window starts one pixel later than with padding=1.
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        se_layer = None
        if se_reduction is not None:
            se_layer = functools.partial(squeeze_excite, reduction=se_reduction, round_to=se_round_to)
        block_args = dict(groups=groups, base_width=base_width, se_layer=se_layer,
                          stride_in_1x1=stride_in_1x1, relu_before_se=relu_before_se)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1, **block_args)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, **block_args)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, **block_args)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, **block_args)
        self.num_features = 512 * block.expansion
        if self.preact:
            self.final_bn = nn.BatchNorm2d(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if conv_head:
            self.fc = nn.Conv2d(self.num_features, num_classes, 1)
        else:
            self.fc = nn.Linear(self.num_features, num_classes)

        init_conv_bn_(self)
        if zero_init_residual:  # timm's default: each residual branch starts as zero
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)):
                    m.zero_init_last()

    def _make_layer(self, block: Block, channels: int, blocks: int, stride: int, **block_args) -> nn.Sequential:
        out_channels = channels * block.expansion
        downsample = None
        if self.shortcut and (stride != 1 or self.in_channels != out_channels):
            if block.preact:  # the block's pre-activation is already normalized: no BN of its own
                downsample = nn.Conv2d(self.in_channels, out_channels, 1, stride=stride, bias=False)
            else:
                downsample = conv_bn(self.in_channels, out_channels, 1, stride=stride)
        stage = [block(self.in_channels, channels, stride, downsample, shortcut=self.shortcut, **block_args)]
        self.in_channels = out_channels
        stage += [block(out_channels, channels, shortcut=self.shortcut, **block_args) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.preact:
            x = self.relu(self.final_bn(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        if self.drop_rate > 0.0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        if self.conv_head:
            return torch.flatten(self.fc(x), 1)
        return self.fc(torch.flatten(x, 1))


# Block kind and blocks per stage for each depth: the ResNet paper's Table 1.
DEPTHS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
PREACT: dict[Block, Block] = {BasicBlock: PreActBasicBlock, Bottleneck: PreActBottleneck}


def _resnet(depth: int, preact: bool = False, **kwargs) -> ResNet:
    block, layers = DEPTHS[depth]
    return ResNet(PREACT[block] if preact else block, layers, **kwargs)


def _preact_resnet(depth: int, **kwargs) -> ResNet:
    return _resnet(depth, preact=True, **{"conv_head": True, **kwargs})


def _legacy_seresnet(depth: int, **kwargs) -> ResNet:
    """SE-ResNet as the SENet authors' Caffe models have it (timm's ``legacy_seresnet*``): stride on
    the first 1x1, Caffe max-pool, unrounded SE widths (``channels // 16``), dropout 0.2 before the
    classifier; the basic blocks (timm's own addition) also apply ReLU before the SE gate."""
    block, _ = DEPTHS[depth]
    options = dict(se_reduction=16, se_round_to=None, caffe_maxpool=True, drop_rate=0.2)
    if block is Bottleneck:
        options["stride_in_1x1"] = True
    else:
        options["relu_before_se"] = True
    return _resnet(depth, **{**options, **kwargs})


@register_model("resnet")
def resnet18(**kwargs) -> ResNet:
    return _resnet(18, **kwargs)


@register_model("resnet")
def resnet34(**kwargs) -> ResNet:
    return _resnet(34, **kwargs)


@register_model("resnet")
def resnet50(**kwargs) -> ResNet:
    return _resnet(50, **kwargs)


@register_model("resnet")
def resnet101(**kwargs) -> ResNet:
    return _resnet(101, **kwargs)


@register_model("resnet")
def resnet152(**kwargs) -> ResNet:
    return _resnet(152, **kwargs)


# The paper's plain baselines (seed section 2.1, PlainBlock): ResNet-18/34 without any shortcut.
@register_model("resnet")
def plain18(**kwargs) -> ResNet:
    return _resnet(18, shortcut=False, **kwargs)


@register_model("resnet")
def plain34(**kwargs) -> ResNet:
    return _resnet(34, shortcut=False, **kwargs)


# Pre-activation ResNet v2 (seed section 2.3, PreActResidualBlock), as timm's resnetv2_<depth>.
@register_model("resnet")
def resnetv2_18(**kwargs) -> ResNet:
    return _preact_resnet(18, **kwargs)


@register_model("resnet")
def resnetv2_34(**kwargs) -> ResNet:
    return _preact_resnet(34, **kwargs)


@register_model("resnet")
def resnetv2_50(**kwargs) -> ResNet:
    return _preact_resnet(50, **kwargs)


@register_model("resnet")
def resnetv2_101(**kwargs) -> ResNet:
    return _preact_resnet(101, **kwargs)


@register_model("resnet")
def resnetv2_152(**kwargs) -> ResNet:
    return _preact_resnet(152, **kwargs)


# SE-ResNet (seed section 2.3, SEResidualBlock), as timm's seresnet<depth>: reduction 16.
@register_model("resnet")
def seresnet18(**kwargs) -> ResNet:
    return _resnet(18, se_reduction=16, **kwargs)


@register_model("resnet")
def seresnet34(**kwargs) -> ResNet:
    return _resnet(34, se_reduction=16, **kwargs)


@register_model("resnet")
def seresnet50(**kwargs) -> ResNet:
    return _resnet(50, se_reduction=16, **kwargs)


@register_model("resnet")
def seresnet101(**kwargs) -> ResNet:
    return _resnet(101, se_reduction=16, **kwargs)


@register_model("resnet")
def seresnet152(**kwargs) -> ResNet:
    return _resnet(152, se_reduction=16, **kwargs)


@register_model("resnet")
def legacy_seresnet18(**kwargs) -> ResNet:
    return _legacy_seresnet(18, **kwargs)


@register_model("resnet")
def legacy_seresnet34(**kwargs) -> ResNet:
    return _legacy_seresnet(34, **kwargs)


@register_model("resnet")
def legacy_seresnet50(**kwargs) -> ResNet:
    return _legacy_seresnet(50, **kwargs)


@register_model("resnet")
def legacy_seresnet101(**kwargs) -> ResNet:
    return _legacy_seresnet(101, **kwargs)


@register_model("resnet")
def legacy_seresnet152(**kwargs) -> ResNet:
    return _legacy_seresnet(152, **kwargs)


# ResNeXt (seed section 7, ResNeXtBlock): <cardinality>x<width per group>d, the ResNeXt paper's Table 1
# and its 101-layer models.
@register_model("resnet")
def resnext50_32x4d(**kwargs) -> ResNet:
    return _resnet(50, groups=32, base_width=4, **kwargs)


@register_model("resnet")
def resnext101_32x4d(**kwargs) -> ResNet:
    return _resnet(101, groups=32, base_width=4, **kwargs)


@register_model("resnet")
def resnext101_32x8d(**kwargs) -> ResNet:
    return _resnet(101, groups=32, base_width=8, **kwargs)


@register_model("resnet")
def resnext101_64x4d(**kwargs) -> ResNet:
    return _resnet(101, groups=64, base_width=4, **kwargs)


# Wide ResNet-50-2 / 101-2: bottleneck widths doubled (the outer 1x1 widths are not).
@register_model("resnet")
def wide_resnet50_2(**kwargs) -> ResNet:
    return _resnet(50, base_width=128, **kwargs)


@register_model("resnet")
def wide_resnet101_2(**kwargs) -> ResNet:
    return _resnet(101, base_width=128, **kwargs)
