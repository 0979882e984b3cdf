"""DenseNet-BC (Huang et al., 2017, "Densely Connected Convolutional Networks").

Written after the seed document's section 4.1, with one correction the seed's own docstring asks
for: the seed calls its network "DenseNet-BC (Compression + Bottleneck)" and its comment says each
dense layer is "BN -> ReLU -> Conv(1x1) -> Conv(3x3)", but its ``DenseBlock`` builds only
BN-ReLU-Conv(3x3) and never uses the ``bn_size`` it accepts. Here every dense layer is the paper's
BC layer (section 3, "Bottleneck layers"), as in timm and torchvision: BN-ReLU-Conv(1x1) to
``bn_size * growth_rate`` channels, then BN-ReLU-Conv(3x3) to ``growth_rate`` channels.
``bottleneck=False`` builds the seed's layer (the paper's DenseNet-C, compression without
bottleneck), so the report can measure what the missing 1x1 costs.

``memory_efficient=True`` recomputes each layer's concatenation, BN, ReLU and 1x1 convolution in
the backward pass instead of storing them (Pleiss et al., 2017, "Memory-Efficient Implementation
of DenseNets"). Unlike torchvision's option of the same name, the recomputation does not update
BatchNorm running statistics a second time, so outputs, gradients and running statistics equal
those of the plain path exactly.

Module and tensor names follow torchvision (``features.denseblock1.denselayer1.norm1``,
``features.transition1.conv``, ``features.norm5``, ``classifier``), which timm uses as well.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from repro.layers import init_conv_bn_
from repro.registry import register_model


class DenseLayer(nn.Module):
    """One dense layer: reads the concatenation of every earlier feature map, adds ``growth_rate`` channels."""

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        bottleneck: bool = True,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if memory_efficient and not bottleneck:
            raise ValueError("memory_efficient recomputes the 1x1 bottleneck; it needs bottleneck=True")
        if bottleneck:
            width = bn_size * growth_rate
            self.norm1 = nn.BatchNorm2d(in_channels)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        else:  # the seed's layer (DenseNet-C): the 3x3 convolution reads the concatenation directly
            width = in_channels
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.bottleneck, self.drop_rate, self.memory_efficient = bottleneck, drop_rate, memory_efficient

    def _bottleneck(self, features: Sequence[torch.Tensor], update_running_stats: bool = True) -> torch.Tensor:
        x = torch.cat(list(features), 1)
        if not self.bottleneck:
            return x
        norm = self.norm1
        if update_running_stats or not norm.training:
            x = norm(x)
        else:  # the checkpoint's recomputation: the same call, its running-statistics update sent to copies
            x = F.batch_norm(x, norm.running_mean.clone(), norm.running_var.clone(), norm.weight, norm.bias,
                             True, 0.0, norm.eps)
        return self.conv1(self.relu1(x))

    def _checkpointed_bottleneck(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        calls = 0

        def run(*inputs: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            return self._bottleneck(inputs, update_running_stats=calls == 1)

        return checkpoint(run, *features, use_reentrant=False)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and any(f.requires_grad for f in features):
            x = self._checkpointed_bottleneck(features)
        else:
            x = self._bottleneck(features)
        x = self.conv2(self.relu2(self.norm2(x)))
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; the output concatenates the input and every layer's new channels."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, **layer_args) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, **layer_args))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN, ReLU, 1x1 convolution compressing the channels, 2x2 average pool (the paper's transition layer)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(in_channels)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
            ("pool", nn.AvgPool2d(2, stride=2)),
        ]))


@dataclass(frozen=True)
class DenseNetConfig:
    growth_rate: int  # k
    block_config: tuple[int, int, int, int]  # dense layers per block
    num_init_features: int  # stem width, 2k


# The paper's Table 1 (ImageNet DenseNet-BC, k = 32), and DenseNet-161 (k = 48) from the authors' release.
CONFIGS = {
    "densenet121": DenseNetConfig(32, (6, 12, 24, 16), 64),
    "densenet169": DenseNetConfig(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetConfig(32, (6, 12, 48, 32), 64),
    "densenet161": DenseNetConfig(48, (6, 12, 36, 24), 96),
}


class DenseNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four dense blocks joined by transitions, BN, ReLU, pool, linear."""

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        bottleneck: bool = True,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        self.growth_rate, self.block_config, self.bottleneck = growth_rate, tuple(block_config), bottleneck
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ]))
        channels = num_init_features
        layer_args = dict(
            bn_size=bn_size, bottleneck=bottleneck, drop_rate=drop_rate, memory_efficient=memory_efficient
        )
        for i, num_layers in enumerate(self.block_config):
            block = DenseBlock(num_layers, channels, growth_rate, **layer_args)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_channels
            if i != len(self.block_config) - 1:
                compressed = int(channels * compression)  # the paper's theta = 0.5: floor(m / 2)
                self.features.add_module(f"transition{i + 1}", Transition(channels, compressed))
                channels = compressed
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)

        init_conv_bn_(self, mode="fan_in")
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features(x), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _densenet(name: str, **kwargs) -> DenseNet:
    config = CONFIGS[name]
    return DenseNet(config.growth_rate, config.block_config, config.num_init_features, **kwargs)


@register_model("densenet")
def densenet121(**kwargs) -> DenseNet:
    return _densenet("densenet121", **kwargs)


@register_model("densenet")
def densenet161(**kwargs) -> DenseNet:
    return _densenet("densenet161", **kwargs)


@register_model("densenet")
def densenet169(**kwargs) -> DenseNet:
    return _densenet("densenet169", **kwargs)


@register_model("densenet")
def densenet201(**kwargs) -> DenseNet:
    return _densenet("densenet201", **kwargs)
