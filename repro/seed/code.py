"""The seed's own code, transcribed so the report can run it (the seed is a document, not a module).

Each class and function keeps the seed's lines, in the seed's order and with the seed's line
breaks; only the indentation (lost in the seed's flattened text) is restored and the name gets a
``Seed``/``seed_`` prefix. ``repro.seed.text.transcription_mismatch`` checks that line for line
against the seed document (modulo whitespace, comments and docstrings), and a test runs it on every
object listed in ``TRANSCRIBED``, so a transcription cannot drift from what the seed prints.

Imports are not the seed's: seed 4.1 calls ``F.relu`` without importing ``torch.nn.functional``
(errata: "imports"), which this module imports once for all sections.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- seed 2.3 -------------------------------------------------------------------------------------


class SeedPreActResidualBlock(nn.Module):
    """Pre-activation残差块 (ResNet v2)"""
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        # 顺序改为 BN -> ReLU -> Conv
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))  # 先激活
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        out = self.conv2(out)
        out += self.shortcut(x)
        return out


class SeedSEResidualBlock(nn.Module):
    """SE残差块 (Squeeze-and-Excitation)"""
    def __init__(self, in_channels, out_channels, stride=1, reduction=16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # SE模块
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(out_channels, out_channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(out_channels // reduction, out_channels),
            nn.Sigmoid()
        )
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # SE注意力
        se = self.se(out).view(out.size(0), out.size(1), 1, 1)
        out = out * se
        if self.downsample is not None:
            x = self.downsample(x)
        out += x
        out = F.relu(out)
        return out


# ---- seed 3.1 -------------------------------------------------------------------------------------


class SeedSwish(nn.Module):
    """Swish激活函数:x * sigmoid(x)"""
    def forward(self, x):
        return x * torch.sigmoid(x)


class SeedSEBlock(nn.Module):
    """Squeeze-and-Excitation模块"""
    def __init__(self, in_channels, se_ratio=0.25):
        super().__init__()
        reduced = max(1, int(in_channels * se_ratio))
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_channels, reduced, bias=False),
            SeedSwish(),
            nn.Linear(reduced, in_channels, bias=False),
            nn.Sigmoid()
        )

    def forward(self, x):
        return x * self.se(x).view(x.size(0), x.size(1), 1, 1)


class SeedMBConvBlock(nn.Module):
    """Mobile Inverted Residual Bottleneck Block"""
    def __init__(self, in_channels, out_channels, kernel_size=3,
                 stride=1, expand_ratio=1, se_ratio=0.25, drop_connect_rate=0.0):
        super().__init__()
        self.stride = stride
        self.drop_connect_rate = drop_connect_rate
        self.in_channels = in_channels
        self.out_channels = out_channels
        # 第一个1x1卷积(如果expand_ratio != 1)
        expanded_channels = in_channels * expand_ratio
        if expand_ratio != 1:
            self.expand_conv = nn.Sequential(
                nn.Conv2d(in_channels, expanded_channels, 1, bias=False),
                nn.BatchNorm2d(expanded_channels, momentum=0.01, eps=1e-3),
                SeedSwish()
            )
        else:
            self.expand_conv = nn.Identity()
        # 深度可分离卷积
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(expanded_channels, expanded_channels, kernel_size,
                      stride=stride, padding=kernel_size//2, groups=expanded_channels, bias=False),
            nn.BatchNorm2d(expanded_channels, momentum=0.01, eps=1e-3),
            SeedSwish()
        )
        # SE模块
        if se_ratio > 0:
            self.se = SeedSEBlock(expanded_channels, se_ratio)
        else:
            self.se = nn.Identity()
        # 输出1x1卷积
        self.project_conv = nn.Sequential(
            nn.Conv2d(expanded_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=0.01, eps=1e-3)
        )
        # 残差连接(仅当stride=1且输入输出通道相同时)
        self.use_residual = (stride == 1 and in_channels == out_channels)

    def forward(self, x):
        identity = x
        # Expansion
        out = self.expand_conv(x)
        # Depthwise Conv
        out = self.depthwise_conv(out)
        # SE
        out = self.se(out)
        # Project
        out = self.project_conv(out)
        # Drop connect
        if self.use_residual and self.drop_connect_rate > 0:
            out = out * (torch.rand_like(out[:, :1, :, :]) < self.drop_connect_rate).detach() / self.drop_connect_rate
        # Residual
        if self.use_residual:
            out = out + identity
        return out


# ---- seed 4.1 -------------------------------------------------------------------------------------


class SeedDenseBlock(nn.Module):
    """DenseNet的密集块"""
    def __init__(self, in_channels, growth_rate, num_layers):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            # 每个Dense层:BN -> ReLU -> Conv(1x1) -> Conv(3x3)
            self.layers.append(nn.Sequential(
                nn.BatchNorm2d(in_channels + i * growth_rate),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels + i * growth_rate, growth_rate, 3, padding=1, bias=False)
            ))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            new_feature = layer(torch.cat(features, dim=1))
            features.append(new_feature)
        return torch.cat(features, dim=1)


class SeedTransitionLayer(nn.Module):
    """DenseNet的过渡层,用于降维"""
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2, 2)
        )

    def forward(self, x):
        return self.conv(x)


class SeedDenseNet(nn.Module):
    """DenseNet-BC (Compression + Bottleneck)"""
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16),
                 num_init_features=64, bn_size=4, num_classes=1000):
        super().__init__()
        # 初始特征层
        self.features = nn.Sequential(
            nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(num_init_features),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1)
        )
        # 密集块和过渡层
        num_features = num_init_features
        self.dense_blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i, num_layers in enumerate(block_config):
            block = SeedDenseBlock(num_features, growth_rate, num_layers)
            self.dense_blocks.append(block)
            num_features = num_features + num_layers * growth_rate
            if i != len(block_config) - 1:
                out_features = num_features // 2  # compression factor = 0.5
                self.transitions.append(SeedTransitionLayer(num_features, out_features))
                num_features = out_features
        # 最终的BN和分类器
        self.final_bn = nn.BatchNorm2d(num_features)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x):
        x = self.features(x)
        for i, block in enumerate(self.dense_blocks):
            x = block(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        x = F.relu(self.final_bn(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# ---- seed 4.2 -------------------------------------------------------------------------------------


class SeedDepthwiseSeparableConv(nn.Module):
    """深度可分离卷积:Depthwise + Pointwise"""
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        # Depthwise: 每个通道单独卷积
        self.depthwise = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1,
                      groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU6(inplace=True)
        )
        # Pointwise: 1x1卷积改变通道数
        self.pointwise = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True)
        )

    def forward(self, x):
        x = self.depthwise(x)
        x = self.pointwise(x)
        return x


class SeedMobileNetV1(nn.Module):
    """MobileNet V1: 使用深度可分离卷积大幅减少计算量"""
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            # 初始层
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
            # 深度可分离卷积块
            SeedDepthwiseSeparableConv(32, 64, stride=1),
            SeedDepthwiseSeparableConv(64, 128, stride=2),
            SeedDepthwiseSeparableConv(128, 128, stride=1),
            SeedDepthwiseSeparableConv(128, 256, stride=2),
            SeedDepthwiseSeparableConv(256, 256, stride=1),
            SeedDepthwiseSeparableConv(256, 512, stride=2),
            SeedDepthwiseSeparableConv(512, 512, stride=1),
            SeedDepthwiseSeparableConv(512, 512, stride=1),
            SeedDepthwiseSeparableConv(512, 512, stride=1),
            SeedDepthwiseSeparableConv(512, 512, stride=1),
            SeedDepthwiseSeparableConv(512, 1024, stride=2),
            SeedDepthwiseSeparableConv(1024, 1024, stride=1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(0.25),
            nn.Linear(1024, num_classes)
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# ---- seed 6.2 -------------------------------------------------------------------------------------


def seed_benchmark_model(model, input_shape=(1, 3, 224, 224), warmup=10, runs=100):
    """基准测试模型的推理速度"""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model = model.to(device)
    model.eval()
    # 预热
    x = torch.randn(input_shape).to(device)
    for _ in range(warmup):
        with torch.no_grad():
            _ = model(x)
    # 计时
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.time()
    for _ in range(runs):
        with torch.no_grad():
            _ = model(x)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elapsed = time.time() - start
    avg_time = elapsed / runs
    return avg_time


# ---- seed 7 (pitfall 1) ---------------------------------------------------------------------------


class SeedResNeXtBlock(nn.Module):
    """ResNeXt瓶颈块,使用分组卷积"""
    def __init__(self, in_channels, out_channels, stride=1, cardinality=32, base_width=4):
        super().__init__()
        # width of group
        width = int(out_channels * (base_width / 64)) * cardinality
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1,
                               groups=cardinality, bias=False)  # 分组!
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels * 4)
            )

    def forward(self, x):
        # ... 标准残差块逻辑
        pass


# Every transcription, with the seed section it comes from (the test of transcriptions reads this).
TRANSCRIBED = {
    SeedPreActResidualBlock: "2.3", SeedSEResidualBlock: "2.3",
    SeedSwish: "3.1", SeedSEBlock: "3.1", SeedMBConvBlock: "3.1",
    SeedDenseBlock: "4.1", SeedTransitionLayer: "4.1", SeedDenseNet: "4.1",
    SeedDepthwiseSeparableConv: "4.2", SeedMobileNetV1: "4.2",
    seed_benchmark_model: "6.2",
    SeedResNeXtBlock: "7",
}
