"""ResNet (He et al., 2015, "Deep Residual Learning for Image Recognition") and its plain baselines.

Written after the seed document's section 2.2 code, with these departures, each needed to be
exactly the timm / torchvision model:

* Stride 2 sits on the 3x3 convolution of a Bottleneck (ResNet "v1.5", as in torchvision and
  timm). The paper and the original Caffe models put it on the first 1x1; the seed does the
  same as v1.5 already.
* Widths take ``groups`` and ``base_width`` so the same blocks build ResNeXt and wide ResNet
  (seed section 7 sketches a ResNeXt block whose ``forward`` is ``pass``).
* ``shortcut=False`` builds the seed's PlainBlock networks (the paper's plain baselines): no
  identity addition and no projection, everything else equal.

Module names follow the seed (and torchvision): conv1/bn1/layer1..4/fc, ``downsample.0/1``.
"""

from __future__ import annotations

from typing import Sequence, Type

import torch
from torch import nn

from repro.layers import conv_bn
from repro.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, optionally grouped), 1x1 expand by 4 (ResNet-50/101/152, ResNeXt)."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        # ResNeXt's grouped width: C groups of d channels, e.g. 32x4d at stage 1 -> 128.
        width = int(channels * (base_width / 64.0)) * groups
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


Block = Type[BasicBlock] | Type[Bottleneck]


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four stages, global average pool, linear classifier."""

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        base_width: int = 64,
        shortcut: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        self.block, self.layers, self.shortcut = block, tuple(layers), shortcut
        self.in_channels = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stage_args = dict(groups=groups, base_width=base_width)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1, **stage_args)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, **stage_args)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, **stage_args)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, **stage_args)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # timm's default: each residual branch starts as zero
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

    def _make_layer(self, block: Block, channels: int, blocks: int, stride: int, **block_args) -> nn.Sequential:
        out_channels = channels * block.expansion
        downsample = None
        if self.shortcut and (stride != 1 or self.in_channels != out_channels):
            downsample = conv_bn(self.in_channels, out_channels, 1, stride=stride)
        stage = [block(self.in_channels, channels, stride, downsample, shortcut=self.shortcut, **block_args)]
        self.in_channels = out_channels
        stage += [block(out_channels, channels, shortcut=self.shortcut, **block_args) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


# Block counts per stage: the ResNet paper's Table 1.
@register_model("resnet")
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model("resnet")
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model("resnet")
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model("resnet")
def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model("resnet")
def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 8, 36, 3), **kwargs)


# The paper's plain baselines (seed section 2.1, PlainBlock): ResNet-18/34 without any shortcut.
@register_model("resnet")
def plain18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), shortcut=False, **kwargs)


@register_model("resnet")
def plain34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), shortcut=False, **kwargs)
