"""The CIFAR-10 networks of the ResNet paper's degradation study (He et al., 2015, section 4.2).

"The first layer is 3x3 convolutions. Then we use a stack of 6n layers with 3x3 convolutions on
the feature maps of sizes {32, 16, 8} respectively, with 2n layers for each feature map size. The
numbers of filters are {16, 32, 64} respectively. The subsampling is performed by convolutions
with a stride of 2. The network ends with a global average pooling, a 10-way fully-connected
layer, and softmax." Depth is 6n + 2: n = 3, 9 give the 20- and 56-layer nets of Fig. 1 and 6.

Shortcuts are the paper's option A on CIFAR ("we use identity shortcuts in all cases"): where a
stage halves the resolution and doubles the width, the shortcut takes every second pixel and pads
the new channels with zeros. Option A adds no parameters, so a residual net and its plain
counterpart have exactly the same weights and differ only in the additions: the comparison of
the degradation study isolates the shortcut and nothing else. Option B (a 1x1 projection with
BatchNorm where the shape changes, identity elsewhere) is ``shortcut="B"``; ``shortcut=None``
builds the plain net.

The ImageNet ResNet (``repro.models.resnet``) differs in the stem (7x7/2 conv and max-pool), in
having four stages of 64 to 512 channels, and in using projection shortcuts; none of that is
used here, so the blocks are written out again at this size rather than bent out of that family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from repro.layers import conv_bn, init_conv_bn_
from repro.registry import register_model

SHORTCUTS = ("A", "B", None)


class PadShortcut(nn.Module):
    """Option A: identity, subsampled by ``stride``, with zero channels appended up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A can only widen: {in_channels} -> {out_channels} channels")
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # The paper says only "extra zero entries padded"; appending them after the existing
        # channels is one reading (others pad both sides). Either is a fixed, parameter-free map.
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


class CifarBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``;
    without a shortcut the addition is left out and everything else is the same (a plain block)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str | None = "A") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.has_shortcut = shortcut is not None
        self.downsample: nn.Module | None = None
        if shortcut is not None and (stride != 1 or in_channels != channels):
            if shortcut == "A":
                self.downsample = PadShortcut(in_channels, channels, stride)
            else:
                self.downsample = conv_bn(in_channels, channels, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.has_shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


@dataclass(frozen=True)
class Stage:
    channels: int
    stride: int


# Section 4.2: three stages on 32, 16 and 8 pixels with 16, 32 and 64 filters.
CIFAR_STAGES = (Stage(16, 1), Stage(32, 2), Stage(64, 2))


class CifarResNet(nn.Module):
    """3x3 conv (16), three stages of ``n`` blocks (2n layers each), global average pool, classifier."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str | None = "A",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        if zero_init_residual and shortcut is None:
            raise ValueError("zero_init_residual needs shortcuts: a plain net would start as the zero function")
        self.depth, self.blocks_per_stage, self.shortcut = depth, (depth - 2) // 6, shortcut
        self.conv1 = nn.Conv2d(in_chans, CIFAR_STAGES[0].channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(CIFAR_STAGES[0].channels)
        self.relu = nn.ReLU(inplace=True)
        in_channels = CIFAR_STAGES[0].channels
        for index, stage in enumerate(CIFAR_STAGES, start=1):
            blocks = [CifarBlock(in_channels, stage.channels, stage.stride, shortcut)]
            blocks += [CifarBlock(stage.channels, stage.channels, 1, shortcut) for _ in range(1, self.blocks_per_stage)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_channels = stage.channels
        self.num_features = in_channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)

        # "We initialize the weights as in [13]" (He et al., 2015b): zero-mean Gaussian with
        # std sqrt(2 / fan), here fan-out as in the ImageNet family; BatchNorm starts at 1 and 0.
        init_conv_bn_(self)
        if zero_init_residual:  # timm's default for its ResNets: each residual branch starts at zero
            for m in self.modules():
                if isinstance(m, CifarBlock):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


# The two depths of the paper's Fig. 1 (the ends of its Fig. 6), residual (option A) and plain. Other
# depths 6n + 2 (Fig. 6 also has 32 and 44, Table 6 goes to 110) are CifarResNet(depth); they are not
# registered, to keep the registry-wide tests cheap.
@register_model("cifar_resnet", input_size=32)
def resnet20(**kwargs) -> CifarResNet:
    return CifarResNet(20, **kwargs)


@register_model("cifar_resnet", input_size=32)
def resnet56(**kwargs) -> CifarResNet:
    return CifarResNet(56, **kwargs)


@register_model("cifar_resnet", input_size=32)
def plain20(**kwargs) -> CifarResNet:
    return CifarResNet(20, shortcut=None, **kwargs)


@register_model("cifar_resnet", input_size=32)
def plain56(**kwargs) -> CifarResNet:
    return CifarResNet(56, shortcut=None, **kwargs)
