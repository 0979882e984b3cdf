"""EfficientNet B0-B7 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks"): the MBConv baseline B0 and its compound-scaled family.

Written after the seed document's section 3.1 code, with these departures, each needed to be
exactly the timm / torchvision model (the report's errata page measures each one):

* Drop-connect (stochastic depth) keeps a whole sample's residual branch with probability
  ``1 - p``, scales it by ``1 / (1 - p)`` and does nothing in eval. The seed keeps with
  probability ``p``, divides by ``p``, draws one mask value per pixel and applies it in eval too.
* The Squeeze-and-Excitation bottleneck is a quarter of the block's *input* width (the seed takes
  a quarter of the expanded width, six times more) and its 1x1 layers have biases.

B1-B7 are not tables: each comes from B0's stage table (paper Table 1) and a width, depth and
resolution coefficient (``SCALING``), channels rounded by ``make_divisible`` and block repeats
rounded up, as in the paper's reference code.

Module names: ``stem``, ``stages.i.j`` (the MBConv blocks of Table 1's stages 2-8), ``head``,
``classifier``; inside a block ``expand``/``dw``/``se``/``project``, following the paper's wording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from torch import nn

from repro.layers import ConvBnAct, DropPath, SqueezeExcite, init_conv_bn_, make_divisible
from repro.registry import register_model


@dataclass(frozen=True)
class StageConfig:
    expand_ratio: int  # MBConv1 / MBConv6
    kernel_size: int
    stride: int  # of the stage's first block
    channels: int  # output channels
    repeats: int  # layers


# EfficientNet-B0, paper Table 1, stages 2-8 (stage 1 is the stem, stage 9 the head).
B0_STAGES: tuple[StageConfig, ...] = (
    StageConfig(1, 3, 1, 16, 1),
    StageConfig(6, 3, 2, 24, 2),
    StageConfig(6, 5, 2, 40, 2),
    StageConfig(6, 3, 2, 80, 3),
    StageConfig(6, 5, 1, 112, 3),
    StageConfig(6, 5, 2, 192, 4),
    StageConfig(6, 3, 1, 320, 1),
)
B0_STEM_CHANNELS = 32
B0_HEAD_CHANNELS = 1280

# The paper's grid search at phi = 1 (section 3.3): depth alpha, width beta, resolution gamma,
# chosen so that alpha * beta**2 * gamma**2 ~ 2 (FLOPs grow by about 2**phi).
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


@dataclass(frozen=True)
class Scaling:
    width: float
    depth: float
    resolution: int
    dropout: float


# (width, depth, resolution, dropout) per variant: the paper's reference code (efficientnet_builder.py,
# ``efficientnet_params``), which timm and torchvision copy. These are rounded by hand, not alpha**phi etc.
SCALING: dict[str, Scaling] = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
}


def scale_width(channels: int, width: float) -> int:
    return make_divisible(channels * width, 8)


def scale_depth(repeats: int, depth: float) -> int:
    return int(math.ceil(repeats * depth))


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    padding: str = "symmetric",
) -> ConvBnAct:
    """Convolution (no bias), BatchNorm, and Swish unless ``act=False`` (SiLU is Swish with beta = 1)."""
    return ConvBnAct(in_channels, out_channels, kernel_size, stride, groups, act_layer=nn.SiLU if act else None,
                     norm_layer=partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum), padding=padding)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand (skipped for MBConv1), depthwise kxk, SE, 1x1 linear
    projection, and an identity shortcut with drop-connect when the shape is unchanged."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        se_ratio: float = 0.25,
        drop_path_rate: float = 0.0,
        **conv_args,
    ) -> None:
        super().__init__()
        mid = make_divisible(in_channels * expand_ratio, 8)
        self.expand = conv_bn_act(in_channels, mid, 1, **conv_args) if expand_ratio != 1 else None
        self.dw = conv_bn_act(mid, mid, kernel_size, stride, groups=mid, **conv_args)
        # The SE bottleneck is a quarter of the block's input width, not of ``mid`` (seed's departure).
        self.se = SqueezeExcite(mid, max(1, int(in_channels * se_ratio)), act_layer=nn.SiLU)
        self.project = conv_bn_act(mid, out_channels, 1, act=False, **conv_args)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()
        self.expand_ratio, self.kernel_size, self.stride = expand_ratio, kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.se(self.dw(out)))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class EfficientNet(nn.Module):
    """Stem (3x3/2 conv), the MBConv stages of ``stages`` scaled by ``width`` and ``depth``, 1x1 head
    conv, global average pool, dropout, linear classifier.

    ``drop_path_rate`` grows linearly from 0 at the first block to ``drop_path_rate * (n-1)/n`` at the
    last (the reference code's schedule). ``padding="same"`` gives TensorFlow's padding (the TF ports);
    ``bn_eps`` / ``bn_momentum`` are PyTorch-convention BatchNorm settings.
    """

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        stages: Sequence[StageConfig] = B0_STAGES,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        se_ratio: float = 0.25,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        conv_args = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        channels = scale_width(B0_STEM_CHANNELS, width)
        self.stem = conv_bn_act(in_chans, channels, 3, stride=2, **conv_args)

        repeats = [scale_depth(s.repeats, depth) for s in stages]
        total, index = sum(repeats), 0
        stage_modules = []
        for cfg, n in zip(stages, repeats, strict=True):
            out_channels = scale_width(cfg.channels, width)
            blocks = []
            for i in range(n):
                blocks.append(MBConv(
                    channels, out_channels, cfg.expand_ratio, cfg.kernel_size, cfg.stride if i == 0 else 1,
                    se_ratio=se_ratio, drop_path_rate=drop_path_rate * index / total, **conv_args,
                ))
                channels, index = out_channels, index + 1
            stage_modules.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_modules)

        self.num_features = scale_width(B0_HEAD_CHANNELS, width)
        self.head = conv_bn_act(channels, self.num_features, 1, **conv_args)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)

        init_conv_bn_(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1.0 / math.sqrt(m.out_features), 1.0 / math.sqrt(m.out_features))
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        return self.classifier(self.dropout(x))


def _efficientnet(variant: str, **kwargs) -> EfficientNet:
    s = SCALING[variant]
    return EfficientNet(width=s.width, depth=s.depth, **{"drop_rate": s.dropout, **kwargs})


def _tf_efficientnet(variant: str, **kwargs) -> EfficientNet:
    # The TensorFlow checkpoints' settings (timm's tf_ ports): "SAME" padding and BatchNorm eps 1e-3.
    return _efficientnet(variant, **{"bn_eps": 1e-3, "padding": "same", **kwargs})


@register_model("efficientnet", input_size=SCALING["b0"].resolution)
def efficientnet_b0(**kwargs) -> EfficientNet:
    return _efficientnet("b0", **kwargs)


@register_model("efficientnet", input_size=SCALING["b1"].resolution)
def efficientnet_b1(**kwargs) -> EfficientNet:
    return _efficientnet("b1", **kwargs)


@register_model("efficientnet", input_size=SCALING["b2"].resolution)
def efficientnet_b2(**kwargs) -> EfficientNet:
    return _efficientnet("b2", **kwargs)


@register_model("efficientnet", input_size=SCALING["b3"].resolution)
def efficientnet_b3(**kwargs) -> EfficientNet:
    return _efficientnet("b3", **kwargs)


@register_model("efficientnet", input_size=SCALING["b4"].resolution)
def efficientnet_b4(**kwargs) -> EfficientNet:
    return _efficientnet("b4", **kwargs)


@register_model("efficientnet", input_size=SCALING["b5"].resolution)
def efficientnet_b5(**kwargs) -> EfficientNet:
    return _efficientnet("b5", **kwargs)


@register_model("efficientnet", input_size=SCALING["b6"].resolution)
def efficientnet_b6(**kwargs) -> EfficientNet:
    return _efficientnet("b6", **kwargs)


@register_model("efficientnet", input_size=SCALING["b7"].resolution)
def efficientnet_b7(**kwargs) -> EfficientNet:
    return _efficientnet("b7", **kwargs)


@register_model("efficientnet", input_size=SCALING["b0"].resolution)
def tf_efficientnet_b0(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b0", **kwargs)


@register_model("efficientnet", input_size=SCALING["b1"].resolution)
def tf_efficientnet_b1(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b1", **kwargs)


@register_model("efficientnet", input_size=SCALING["b2"].resolution)
def tf_efficientnet_b2(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b2", **kwargs)


@register_model("efficientnet", input_size=SCALING["b3"].resolution)
def tf_efficientnet_b3(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b3", **kwargs)


@register_model("efficientnet", input_size=SCALING["b4"].resolution)
def tf_efficientnet_b4(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b4", **kwargs)


@register_model("efficientnet", input_size=SCALING["b5"].resolution)
def tf_efficientnet_b5(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b5", **kwargs)


@register_model("efficientnet", input_size=SCALING["b6"].resolution)
def tf_efficientnet_b6(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b6", **kwargs)


@register_model("efficientnet", input_size=SCALING["b7"].resolution)
def tf_efficientnet_b7(**kwargs) -> EfficientNet:
    return _tf_efficientnet("b7", **kwargs)
