"""DenseNet and MobileNet page (seed sections 4.1, 4.2 and 5), the depthwise-separable cost table,
and the seed's DenseNet / MobileNet claims checked.

The seed's own DenseNet and MobileNetV1 code is transcribed below (``Seed*`` classes, indentation
restored; the seed's 4.1 block calls ``F.relu`` without importing ``torch.nn.functional``) so the
report measures the seed's networks themselves rather than a paraphrase of them.
"""

from __future__ import annotations

import functools

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark

import reference
from repro.equivalence import randomize_, train_step
from repro.flops import build_on_meta, count_macs, count_params, meta_params, separable_conv_macs
from repro.registry import MODELS, create_model, references_for
from repro.report import Erratum, Job, Options, Page, Table, computed, erratum, jobs, section
from repro.report.equivalence import equivalence
from repro.report.resnet import model_stats, reference_params
from repro.seed import SEED_MODELS, torchvision_top1

DENSENETS = ("densenet121", "densenet161", "densenet169", "densenet201")
MOBILENETS = ("mobilenetv1_100", "mobilenetv1_125", "mobilenetv3_small_050", "mobilenetv3_small_075",
              "mobilenetv3_small_100", "mobilenetv3_large_075", "mobilenetv3_large_100")
TORCHVISION_BUILDER = {**{n: n for n in DENSENETS},
                       "mobilenetv3_small_100": "mobilenet_v3_small", "mobilenetv3_large_100": "mobilenet_v3_large"}


# ---- the seed's code, section 4.1 -----------------------------------------------------------------


class SeedDenseBlock(nn.Module):
    """DenseNet的密集块 (seed 4.1, verbatim). Its comment promises BN -> ReLU -> Conv(1x1) -> Conv(3x3)."""

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
    """DenseNet的过渡层 (seed 4.1, verbatim)."""

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
    """DenseNet-BC (Compression + Bottleneck) (seed 4.1, verbatim; ``bn_size`` is accepted and never used)."""

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(num_init_features),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1)
        )
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


# ---- the seed's code, section 4.2 -----------------------------------------------------------------


class SeedDepthwiseSeparableConv(nn.Module):
    """深度可分离卷积 (seed 4.2, verbatim)."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU6(inplace=True)
        )
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
    """MobileNet V1 (seed 4.2, verbatim)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
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


# Seed 4.2's worked example: D_K = 3, M = N = 64, D_F = 14.
SEED_SEPARABLE_SHAPE = (3, 64, 64, 14)
# Layers of MobileNetV1 (stride-1 blocks of each resolution), the seed's example, and a 5x5 kernel.
SEPARABLE_SHAPES = ((3, 32, 64, 112), (3, 128, 128, 56), (3, 256, 256, 28), SEED_SEPARABLE_SHAPE,
                    (3, 512, 512, 14), (3, 1024, 1024, 7), (5, 96, 96, 14))


def separable_layers(kernel_size: int, in_channels: int, out_channels: int) -> tuple[nn.Module, nn.Module]:
    """A standard convolution and the depthwise + pointwise pair replacing it (no bias, BN or activation)."""
    standard = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    separable = nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
    )
    return standard, separable


def _latency_ms(layer: nn.Module, x: torch.Tensor) -> float:
    layer.eval()
    with torch.no_grad():
        timer = benchmark.Timer(stmt="layer(x)", globals={"layer": layer, "x": x})
        return timer.blocked_autorange(min_run_time=0.2).median * 1e3


@functools.lru_cache(maxsize=None)
def separable_cost(kernel_size: int, in_channels: int, out_channels: int, feature_size: int) -> dict:
    standard, separable = separable_layers(kernel_size, in_channels, out_channels)
    x = torch.randn(1, in_channels, feature_size, feature_size)
    formula_standard, formula_separable = separable_conv_macs(kernel_size, in_channels, out_channels, feature_size)
    latency_standard, latency_separable = _latency_ms(standard, x), _latency_ms(separable, x)
    return {
        "layer": f"{kernel_size}x{kernel_size}, {in_channels} -> {out_channels} channels, {feature_size}x{feature_size}",
        "D_K": kernel_size, "M": in_channels, "N": out_channels, "D_F": feature_size,
        "standard MACs (formula)": formula_standard,
        "standard MACs (counted)": count_macs(standard, tuple(x.shape)),
        "separable MACs (formula)": formula_separable,
        "separable MACs (counted)": count_macs(separable, tuple(x.shape)),
        "MAC ratio (seed's speed-up)": round(formula_standard / formula_separable, 2),
        "standard latency (ms)": round(latency_standard, 4),
        "separable latency (ms)": round(latency_separable, 4),
        "measured speed-up": round(latency_standard / latency_separable, 2),
    }


@functools.lru_cache(maxsize=None)
def seed_densenet_stats(name: str) -> dict:
    """Parameters of the seed's DenseNet, of ours without bottleneck, and of DenseNet-BC, for one config."""
    from repro.models.densenet import CONFIGS

    config = CONFIGS[name]
    seed_args = (config.growth_rate, config.block_config, config.num_init_features)
    seed = build_on_meta(lambda: SeedDenseNet(*seed_args))
    return {
        "seed": count_params(seed),
        "seed_bn_size_1": meta_params(lambda: SeedDenseNet(*seed_args, bn_size=1)),
        "no_bottleneck": meta_params(lambda: create_model(name, bottleneck=False)),
        "bc": meta_params(lambda: create_model(name)),
        "seed_has_1x1": any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                            for block in seed.dense_blocks for m in block.modules()),
    }


@functools.lru_cache(maxsize=None)
def seed_densenet_macs(name: str) -> int:
    from repro.models.densenet import CONFIGS

    config = CONFIGS[name]
    size = MODELS[name].input_size
    seed = build_on_meta(lambda: SeedDenseNet(config.growth_rate, config.block_config, config.num_init_features))
    return count_macs(seed, (1, 3, size, size))


def memory_efficient_check(source: str, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                           num_init_features: int = 64, size: int = 32) -> dict:
    """One train step of a DenseNet-BC (default: DenseNet-121) with and without checkpointing, same weights and input."""
    from torchvision.models.densenet import DenseNet as TorchvisionDenseNet

    from repro.models.densenet import DenseNet

    build = DenseNet if source == "ours" else TorchvisionDenseNet
    config = dict(growth_rate=growth_rate, block_config=block_config, num_init_features=num_init_features)
    plain, efficient = build(**config), build(**config, memory_efficient=True)
    randomize_(plain, (2, 3, size, size))
    efficient.load_state_dict(plain.state_dict())
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 3, size, size, generator=gen), torch.randn(2, 1000, generator=gen)
    a, b = train_step(plain, x, weight), train_step(efficient, x, weight)
    stats_differ = [k for k in a.buffers if not torch.equal(a.buffers[k], b.buffers[k])]
    counter = "features.denseblock1.denselayer2.norm1.num_batches_tracked"
    before = int(plain.state_dict()[counter])
    return {
        "implementation": "repro (this suite)" if source == "ours" else "torchvision",
        "outputs equal": torch.equal(a.output, b.output),
        "input grad equal": torch.equal(a.input_grad, b.input_grad),
        "parameter grads equal": all(torch.equal(a.grads[k], b.grads[k]) for k in a.grads),
        "running stats equal": not stats_differ,
        "buffers that differ": len(stats_differ),
        "batches one step adds to a bottleneck BN (plain / checkpointed)":
            f"{int(a.buffers[counter]) - before} / {int(b.buffers[counter]) - before}",
    }


@computed(cost=lambda source: 3.0)
def memory_efficient_result(source: str) -> dict:
    """``memory_efficient_check`` of DenseNet-121, once per report run."""
    return memory_efficient_check(source)


@jobs
def densenet_mobilenet_jobs(options: Options) -> list[Job]:
    return memory_efficient_result.jobs(("ours", "torchvision")) if options.selected(["densenet121"]) else []


@section
def densenet_mobilenet_page(options: Options) -> Page | None:
    names = options.selected(n for n in DENSENETS + MOBILENETS if n in MODELS)
    if not names:
        return None
    seed_claims = {c.model: c for c in SEED_MODELS}
    rows = []
    for name in names:
        stats = model_stats(name)
        refs = {e.source: e for e in references_for(name)}
        top1 = torchvision_top1(TORCHVISION_BUILDER[name]) if name in TORCHVISION_BUILDER else None
        claim = seed_claims.get(name)
        rows.append({
            "model": name,
            "params (ours)": stats["params"],
            "params (timm)": reference_params(refs["timm"].spec) if "timm" in refs else None,
            "params (torchvision)": reference_params(refs["torchvision"].spec) if "torchvision" in refs else None,
            "GMACs (counted)": round(stats["macs"] / 1e9, 3),
            "top-1 (torchvision weights)": top1[0] if top1 else None,
            "seed params (M, 5.2)": claim.params_m if claim else None,
            "seed top-1 (5.2)": claim.top1 if claim else None,
            "max output diff after port": max((equivalence(e.spec, options.full).eval_output.max_abs for e in refs.values()), default=None),
        })
    tables = [Table("densenet_mobilenet", "DenseNet-BC, MobileNetV1, MobileNetV3", pd.DataFrame(rows),
                    "GMACs counted by `torch.utils.flop_counter` on one 224x224 image. Top-1 from torchvision's weight "
                    "metadata (IMAGENET1K_V1) where torchvision has the model. MobileNetV3 parameters are the same for "
                    "timm's conv head and torchvision's linear head.")]

    dense = [n for n in DENSENETS if n in names]
    if dense:
        bc_rows = []
        for name in dense:
            seed, ours = seed_densenet_stats(name), model_stats(name)
            bc_rows.append({
                "config": name,
                "seed DenseNet params (no 1x1)": seed["seed"],
                "ours, bottleneck=False": seed["no_bottleneck"],
                "DenseNet-BC params (ours = timm = torchvision)": ours["params"],
                "seed GMACs": round(seed_densenet_macs(name) / 1e9, 3),
                "DenseNet-BC GMACs": round(ours["macs"] / 1e9, 3),
            })
        tables.append(Table("densenet_bottleneck", "The seed's DenseNet has no bottleneck", pd.DataFrame(bc_rows),
                            "The seed's `DenseBlock` (section 4.1) is transcribed verbatim and built with each "
                            "configuration. Without the 1x1 bottleneck every 3x3 convolution reads the full "
                            "concatenation, so the network is larger and slower than the DenseNet-BC it is named after; "
                            "`bottleneck=False` on the hand-written model reproduces it exactly (equal parameters)."))
        if "densenet121" in dense:
            tables.append(Table("densenet_memory_efficient", "Memory-efficient DenseNet: checkpointed vs plain path",
                                pd.DataFrame([memory_efficient_result("ours"), memory_efficient_result("torchvision")]),
                                "DenseNet-121, batch 2 at 32x32, one train-mode forward and backward with "
                                "`memory_efficient=True` against the plain path, same weights and input; every tensor "
                                "compared for exact equality. torchvision's checkpoint recomputes the bottleneck's "
                                "BatchNorm in the backward pass and so updates its running statistics twice; the "
                                "hand-written layer sends the recomputation's update to throwaway copies."))

    intro = (
        "Seed section 4.1 builds DenseNet, 4.2 MobileNetV1, and section 5 recommends MobileNetV3. Each "
        "hand-written model is proven equal to timm and torchvision on the equivalence page; here are their "
        "sizes and costs, the seed's DenseNet measured against DenseNet-BC, and the memory-efficient DenseNet "
        "path checked against the plain one. The depthwise-separable cost formula has its own page."
    )
    return Page("densenet_mobilenet", "DenseNet and MobileNet (seed 4.1, 4.2, 5)", intro, tables)


@section
def depthwise_page(options: Options) -> Page | None:
    if not options.selected(n for n in MOBILENETS if n in MODELS):
        return None
    cost = pd.DataFrame([separable_cost(*shape) for shape in SEPARABLE_SHAPES])
    table = Table("separable_cost", "Standard vs depthwise-separable convolution", cost,
                  "Formula: `repro.flops.separable_conv_macs` (the seed's D_K·D_K·M·N·D_F·D_F against "
                  "D_K·D_K·M·D_F·D_F + M·N·D_F·D_F). Counted: `torch.utils.flop_counter` on real layers "
                  "(convolutions without bias, stride 1, D_F x D_F input), halved to MACs. Latency: median "
                  f"of `torch.utils.benchmark` blocked_autorange (0.2 s each), batch 1, CPU, "
                  f"{torch.get_num_threads()} thread(s); wall-clock varies with the machine.")
    intro = (
        "Seed section 4.2 prices a standard convolution at D_K·D_K·M·N·D_F·D_F multiply-accumulates and its "
        "depthwise-separable replacement at D_K·D_K·M·D_F·D_F + M·N·D_F·D_F, and prints the ratio as a "
        "speed-up. The formula is exact: it equals the operations counted on real layers for every shape "
        "below (the layers of MobileNetV1, the seed's own example, a 5x5 kernel). Latency is another matter: "
        "it depends on how well each kernel uses the machine, and a depthwise convolution does little "
        "arithmetic per byte it moves, so the measured speed-up can fall far short of the MAC ratio (compare "
        "the two right-hand columns; the seed's own small example is on the errata page)."
    )
    return Page("depthwise", "Depthwise-separable convolution: formula, count, latency (seed 4.2)", intro, [table])


@erratum
def densenet_mobilenet_errata(options: Options) -> list[Erratum]:
    rows = []
    if options.selected(["densenet121"]) and "densenet121" in MODELS:
        seed = seed_densenet_stats("densenet121")
        bc = seed["bc"]
        rows.append(Erratum(
            "4.1", "DenseNet-BC: each dense layer is BN -> ReLU -> Conv(1x1) -> Conv(3x3)", seed["seed_has_1x1"],
            f"the seed's DenseBlock has {'a' if seed['seed_has_1x1'] else 'no'} 1x1 convolution (BN -> ReLU -> "
            f"Conv(3x3) only): DenseNet-121 config {seed['seed']:,} parameters vs {bc:,} for DenseNet-BC-121 "
            f"(timm, torchvision, ours)"))
        rows.append(Erratum(
            "4.1", "`bn_size=4` sets the bottleneck width (bn_size x growth_rate)", seed["seed"] != seed["seed_bn_size_1"],
            f"the seed's DenseNet accepts bn_size and never uses it: {seed['seed']:,} parameters with bn_size=4 "
            f"and {seed['seed_bn_size_1']:,} with bn_size=1"))
        if "resnet50" in MODELS:
            resnet50 = model_stats("resnet50")["params"]
            dn_top1, rn_top1 = torchvision_top1("densenet121"), torchvision_top1("resnet50")
            rows.append(Erratum(
                "4.1", "DenseNet needs fewer parameters (参数量更少)", bc < resnet50,
                f"DenseNet-121 {bc / 1e6:.2f}M vs ResNet-50 {resnet50 / 1e6:.2f}M parameters "
                f"(top-1 {dn_top1[0]:.2f}% vs {rn_top1[0]:.2f}%, torchvision metadata)"))

    if options.selected(["mobilenetv1_100"]) and "mobilenetv1_100" in MODELS:
        k, m, n, f = SEED_SEPARABLE_SHAPE
        cost = separable_cost(*SEED_SEPARABLE_SHAPE)
        exact = (cost["standard MACs (formula)"] == cost["standard MACs (counted)"]
                 and cost["separable MACs (formula)"] == cost["separable MACs (counted)"])
        rows.append(Erratum(
            "4.2", f"a {k}x{k} convolution, M=N={m}, D_F={f}: standard {cost['standard MACs (formula)']:,}, "
                   f"depthwise-separable {cost['separable MACs (formula)']:,}", exact,
            f"counted on real layers: {cost['standard MACs (counted)']:,} and {cost['separable MACs (counted)']:,} "
            f"multiply-accumulates"))
        standard_flops = count_macs(separable_layers(k, m, n)[0], (1, m, f, f)) * 2
        rows.append(Erratum(
            "4.2", f"those counts are FLOPS (`普通卷积: {cost['standard MACs (formula)']:,} FLOPS`)",
            standard_flops == cost["standard MACs (formula)"],
            f"they are multiply-accumulates: torch.utils.flop_counter counts {standard_flops:,} FLOPs for the "
            f"standard convolution (2 per multiply-accumulate)"))
        ratio, measured = cost["MAC ratio (seed's speed-up)"], cost["measured speed-up"]
        rows.append(Erratum(
            "4.2", f"depthwise-separable convolution is {ratio:.2f}x faster (`加速比`)", measured >= 0.75 * ratio,
            f"{ratio:.2f}x fewer multiply-accumulates, but measured {measured:.2f}x faster on this CPU "
            f"({cost['standard latency (ms)']:.3f} ms vs {cost['separable latency (ms)']:.3f} ms, batch 1; "
            f"counted as holding within 25%)"))
        seed_v1, timm_v1 = SeedMobileNetV1(), reference.create("timm:mobilenetv1_100")
        acts = sorted({type(mod).__name__ for mod in timm_v1.modules() if isinstance(mod, (nn.ReLU, nn.ReLU6))})
        same = count_params(seed_v1) == count_params(timm_v1) and acts == ["ReLU6"]
        rows.append(Erratum(
            "4.2", "MobileNetV1: 13 depthwise-separable blocks with BN and ReLU6", same,
            f"the seed's MobileNetV1 has {count_params(seed_v1):,} parameters, timm's mobilenetv1_100 "
            f"{count_params(timm_v1):,}, activations {', '.join(acts)} (as TF-Slim; the paper's Figure 3 draws ReLU)"))
    return rows
