"""DenseNet and MobileNet page (seed sections 4.1, 4.2 and 5), the depthwise-separable cost page,
and the seed's DenseNet / MobileNet claims checked on the seed's own code (``repro.seed.code``),
so the report measures the seed's networks themselves rather than a paraphrase of them.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn
from torchvision.models.densenet import DenseNet as TorchvisionDenseNet

from repro.environment import cpu_threads, environment
from repro.equivalence import randomize_, train_step
from repro.models.densenet import CONFIGS, DenseBlock, DenseNet
from repro.flops import build_on_meta, count_flops, count_macs, count_params, meta_params, separable_conv_macs
from repro.registry import MODELS, create_model, references_for
from repro.report.base import (
    TIMING_THREADS,
    TIMING_THREADS_WHY,
    Erratum,
    Job,
    Options,
    Outcome,
    Page,
    Table,
    computed,
    findings,
)
from repro.report.latency import goal_verdict
from repro.report.equivalence import configured_per_library, equivalence
from repro.report.measure import WeightsInfo, best_torchvision, model_stats, reference_params, torchvision_v1
from repro.seed import DENSENET_PARAMETERS_SOURCE, SEED_MODELS, SEED_SEPARABLE_SHAPE
from repro.seed.code import SeedDenseNet, SeedDepthwiseSeparableConv, SeedMobileNetV1
from repro.seed.text import imported_names, leaf_sections, used_modules

DENSENETS = ("densenet121", "densenet161", "densenet169", "densenet201")
MOBILENETS = (
    "mobilenetv1_100",
    "mobilenetv1_125",
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
)
TORCHVISION_BUILDER = {
    **{n: n for n in DENSENETS},
    "mobilenetv3_small_100": "mobilenet_v3_small",
    "mobilenetv3_large_100": "mobilenet_v3_large",
}


# Layers of MobileNetV1 (stride-1 blocks of each resolution), the seed's example, and a 5x5 kernel.
SEPARABLE_SHAPES = (
    (3, 32, 64, 112),
    (3, 128, 128, 56),
    (3, 256, 256, 28),
    SEED_SEPARABLE_SHAPE,
    (3, 512, 512, 14),
    (3, 1024, 1024, 7),
    (5, 96, 96, 14),
)


def separable_layers(kernel_size: int, in_channels: int, out_channels: int) -> tuple[nn.Module, nn.Module]:
    """A standard convolution and the depthwise + pointwise pair replacing it (no bias, BN or activation)."""
    standard = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    separable = nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
    )
    return standard, separable


SEPARABLE_ROUNDS, SEPARABLE_MIN_RUN_TIME = 6, 0.025  # 6 rounds: a sign test can reach p < 0.05 (it needs 5)


def _interleaved_ms(layers: dict[str, nn.Module], x: torch.Tensor) -> dict[str, list[float]]:
    """Per-round median ms of each layer, timed round-robin on ``TIMING_THREADS`` thread(s), the order
    rotating each round, so that load drift hits all alike and the rounds can be paired."""
    # Imported here, as in repro.bench: importing torch.utils.benchmark loads torch's C++-extension
    # machinery, which prints a CUDA warning on CPU-only machines into every `python -m repro.report` run.
    from torch.utils import benchmark

    names = list(layers)
    out: dict[str, list[float]] = {n: [] for n in names}
    with cpu_threads(TIMING_THREADS), torch.no_grad():
        for r in range(SEPARABLE_ROUNDS):
            for name in names[r % len(names):] + names[: r % len(names)]:
                timer = benchmark.Timer(stmt="layer(x)", globals={"layer": layers[name].eval(), "x": x})
                out[name].append(timer.blocked_autorange(min_run_time=SEPARABLE_MIN_RUN_TIME).median * 1e3)
    return out


@functools.lru_cache(maxsize=None)
def separable_cost(kernel_size: int, in_channels: int, out_channels: int, feature_size: int) -> dict:
    standard, separable = separable_layers(kernel_size, in_channels, out_channels)
    x = torch.randn(1, in_channels, feature_size, feature_size)
    formula_standard, formula_separable = separable_conv_macs(kernel_size, in_channels, out_channels, feature_size)
    rounds = _interleaved_ms({"standard": standard, "separable": separable}, x)
    speedups = [a / b for a, b in zip(rounds["standard"], rounds["separable"], strict=True)]
    return {
        "layer": f"{kernel_size}x{kernel_size}, {in_channels} -> {out_channels} channels, "
        f"{feature_size}x{feature_size}",
        "D_K": kernel_size,
        "M": in_channels,
        "N": out_channels,
        "D_F": feature_size,
        "standard MACs (formula)": formula_standard,
        "standard MACs (counted)": count_macs(standard, tuple(x.shape)),
        "separable MACs (formula)": formula_separable,
        "separable MACs (counted)": count_macs(separable, tuple(x.shape)),
        "MAC ratio (seed's speed-up)": round(formula_standard / formula_separable, 2),
        "standard latency (ms)": round(statistics.median(rounds["standard"]), 4),
        "separable latency (ms)": round(statistics.median(rounds["separable"]), 4),
        "measured speed-up": round(statistics.median(speedups), 2),
        "speed-up per round": f"{min(speedups):.2f}-{max(speedups):.2f}",
        # The rate each layer achieves: how well its kernel uses the machine (MACs over the median latency).
        "standard GMAC/s": round(formula_standard / statistics.median(rounds["standard"]) / 1e6, 1),
        "separable GMAC/s": round(formula_separable / statistics.median(rounds["separable"]) / 1e6, 1),
        "speed-up, each round": " ".join(f"{v:.3f}" for v in speedups),
    }


def _rates_note(frame: pd.DataFrame) -> str:
    """What the achieved rates (GMAC/s) say about a speed-up above the MAC ratio: the standard layer of that row
    runs slower than the standard layers of the others."""
    over = frame[frame["measured speed-up"] > frame["MAC ratio (seed's speed-up)"]]
    rates = frame["standard GMAC/s"]
    if over.empty:
        return ""
    return (" Where the measured speed-up exceeds the MAC ratio (" + ", ".join(over["layer"]) + "), its standard "
            "convolution runs at " + ", ".join(f"{r:.1f}" for r in over["standard GMAC/s"]) + " GMAC/s against "
            f"{rates.median():.1f} GMAC/s, the median of the table's standard layers (separable: "
            f"{frame['separable GMAC/s'].min():.1f}-{frame['separable GMAC/s'].max():.1f}): the ratio measures a slow "
            "standard layer as much as a fast separable one.")


@functools.lru_cache(maxsize=None)
def seed_densenet_stats(name: str) -> dict:
    """Parameters of the seed's DenseNet, of ours without bottleneck, and of DenseNet-BC, for one config."""
    config = CONFIGS[name]
    seed_args = (config.growth_rate, config.block_config, config.num_init_features)
    seed = build_on_meta(lambda: SeedDenseNet(*seed_args))
    return {
        "seed": count_params(seed),
        "seed_bn_size_1": meta_params(lambda: SeedDenseNet(*seed_args, bn_size=1)),
        "no_bottleneck": meta_params(lambda: create_model(name, bottleneck=False)),
        "bc": meta_params(lambda: create_model(name)),
        "seed_has_1x1": any(
            isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for block in seed.dense_blocks for m in block.modules()
        ),
    }


@functools.lru_cache(maxsize=None)
def seed_densenet_macs(name: str) -> int:
    config = CONFIGS[name]
    size = MODELS[name].input_size
    seed = build_on_meta(lambda: SeedDenseNet(config.growth_rate, config.block_config, config.num_init_features))
    return count_macs(seed, (1, 3, size, size))


def memory_efficient_check(
    source: str,
    growth_rate: int = 32,
    block_config: tuple[int, ...] = (6, 12, 24, 16),
    num_init_features: int = 64,
    size: int = 32,
) -> dict:
    """One train step of a DenseNet-BC (default: DenseNet-121) with and without checkpointing, same weights, input."""
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


@computed(seconds=lambda source: 3.0)
def memory_efficient_result(source: str) -> dict:
    """``memory_efficient_check`` of DenseNet-121, once per report run."""
    return memory_efficient_check(source)


def jobs(options: Options) -> list[Job]:
    return memory_efficient_result.jobs(("ours", "torchvision")) if options.selected(["densenet121"]) else []


def per_reference_settings(names: list[str]) -> str:
    """Which of ``names`` are built with other settings for one library's reference than for the other's, and
    which settings differ (``configured_per_library``), as a parenthesis; '' where none."""
    differing: dict[str, list[str]] = {}
    specs = [e.spec for name in names for e in references_for(name)]
    for model, keys in configured_per_library(specs).items():
        differing.setdefault(", ".join(keys), []).append(model)
    return (
        " (they differ for "
        + "; ".join(f"{' and '.join(models)}: {keys}" for keys, models in differing.items())
        + ")"
        if differing
        else ""
    )


def build(options: Options) -> Page | None:
    names = options.selected(n for n in DENSENETS + MOBILENETS if n in MODELS)
    if not names:
        return None
    seed_claims = {c.model: c for c in SEED_MODELS}
    rows = []
    for name in names:
        stats = model_stats(name)
        refs = {e.source: e for e in references_for(name)}
        top1 = torchvision_v1(TORCHVISION_BUILDER.get(name))
        claim = seed_claims.get(name)
        rows.append(
            {
                "model": name,
                "params (ours)": stats["params"],
                "params (timm)": reference_params(refs["timm"].spec) if "timm" in refs else None,
                "params (torchvision)": reference_params(refs["torchvision"].spec) if "torchvision" in refs else None,
                "GMACs (counted)": round(stats["macs"] / 1e9, 3),
                "top-1 (torchvision V1)": top1.top1 if top1 else None,
                "seed params (M, 5.2)": claim.params_m if claim else None,
                "seed top-1 (5.2)": claim.top1 if claim else None,
                "max output diff after port": max(
                    (equivalence(e.spec, options.full).eval_output.max_abs for e in refs.values()), default=None
                ),
            }
        )
    tables = [
        Table(
            "densenet_mobilenet",
            "DenseNet-BC, MobileNetV1, MobileNetV3",
            pd.DataFrame(rows).drop(columns="seed top-1 (5.2)"),
            "GMACs counted by `torch.utils.flop_counter` on one 224x224 image. Top-1 from torchvision's weight "
            "metadata (IMAGENET1K_V1) where torchvision has the model. MobileNetV3 parameters are the same for "
            "timm's conv head and torchvision's linear head.",
        )
    ]

    dense = [n for n in DENSENETS if n in names]
    if dense:
        bc_rows = []
        for name in dense:
            seed, ours = seed_densenet_stats(name), model_stats(name)
            bc_rows.append(
                {
                    "config": name,
                    "seed DenseNet params (no 1x1)": seed["seed"],
                    "ours, bottleneck=False": seed["no_bottleneck"],
                    "DenseNet-BC params (ours = timm = torchvision)": ours["params"],
                    "seed GMACs": round(seed_densenet_macs(name) / 1e9, 3),
                    "DenseNet-BC GMACs": round(ours["macs"] / 1e9, 3),
                }
            )
        tables.append(
            Table(
                "densenet_bottleneck",
                "The seed's DenseNet has no bottleneck",
                pd.DataFrame(bc_rows),
                "The seed's `DenseBlock` (section 4.1) is transcribed verbatim and built with each "
                "configuration. Without the 1x1 bottleneck every 3x3 convolution reads the full "
                "concatenation, so the network is larger and slower than the DenseNet-BC it is named after; "
                "`bottleneck=False` on the hand-written model reproduces it exactly (equal parameters).",
            )
        )
        if "densenet121" in dense:
            tables.append(
                Table(
                    "densenet_memory_efficient",
                    "Memory-efficient DenseNet: checkpointed vs plain path",
                    pd.DataFrame([memory_efficient_result("ours"), memory_efficient_result("torchvision")]),
                    "DenseNet-121, batch 2 at 32x32, one train-mode forward and backward with "
                    "`memory_efficient=True` against the plain path, same weights and input; every tensor "
                    "compared for exact equality. torchvision's checkpoint recomputes the bottleneck's "
                    "BatchNorm in the backward pass and so updates its running statistics twice; the "
                    "hand-written layer sends the recomputation's update to throwaway copies.",
                )
            )

    errata = densenet_mobilenet_errata(options)
    intro = (
        findings(errata) + "\n\n"
        "Seed section 4.1 builds DenseNet, 4.2 MobileNetV1, and section 5 recommends MobileNetV3. The equivalence "
        "page shows each hand-written model equal to timm's and torchvision's models, each built with the settings "
        f"of the library it is compared to{per_reference_settings(names)}, and checked on randomized weights "
        "(the same function in float64, bit-identical outputs in float32); here are their sizes and costs, the "
        "seed's DenseNet measured against DenseNet-BC, and the memory-efficient DenseNet path checked against the "
        "plain one. The depthwise-separable cost formula has its own page."
    )
    return Page("densenet_mobilenet", "DenseNet and MobileNet (seed 4.1, 4.2, 5)", intro, tables, errata=errata)


def build_depthwise(options: Options) -> Page | None:
    if not options.selected(n for n in MOBILENETS if n in MODELS):
        return None
    frame = pd.DataFrame([separable_cost(*shape) for shape in SEPARABLE_SHAPES])
    table = Table(
        "separable_cost",
        "Standard vs depthwise-separable convolution",
        frame,
        "Formula: `repro.flops.separable_conv_macs` (the seed's D_K·D_K·M·N·D_F·D_F against "
        "D_K·D_K·M·D_F·D_F + M·N·D_F·D_F). Counted: `torch.utils.flop_counter` on real layers "
        "(convolutions without bias, stride 1, D_F x D_F input), halved to MACs. Latency: batch 1, CPU, "
        f"{TIMING_THREADS} thread ({TIMING_THREADS_WHY}), eager PyTorch; the two layers of a row timed in "
        f"{SEPARABLE_ROUNDS} interleaved rounds (`torch.utils.benchmark` blocked_autorange, at least "
        f"{SEPARABLE_MIN_RUN_TIME} s each); latencies are medians over the rounds, the speed-up the median of the "
        "per-round ratios, with their range ('per round'). Wall-clock varies with the machine.",
        page_columns=(
            "layer",
            "standard MACs (counted)",
            "separable MACs (counted)",
            "MAC ratio (seed's speed-up)",
            "standard latency (ms)",
            "separable latency (ms)",
            "measured speed-up",
            "speed-up per round",
            "standard GMAC/s",
            "separable GMAC/s",
        ),
    )
    errata = depthwise_errata(frame)
    mac_ratio = "MAC ratio (seed's speed-up)"
    others = frame[[shape != SEED_SEPARABLE_SHAPE for shape in zip(frame.D_K, frame.M, frame.N, frame.D_F)]]
    ratios = others["measured speed-up"] / others[mac_ratio]
    span = " to ".join(
        f"{ratios[i]:.0%} of the MAC ratio ({others.loc[i, 'layer']}: {others.loc[i, 'measured speed-up']:.2f}x, "
        f"per round {others.loc[i, 'speed-up per round']}, against {others.loc[i, mac_ratio]:.2f}x)"
        for i in (ratios.idxmin(), ratios.idxmax())
    )
    intro = (
        findings(errata)
        + f" On the table's other layers, measured speed-ups run from {span}: context, not a verdict (a speed-up "
        f"is a property of the layer and the device).{_rates_note(frame)}\n\n"
        "Seed section 4.2 prices a standard convolution at D_K·D_K·M·N·D_F·D_F multiply-accumulates and its "
        "depthwise-separable replacement at D_K·D_K·M·D_F·D_F + M·N·D_F·D_F, and prints the ratio as a "
        "speed-up. The formula is exact: it equals the operations counted on real layers for every shape "
        "below (the layers of MobileNetV1, the seed's own example, a 5x5 kernel). Latency is another matter: "
        "it depends on how well each kernel uses the machine, and a depthwise convolution does little "
        "arithmetic per byte it moves, so the measured speed-up can fall far short of the MAC ratio."
    )
    return Page(
        "depthwise",
        "Depthwise-separable convolution: formula, count, latency (seed 4.2)",
        intro,
        [table],
        errata=errata,
    )


def densenet_mobilenet_errata(options: Options) -> list[Erratum]:
    rows = []
    if options.selected(["densenet121"]) and "densenet121" in MODELS:
        seed = seed_densenet_stats("densenet121")
        bc = seed["bc"]
        rows.append(
            Erratum(
                "4.1",
                "DenseNet-BC: each dense layer is BN -> ReLU -> Conv(1x1) -> Conv(3x3)",
                seed["seed_has_1x1"],
                f"the seed's DenseBlock has {'a' if seed['seed_has_1x1'] else 'no'} 1x1 convolution (BN -> ReLU -> "
                f"Conv(3x3) only): DenseNet-121 config {seed['seed']:,} parameters vs {bc:,} for DenseNet-BC-121 "
                f"(timm, torchvision, ours)",
            )
        )
        rows.append(
            Erratum(
                "4.1",
                "`bn_size=4` sets the bottleneck width (bn_size x growth_rate)",
                seed["seed"] != seed["seed_bn_size_1"],
                f"the seed's DenseNet accepts bn_size and never uses it: {seed['seed']:,} parameters with bn_size=4 "
                f"and {seed['seed_bn_size_1']:,} with bn_size=1",
            )
        )
        rows += dense_connection_errata("densenet121")
        if "resnet50" in MODELS:
            rows += fewer_parameters_errata()

    if options.selected(["mobilenetv1_100"]) and "mobilenetv1_100" in MODELS:
        seed_v1 = build_on_meta(SeedMobileNetV1)
        timm_params = reference_params("timm:mobilenetv1_100")
        blocks = sum(isinstance(m, SeedDepthwiseSeparableConv) for m in seed_v1.modules())
        wide = sum(
            isinstance(m, SeedDepthwiseSeparableConv)
            and m.pointwise[0].in_channels == 512
            and m.pointwise[0].out_channels == 512
            for m in seed_v1.modules()
        )
        depthwise = [
            m
            for m in model_stats("mobilenetv1_100")["model"].modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
        ]
        ours_wide = sum(m.in_channels == 512 and m.stride == (1, 1) for m in depthwise)
        rows.append(
            Erratum(
                "4.2",
                "`MobileNetV1` is MobileNetV1 (depthwise-separable blocks with BN and ReLU6)",
                count_params(seed_v1) == timm_params,
                f"the seed's MobileNetV1 has {blocks} depthwise-separable blocks, {wide} of them 512 -> 512, and "
                f"{count_params(seed_v1):,} parameters; timm's mobilenetv1_100 "
                "(the paper's Table 1; ours is shown equal to it on the equivalence page) has "
                f"{len(depthwise)} blocks, {ours_wide} of them 512 -> 512, and {timm_params:,} parameters",
                note="ReLU6 is TF-Slim's and timm's choice; the paper's Figure 3 draws ReLU",
            )
        )
    if options.selected(["densenet121"]):
        rows.append(missing_imports_erratum())
    return rows


@torch.no_grad()
def dense_connectivity(model: nn.Module, blocks: list[tuple[nn.Module, list[nn.Module]]], size: int = 64) -> dict:
    """What each dense layer of ``model`` reads and what each block passes on, observed in one eval-mode forward
    pass (forward hooks; each ``(block, its layers in order)``): how many layers read exactly the concatenation of
    their block's input and every earlier layer's output, how many blocks output exactly the concatenation of their
    input and every layer's output, and how many pass their input on unchanged (its channels first, bit for bit)."""
    seen: dict[nn.Module, list[torch.Tensor]] = {}

    def keep_input(module: nn.Module, args: tuple) -> None:
        first = args[0]
        seen.setdefault(module, []).append(torch.cat(list(first), 1) if isinstance(first, (list, tuple))
                                            else first.clone())

    def keep_output(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen.setdefault(("out", module), []).append(output.clone())

    handles, was_training = [], model.training
    try:
        for block, layers in blocks:
            handles += [block.register_forward_pre_hook(keep_input), block.register_forward_hook(keep_output)]
            for layer in layers:
                handles += [layer.register_forward_pre_hook(keep_input), layer.register_forward_hook(keep_output)]
        model.eval()(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    fed_all, concatenated, kept = 0, 0, 0
    for block, layers in blocks:
        features = [seen[block][0]]
        for layer in layers:
            fed_all += torch.equal(seen[layer][0], torch.cat(features, 1))
            features.append(seen[("out", layer)][0])
        output = seen[("out", block)][0]
        concatenated += torch.equal(output, torch.cat(features, 1))
        kept += torch.equal(output[:, :features[0].shape[1]], features[0])
    return {"layers": sum(len(layers) for _, layers in blocks), "fed_all_earlier": fed_all,
            "blocks": len(blocks), "concatenated": concatenated, "input_kept": kept}


def dense_connection_errata(name: str = "densenet121") -> list[Erratum]:
    """Seed 2.3/4.1's description of DenseNet, observed on the seed's own DenseNet and on ours (shown equal to timm's
    and torchvision's), and the channel count with and without compression."""
    config = CONFIGS[name]
    torch.manual_seed(0)
    seed_model = SeedDenseNet(config.growth_rate, config.block_config, config.num_init_features)
    ours = create_model(name)
    seed_blocks = [(b, list(b.layers)) for b in seed_model.dense_blocks]
    our_blocks = [(b, list(b.children())) for b in ours.modules() if isinstance(b, DenseBlock)]
    with cpu_threads(1):
        observed = {"the seed's DenseNet": dense_connectivity(seed_model, seed_blocks),
                    f"ours ({name})": dense_connectivity(ours, our_blocks)}

    def each(key: str, total: str) -> str:
        return "; ".join(f"{who}: {o[key]} of {o[total]}" for who, o in observed.items())

    def every(key: str, total: str) -> bool:
        return all(o[key] == o[total] for o in observed.values())

    probe = "forward hooks on one eval-mode pass of a 64x64 image, tensors compared for exact equality"
    compressed, uncompressed = (build_on_meta(lambda c=c: create_model(name, compression=c)) for c in (0.5, 1.0))
    widths = {c: (m.features.norm5.num_features, count_params(m), count_macs(m, (1, 3, 224, 224)))
              for c, m in ((0.5, compressed), (1.0, uncompressed))}
    label = name.replace("densenet", "DenseNet-")
    return [
        Erratum(
            "2.3, 4.1",
            "each layer receives the feature maps of all preceding layers as input (每层接收所有前面层的特征)",
            every("fed_all_earlier", "layers"),
            "dense layers handed exactly the concatenation of their block's input and every earlier layer's output "
            "(the seed's layer is handed the concatenated tensor; ours the list of maps, which it concatenates "
            f"first): {each('fed_all_earlier', 'layers')} ({probe})",
            note="within a dense block, as the DenseNet paper's eq. 2 defines it; between blocks a transition layer "
            "compresses and pools, so no layer receives an earlier block's feature maps as they were",
        ),
        Erratum(
            "4.1",
            "features are concatenated, not added (特征拼接而非相加)",
            every("concatenated", "blocks"),
            "dense blocks whose output is exactly the concatenation of their input and every layer's output: "
            f"{each('concatenated', 'blocks')} ({probe})",
        ),
        Erratum(
            "4.1",
            "concatenation keeps more information (保留更多信息), read as: a block passes on what earlier layers "
            "computed whole, where a sum would mix it with the new features",
            every("input_kept", "blocks"),
            f"dense blocks whose output holds their input unchanged (its channels first, bit for bit): "
            f"{each('input_kept', 'blocks')} ({probe}); lossless by construction, as a concatenation is",
            note="that keeping the maps whole helps (accuracy at matched parameters, the benefit the text implies) "
            "is not measured here: a DenseNet with its concatenations replaced by sums, trained with one recipe "
            "beside it, would decide it",
        ),
        Erratum(
            "4.1",
            "compression in the transition layers keeps the channel count down (需要压缩以控制通道数)",
            widths[0.5][0] < widths[1.0][0],
            f"{label} (ours, shown equal to timm's and torchvision's): with the paper's compression 0.5, "
            f"{widths[0.5][0]:,} channels reach the classifier, {widths[0.5][1]:,} parameters, "
            f"{widths[0.5][2] / 1e9:.2f} GMACs at 224x224; without (compression 1), {widths[1.0][0]:,} channels, "
            f"{widths[1.0][1]:,} parameters, {widths[1.0][2] / 1e9:.2f} GMACs",
            note="not needed for a DenseNet to train: the DenseNet paper's Table 2 also trains DenseNets without "
            "compression (its DenseNet rows, k = 12 and 24), and its Figure 4 (left) compares DenseNet, -B, -C and "
            "-BC; compression is the C of DenseNet-BC",
        ),
    ]


def fewer_parameters_errata(baseline: str = "resnet50") -> list[Erratum]:
    """Seed 4.1: '参数量更少,泛化能力更强'. Fewer parameters at matched accuracy: decided by its own source, the
    DenseNet paper's ImageNet comparison, DenseNets and ResNets trained with one recipe
    (``DENSENET_PARAMETERS_SOURCE``). Beside it, torchvision's metadata, which compares recipes as well as models:
    the smallest DenseNet at least as accurate as ``baseline``, with torchvision's first weights of each
    (IMAGENET1K_V1) and with each architecture's best, which can disagree. Stronger generalization: not measurable
    from validation accuracy alone."""
    label = lambda n: n.replace("densenet", "DenseNet-").replace("resnet", "ResNet-")  # noqa: E731
    params = model_stats(baseline)["params"]
    available = [n for n in DENSENETS if n in MODELS and torchvision_v1(TORCHVISION_BUILDER[n])]

    def matched(weights: Callable[[str], WeightsInfo | None], which: str) -> str:
        base = weights(baseline)
        candidates = sorted((model_stats(n)["params"], n, weights(TORCHVISION_BUILDER[n])) for n in available)
        reaching = [c for c in candidates if c[2].top1 >= base.top1]
        head = f"with {which}: {label(baseline)} {params / 1e6:.2f}M, {base.top1:.2f}% ({base.weights})"
        if not reaching:
            best = max(candidates, key=lambda c: c[2].top1)
            return f"{head}; no DenseNet reaches it (the most accurate, {label(best[1])}, {best[2].top1:.2f}%)"
        p, n, w = reaching[0]
        return (f"{head}; the smallest DenseNet at least as accurate, {label(n)}, {p / 1e6:.2f}M, {w.top1:.2f}% "
                f"({w.weights}): {'fewer' if p < params else 'no fewer'} parameters")

    context = "; ".join(
        matched(weights, which) for weights, which in (
            (torchvision_v1, "torchvision's first weights of each (IMAGENET1K_V1)"),
            (best_torchvision, "each architecture's best torchvision weights"),
        )
    ) if available else ""
    fewer = Erratum(
        "4.1",
        "DenseNet needs fewer parameters (参数量更少)",
        Outcome.HOLDS,
        f"at matched accuracy, {DENSENET_PARAMETERS_SOURCE}",
        note=(f"torchvision's metadata, which compares recipes as well as models, for context: {context}"
              if context else ""),
    )
    generalization = Erratum(
        "4.1",
        "DenseNet generalizes better (泛化能力更强)",
        Outcome.UNDECIDED,
        "not measured: torchvision's metadata gives validation accuracy only, and a higher validation accuracy "
        "with fewer parameters is no measure of the gap between training and held-out accuracy",
        decide="training and held-out accuracy of DenseNet and ResNet trained with one recipe on one dataset "
        "(e.g. ImageNet, or CIFAR as the DenseNet paper's Table 2), compared by their gap",
    )
    return [fewer, generalization]


def depthwise_errata(frame: pd.DataFrame) -> list[Erratum]:
    """Seed 4.2's worked example against the cost table (the rules read the table)."""
    by = frame.set_index(["D_K", "M", "N", "D_F"])
    seed = by.loc[SEED_SEPARABLE_SHAPE]
    k, m, n, f = SEED_SEPARABLE_SHAPE
    exact = (frame["standard MACs (formula)"] == frame["standard MACs (counted)"]).all() and (
        frame["separable MACs (formula)"] == frame["separable MACs (counted)"]
    ).all()
    rows = [
        Erratum(
            "4.2",
            f"a {k}x{k} convolution, M=N={m}, D_F={f}: standard {seed['standard MACs (formula)']:,}, "
            f"depthwise-separable {seed['separable MACs (formula)']:,}",
            bool(exact),
            f"counted on real layers: {seed['standard MACs (counted)']:,} and {seed['separable MACs (counted)']:,} "
            f"multiply-accumulates (and the formula equals the count on all {len(frame)} layers of the table)",
        )
    ]
    # The seed prints its multiply-add counts as 'FLOPS'. The CNN papers call multiply-adds FLOPs (ResNet
    # Table 1, EfficientNet Table 2; MobileNet, the source of 4.2, says 'Mult-Adds'); torch's flop counter
    # counts a multiply and an add as two. The row holds in the papers' convention, which its claim names,
    # and gives the count in the other convention beside it.
    standard, separable = separable_layers(k, m, n)
    flops = {"standard": count_flops(standard, (1, m, f, f)), "separable": count_flops(separable, (1, m, f, f))}
    macs = {"standard": seed["standard MACs (counted)"], "separable": seed["separable MACs (counted)"]}
    per_mac = flops["standard"] / macs["standard"]
    printed = {kind: seed[f"{kind} MACs (formula)"] for kind in macs}
    rows.append(
        Erratum(
            "4.2",
            f"those counts are FLOPs (`普通卷积: {printed['standard']:,} FLOPS`), counting a multiply-add as one "
            "FLOP, as the CNN papers do",
            printed == macs,
            f"multiply-adds counted on the standard and the depthwise-separable layer: {macs['standard']:,} and "
            f"{macs['separable']:,}, "
            + ("the seed's figures" if printed == macs else f"where the seed prints {printed['standard']:,} and "
               f"{printed['separable']:,}")
            + " (the MobileNet paper's 'Mult-Adds'; the ResNet and EfficientNet papers call such counts FLOPs); "
            f"as floating-point operations, a multiply and an add each: {flops['standard']:,} and "
            f"{flops['separable']:,} (torch.utils.flop_counter, {per_mac:g} per multiply-add). The counts are FLOPs "
            "only as multiply-adds",
            note="'FLOPS' (capital S: per second) for a count is a slip of notation, one the EfficientNet paper "
            "makes too",
        )
    )
    mac_ratio = "MAC ratio (seed's speed-up)"
    rounds = [float(v) for v in seed["speed-up, each round"].split()]
    verdict = goal_verdict(rounds, seed[mac_ratio], "above")  # a sign test over the rounds, as the latency goals
    outcome = {"✓": Outcome.HOLDS, "✗": Outcome.FAILS}.get(verdict.split(" ")[0], Outcome.UNDECIDED)
    rows.append(
        Erratum(
            "4.2",
            f"depthwise-separable convolution is {seed[mac_ratio]:.2f}x faster (`加速比`: the "
            "MAC ratio is the speed-up)",
            outcome,
            f"on the seed's own layer ({seed['layer']}), batch 1, {TIMING_THREADS} thread of "
            f"{environment()['device']}: "
            f"{seed['measured speed-up']:.2f}x faster (per round {seed['speed-up per round']}; "
            f"{SEPARABLE_ROUNDS} interleaved rounds), against the MAC ratio {seed[mac_ratio]:.2f}x: "
            f"at least the MAC ratio {verdict}",
            decide=f"more interleaved rounds of the two layers (`SEPARABLE_ROUNDS`, now {SEPARABLE_ROUNDS})"
            if outcome is Outcome.UNDECIDED
            else "",
            note="the MAC count is exact; the time is not proportional to it: depthwise convolutions do little "
            "arithmetic per byte moved, so their share of the time exceeds their share of the MACs, by how much "
            "depending on the layer and the device (the depthwise page's other layers)",
        )
    )
    return rows


def missing_imports_erratum() -> Erratum:
    """Seed sections whose code uses a module name it does not import (each section opens with its own imports)."""
    missing = {s: sorted(used_modules(s) - imported_names(s)) for s in leaf_sections()}
    missing = {s: names for s, names in missing.items() if names}
    return Erratum(
        ", ".join(missing) or "4.1",
        "each section's code runs as printed (each opens with its own imports)",
        not missing,
        "; ".join(
            f"{s} uses {', '.join(n + '.' for n in names)} without importing {'it' if len(names) == 1 else 'them'}"
            for s, names in missing.items()
        )
        + " (a NameError when run as its own script; it works only after "
        "an earlier section's import in the same session)"
        if missing
        else "every section imports what it uses",
    )
