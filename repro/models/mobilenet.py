"""MobileNetV1 (Howard et al., 2017) and MobileNetV3 (Howard et al., 2019).

MobileNetV1 is written after the seed document's section 4.2: a 3x3/2 stem and thirteen
depthwise-separable blocks (3x3 depthwise conv, BN, activation; 1x1 pointwise conv, BN,
activation), global pool, dropout, linear. Like the seed and timm (and the TensorFlow-Slim
release), the activation is ReLU6; the paper's Figure 3 draws ReLU. ``width_mult`` is the
paper's width multiplier alpha, every width rounded by ``make_divisible``.

MobileNetV3 is the network the seed's section 5 recommends: inverted residual blocks (1x1
expansion, depthwise conv, optional Squeeze-and-Excitation with a hard-sigmoid gate, linear 1x1
projection), ReLU in the early blocks and hard-swish later, and the "efficient last stage":
global pooling before a 1x1 layer of 1280 (Large) or 1024 (Small) channels. Every width is
rounded by the one ``make_divisible`` rule: block outputs, expansions and SE squeezes.

timm and torchvision build the same network with different settings; each is an option here:

* ``head="conv"`` (timm, and the paper's "conv2d 1x1, NBN") applies the last 1x1 layer as a
  convolution with bias to the pooled ``N x C x 1 x 1`` map; ``head="linear"`` (torchvision)
  flattens first and applies an ``nn.Linear``. Same parameters, different kernels.
* BatchNorm ``eps``/``momentum``: timm 1e-5/0.1, torchvision 1e-3/0.01 (TensorFlow's defaults).
* Dropout before the classifier: timm 0.0, torchvision 0.2; stochastic depth (timm only).

Tensor names follow the paper's table (and torchvision's layout): ``features.0`` is the stem,
``features.1`` to ``features.N`` the table's bneck rows, ``features.N+1`` the last 1x1 convolution;
each block holds ``expand``, ``depthwise``, ``se`` and ``project``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from repro.layers import ConvBnAct, DropPath, SqueezeExcite, init_conv_bn_, make_divisible
from repro.registry import register_model

NormLayer = Callable[[int], nn.Module]


def _init_weights(model: nn.Module) -> None:
    init_conv_bn_(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# ---- MobileNetV1 ---------------------------------------------------------------------------------


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's block (paper Figure 3): 3x3 depthwise conv, BN, act; 1x1 pointwise conv, BN, act."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, act_layer: type[nn.Module], norm_layer: NormLayer
    ) -> None:
        super().__init__()
        self.depthwise = ConvBnAct(
            in_channels, in_channels, 3, stride, groups=in_channels, act_layer=act_layer, norm_layer=norm_layer
        )
        self.pointwise = ConvBnAct(in_channels, out_channels, 1, act_layer=act_layer, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


# The paper's Table 1, one (output channels, stride) row per depthwise-separable block, after the
# 32-channel 3x3/2 stem. The table prints the last depthwise conv as "s2"; it runs on the 7x7 map at
# stride 1 (the printed stride is a known typo: the output is 7x7), as in the seed, timm and TF-Slim.
MOBILENETV1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class MobileNetV1(nn.Module):
    """3x3/2 stem, the thirteen blocks of Table 1, global average pool, dropout, linear classifier."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.ReLU6,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBnAct(in_chans, channels, 3, 2, act_layer=act_layer, norm_layer=norm_layer)]
        for out_channels, stride in MOBILENETV1_BLOCKS:
            out_channels = make_divisible(out_channels * width_mult)
            layers.append(DepthwiseSeparable(channels, out_channels, stride, act_layer, norm_layer))
            channels = out_channels
        self.width_mult = width_mult
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


@register_model("mobilenet")
def mobilenetv1_100(**kwargs) -> MobileNetV1:
    return MobileNetV1(width_mult=1.0, **kwargs)


@register_model("mobilenet")
def mobilenetv1_125(**kwargs) -> MobileNetV1:
    return MobileNetV1(width_mult=1.25, **kwargs)


# ---- MobileNetV3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bneck:
    """One row of the MobileNetV3 paper's Tables 1 and 2 (widths at multiplier 1.0)."""

    kernel: int
    exp: int  # "exp size": the expanded width
    out: int
    se: bool
    act: str  # "RE" (ReLU) or "HS" (hard-swish)
    stride: int


@dataclass(frozen=True)
class MobileNetV3Arch:
    stem: int
    blocks: tuple[Bneck, ...]
    last_conv: int  # the 1x1 convolution (with BN) after the blocks
    head: int  # the 1x1 layer (no BN) after global pooling


# Table 1: MobileNetV3-Large.
LARGE = MobileNetV3Arch(16, (
    Bneck(3, 16, 16, False, "RE", 1),
    Bneck(3, 64, 24, False, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 1),
    Bneck(5, 72, 40, True, "RE", 2),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(3, 240, 80, False, "HS", 2),
    Bneck(3, 200, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 480, 112, True, "HS", 1),
    Bneck(3, 672, 112, True, "HS", 1),
    Bneck(5, 672, 160, True, "HS", 2),
    Bneck(5, 960, 160, True, "HS", 1),
    Bneck(5, 960, 160, True, "HS", 1),
), last_conv=960, head=1280)

# Table 2: MobileNetV3-Small.
SMALL = MobileNetV3Arch(16, (
    Bneck(3, 16, 16, True, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 2),
    Bneck(3, 88, 24, False, "RE", 1),
    Bneck(5, 96, 40, True, "HS", 2),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 120, 48, True, "HS", 1),
    Bneck(5, 144, 48, True, "HS", 1),
    Bneck(5, 288, 96, True, "HS", 2),
    Bneck(5, 576, 96, True, "HS", 1),
    Bneck(5, 576, 96, True, "HS", 1),
), last_conv=576, head=1024)

ARCHS = {"large": LARGE, "small": SMALL}
ACTIVATIONS: dict[str, type[nn.Module]] = {"RE": nn.ReLU, "HS": nn.Hardswish}


class InvertedResidual(nn.Module):
    """1x1 expansion (absent when the expanded width equals the input), depthwise conv, SE, linear 1x1 projection."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        se_channels: int | None,
        act_layer: type[nn.Module],
        norm_layer: NormLayer,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        conv = partial(ConvBnAct, act_layer=act_layer, norm_layer=norm_layer)
        self.expand = conv(in_channels, mid_channels, 1) if mid_channels != in_channels else None
        self.depthwise = conv(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels)
        # The SE's inner activation is ReLU in every block, its gate hard-sigmoid (paper section 5).
        self.se = None
        if se_channels is not None:
            self.se = SqueezeExcite(mid_channels, se_channels, act_layer=nn.ReLU, gate_layer=nn.Hardsigmoid)
        self.project = ConvBnAct(mid_channels, out_channels, 1, act_layer=None, norm_layer=norm_layer)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        if self.use_residual:
            out = self.drop_path(out) + x
        return out


class MobileNetV3(nn.Module):
    """Stem (3x3/2, hard-swish), the bneck rows of Table 1 or 2, 1x1 conv, pool, 1x1 head, dropout, classifier.

    The defaults are the paper's network in PyTorch's BatchNorm defaults; the reference table sets
    ``head``, ``bn_eps``, ``bn_momentum`` and ``drop_rate`` to match timm or torchvision.
    """

    def __init__(
        self,
        arch: str | MobileNetV3Arch = "large",
        width_mult: float = 1.0,
        head: str = "conv",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(arch, str):
            if arch not in ARCHS:
                raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
            arch = ARCHS[arch]
        if head not in ("conv", "linear"):
            raise ValueError(f"head must be 'conv' (timm, the paper) or 'linear' (torchvision), got {head!r}")
        self.arch, self.width_mult, self.head_type = arch, width_mult, head
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)

        # Below 0.75 the stem keeps its 16 channels (timm's rule; torchvision offers only width 1.0).
        channels = arch.stem if width_mult < 0.75 else make_divisible(arch.stem * width_mult)
        layers: list[nn.Module] = [ConvBnAct(in_chans, channels, 3, 2, act_layer=nn.Hardswish, norm_layer=norm_layer)]
        table_in = arch.stem
        num_blocks = len(arch.blocks) + 1  # timm spreads stochastic depth over the last conv as well
        for i, row in enumerate(arch.blocks):
            # The expansion is a ratio of the block's input (TF reference: expand_ratio = exp / in).
            mid = make_divisible(channels * row.exp / table_in)
            out = make_divisible(row.out * width_mult)
            se = make_divisible(mid / 4) if row.se else None
            layers.append(InvertedResidual(channels, mid, out, row.kernel, row.stride, se, ACTIVATIONS[row.act],
                                           norm_layer, drop_path_rate * i / num_blocks))
            channels, table_in = out, row.out
        last = make_divisible(arch.last_conv * width_mult)
        layers.append(ConvBnAct(channels, last, 1, act_layer=nn.Hardswish, norm_layer=norm_layer))
        self.features = nn.Sequential(*layers)
        self.num_features = last

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # The head keeps its width at every multiplier (timm's rule; torchvision would scale it, but offers only 1.0).
        self.head = nn.Conv2d(last, arch.head, 1, bias=True) if head == "conv" else nn.Linear(last, arch.head)
        self.head_act = nn.Hardswish(inplace=True)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(arch.head, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        if self.head_type == "conv":
            x = torch.flatten(self.head_act(self.head(x)), 1)
        else:
            x = self.head_act(self.head(torch.flatten(x, 1)))
        return self.classifier(self.dropout(x))


@register_model("mobilenet")
def mobilenetv3_small_050(**kwargs) -> MobileNetV3:
    return MobileNetV3("small", 0.5, **kwargs)


@register_model("mobilenet")
def mobilenetv3_small_075(**kwargs) -> MobileNetV3:
    return MobileNetV3("small", 0.75, **kwargs)


@register_model("mobilenet")
def mobilenetv3_small_100(**kwargs) -> MobileNetV3:
    return MobileNetV3("small", 1.0, **kwargs)


@register_model("mobilenet")
def mobilenetv3_large_075(**kwargs) -> MobileNetV3:
    return MobileNetV3("large", 0.75, **kwargs)


@register_model("mobilenet")
def mobilenetv3_large_100(**kwargs) -> MobileNetV3:
    return MobileNetV3("large", 1.0, **kwargs)
