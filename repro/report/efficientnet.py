"""EfficientNet page (seed sections 3.1, 3.2, pitfall 2): the B0 stage table, compound scaling B0-B7,
EfficientNet against ResNet; the seed's MBConv code (``repro.seed.code``) run beside the references'."""

from __future__ import annotations

import functools
import math

import pandas as pd
import torch
from torch import nn

from repro.environment import cpu_threads
from repro.layers import SqueezeExcite, make_divisible
from repro.flops import build_on_meta
from repro.models.efficientnet import (
    ALPHA,
    B0_HEAD_CHANNELS,
    B0_STAGES,
    BETA,
    GAMMA,
    SCALING,
    EfficientNet,
    MBConv,
)
from repro.models.resnet import Bottleneck
from repro.registry import MODELS, create_model
from repro.report.base import Erratum, Options, Outcome, Page, Table, findings
from repro.report.figures import TORCHVISION_KIND, Top1Figure, paper_top1_cell, top1_errata
from repro.report.measure import meta_model, model_stats, reference_params, torchvision_builder, torchvision_v1
from repro.seed import (
    EFFICIENTNET_B0_SEARCH_SOURCE,
    EFFICIENTNET_DEPTH_SOURCE,
    EFFICIENTNET_STEP_1,
    EFFICIENTNET_STEP_1_SOURCE,
    EFFICIENTNET_TABLE_2_RESNETS,
    FIXRES_SOURCE,
    PAPER,
    SEED_ALPHA_BETA_GAMMA,
    SEED_B0_TABLE,
    SEED_EFFICIENTNET_CONFIG,
    SEED_LABELS,
    SEED_PITFALL_2_SIZES,
    SEED_RESNETS,
    SEED_TOP1_SECTION_3_2,
    seed_flops_column,
    seed_flops_printed,
)
from repro.seed.code import SeedMBConvBlock
from repro.seed.text import lines_containing

EFFICIENTNETS = tuple(f"efficientnet_b{n}" for n in range(8))
SEED_FLOPS = "seed 'FLOPS' (params x 2 / 1e9)"


def torchvision_crop(builder: str) -> int | None:
    """The crop size torchvision evaluated the IMAGENET1K_V1 weights at."""
    weights = torchvision_v1(builder)
    return weights.crop if weights else None


def seed_branch(block: SeedMBConvBlock, x: torch.Tensor) -> torch.Tensor:
    return block.project_conv(block.se(block.depthwise_conv(block.expand_conv(x))))


def our_branch(block: MBConv, x: torch.Tensor) -> torch.Tensor:
    out = x if block.expand is None else block.expand(x)
    return block.project(block.se(block.dw(out)))


@torch.no_grad()
def drop_connect_behaviour(block: nn.Module, branch, x: torch.Tensor) -> dict[str, float]:
    """What a residual block's drop-connect does to ``x``: the fraction of branch values kept, their
    scale, the fraction of samples whose mask is not one value, and whether two calls agree."""
    out = block(x)
    kept = out != x  # a dropped value leaves exactly the shortcut
    scale = ((out - x)[kept] / branch(block, x)[kept]).median()
    per_sample = kept.flatten(1)
    mixed = (per_sample.any(1) & ~per_sample.all(1)).float().mean()
    return {
        "keep_fraction": float(kept.float().mean()),
        "kept_scale": float(scale),
        "mixed_mask_samples": float(mixed),
        "repeatable": bool(torch.equal(block(x), out)),
    }


def seed_and_our_blocks(p: float = 0.2, channels: int = 16) -> tuple[SeedMBConvBlock, MBConv]:
    torch.manual_seed(0)
    seed_block = SeedMBConvBlock(channels, channels, 3, 1, expand_ratio=6, drop_connect_rate=p).eval()
    ours = MBConv(channels, channels, 6, 3, 1, drop_path_rate=p).eval()
    return seed_block, ours


@functools.lru_cache(maxsize=None)
def drop_connect_measurements(p: float = 0.2) -> dict[str, dict[str, float]]:
    seed_block, ours = seed_and_our_blocks(p)
    x = torch.randn(512, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    results = {"seed (eval mode)": drop_connect_behaviour(seed_block, seed_branch, x)}
    results["ours (eval mode)"] = drop_connect_behaviour(ours, our_branch, x)
    ours.drop_path.train()  # BatchNorm stays in eval: only the drop-connect is random
    results["ours (train mode)"] = drop_connect_behaviour(ours, our_branch, x)
    return results


# ---- the page ---------------------------------------------------------------------------------------


@torch.no_grad()
def stage_table(model: nn.Module, resolution: int) -> pd.DataFrame:
    """Paper Table 1 read off a model: each stage's operator, input resolution, output channels, layers."""
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    parts = [("stem", model.stem)] + [(f"stages.{i}", s) for i, s in enumerate(model.stages)] + [("head", model.head)]
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, (inp[0].shape, out.shape)))
        for name, m in parts
    ]
    try:
        model.eval()(torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i, (name, module) in enumerate(parts, start=1):
        (_, _, h, w), (_, c, _, _) = seen[name]
        if name == "stem":
            k = module.conv.kernel_size[0]
            operator, layers = f"Conv{k}x{k}", 1
        elif name == "head":
            k = module.conv.kernel_size[0]
            operator, layers = f"Conv{k}x{k} & Pooling & FC", 1
        else:
            first = module[0]
            operator, layers = f"MBConv{first.expand_ratio}, k{first.kernel_size}x{first.kernel_size}", len(module)
        rows.append(
            {
                "stage": i,
                "operator": operator,
                "resolution": f"{h}x{w}",
                "channels": c,
                "layers": layers,
                "stride": round(h / seen[name][1][2]),
                "module": name,
            }
        )
    return pd.DataFrame(rows)


def _phi(value: float, base: float) -> float:
    return math.log(value) / math.log(base)


def scaling_rows(names: tuple[str, ...] = EFFICIENTNETS) -> pd.DataFrame:
    """One row per variant; growth is measured against B0, which is always computed."""
    base_macs = model_stats("efficientnet_b0")["macs"]
    constraint = ALPHA * BETA**2 * GAMMA**2
    rows = []
    for name in names:
        n = EFFICIENTNETS.index(name)
        s, stats = SCALING[name.rsplit("_", 1)[1]], model_stats(name)
        model = stats["model"]
        ratio = stats["macs"] / base_macs
        rows.append(
            {
                "model": name,
                "width": s.width,
                "depth": s.depth,
                "resolution": MODELS[name].input_size,
                "head channels": model.num_features,
                "blocks per stage": "-".join(str(len(stage)) for stage in model.stages),
                "blocks": sum(len(stage) for stage in model.stages),
                "depth (realised)": round(
                    sum(len(stage) for stage in model.stages) / sum(c.repeats for c in B0_STAGES), 3
                ),
                "params": stats["params"],
                "GMACs (counted)": round(stats["macs"] / 1e9, 3),
                "GMACs / B0": round(ratio, 2),
                "d·w²·r²": round(s.depth * s.width**2 * (s.resolution / SCALING["b0"].resolution) ** 2, 2),
                "phi (nominal, = N)": n,
                "2^phi": 2**n,
                f"{constraint:.3f}^phi": round(constraint**n, 2),
                "phi from GMACs (log2)": round(math.log2(ratio), 2),
                "phi implied by depth": round(_phi(s.depth, ALPHA), 2),
                "phi implied by width": round(_phi(s.width, BETA), 2),
                "phi implied by resolution": round(_phi(s.resolution / SCALING["b0"].resolution, GAMMA), 2),
            }
        )
    return pd.DataFrame(rows)


def scaling_note(frame: pd.DataFrame) -> str:
    constraint = ALPHA * BETA**2 * GAMMA**2
    note = (
        "Width, depth and resolution coefficients are the paper's reference code's (timm and torchvision copy them); "
        "channels are `make_divisible(c * width, 8)`, block repeats `ceil(r * depth)`. Params and GMACs are counted "
        "from the hand-written model at its native resolution (`torch.utils.flop_counter`: convolutions and the "
        f"classifier). The paper's rule, depth {ALPHA}^phi, width {BETA}^phi, resolution {GAMMA}^phi with "
        f"α·β²·γ² = {constraint:.3f} ≈ 2, promises FLOPs growing as about 2^phi. The paper gives no phi "
        "per model: `phi (nominal)` reads B<N> as phi = N, the usual reading; the "
        "`phi implied by` columns (in the CSV) invert each released coefficient, as rounded numbers (the errata row "
        "on B1-B7 takes each coefficient's printed precision into account), and `phi from GMACs` the counted growth. "
        "`d·w²·r²` is the growth the coefficients themselves predict."
    )
    rows = frame.set_index("model")
    scaled = rows[rows["phi (nominal, = N)"] > 0]
    if len(scaled):
        # Which variant's counted growth strays furthest from what its own coefficients predict.
        name = (scaled["GMACs / B0"] / scaled["d·w²·r²"]).idxmax()
        v = scaled.loc[name]
        note += (
            f" {name}'s counted MACs depart most from what its own coefficients predict: `ceil` turns "
            f"depth {v['depth']:g} into {v['blocks']} blocks instead of {sum(c.repeats for c in B0_STAGES)} "
            f"({v['depth (realised)']:g}x), so it counts {v['GMACs / B0']:g}x B0's MACs where d·w²·r² says "
            f"{v['d·w²·r²']:g} and 2^{v['phi (nominal, = N)']} says {v['2^phi']}."
        )
    scaled = frame[frame["phi (nominal, = N)"] > 0]
    if len(scaled):
        short = scaled["phi (nominal, = N)"] - scaled["phi from GMACs (log2)"]
        verdict = "Every scaled variant counts fewer MACs than 2^N" if (short > 0).all() else "Against 2^N"
        note += f" {verdict}: phi from GMACs falls short of N by {short.min():.2f} to {short.max():.2f}."
    if "efficientnet_b7" in rows.index:
        b7 = rows.loc["efficientnet_b7"]
        note += (
            f" B7 counts {b7['GMACs / B0']:g}x B0's MACs = 2^{b7['phi from GMACs (log2)']:g}, not 2^7 = 128 "
            f"({constraint:.3f}^7 = {constraint**7:.1f} with the exact constraint); its coefficients imply phi "
            f"{b7['phi implied by depth']:g} (depth), {b7['phi implied by width']:g} (width) and "
            f"{b7['phi implied by resolution']:g} (resolution)."
        )
    return note


def receptive_field(model: nn.Module) -> int:
    """Theoretical receptive field (pixels) of one output unit of the last feature map along the
    convolutional path: 1 + sum of (kernel - 1) x the product of the strides before it, over the
    convolutions in registration order (forward order here). SE's 1x1 stride-1 convolutions add nothing.
    It depends on the layers only, not on the input size; a global pooling inside the model (see
    ``pools_globally``) is not a convolution and is not in it."""
    field, jump = 1, 1
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            field += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    return field


@torch.no_grad()
def pools_globally(block: nn.Module) -> bool:
    """Whether an output of ``block`` (in eval mode: BatchNorm in training mode pools over the map too)
    depends on input pixels beyond its convolutions' reach, as a global pooling inside it (an SE gate's
    average over the whole map) makes it: on a map four times as wide as the block's receptive field, a
    change to the input's top-left pixel changes the output's bottom-right pixel, which the block's
    convolutions alone cannot reach."""
    channels = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels
    size = 4 * receptive_field(block)
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    moved = x.clone()
    moved[..., 0, 0] += 1.0
    return not torch.equal(block(x)[..., -1, -1], block(moved)[..., -1, -1])


def comparison_table(names: list[str]) -> pd.DataFrame:
    """Seed 3.2's five models: counts at native resolution and at the resolution of the top-1 beside it."""
    rows = []
    for model in (m for m in SEED_TOP1_SECTION_3_2 if m in names):
        stats = model_stats(model)
        builder = torchvision_builder(model)
        weights = torchvision_v1(builder)
        at_crop = model_stats(model, weights.crop) if weights else None
        paper = PAPER.get(model)
        rows.append(
            {
                "model": SEED_LABELS[model],
                "hand-written": model,
                "params (ours)": stats["params"],
                "params (torchvision, as the seed builds)": reference_params(f"torchvision:{builder}"),
                "resolution": stats["resolution"],
                "GMACs (counted, native)": round(stats["macs"] / 1e9, 3),
                SEED_FLOPS: round(seed_flops_column(stats["params"]), 3),
                "seed prints": seed_flops_printed(reference_params(f"torchvision:{builder}")),
                "seed top-1 (3.2)": SEED_TOP1_SECTION_3_2[model],
                "paper top-1": paper.top1 if paper else None,
                "paper top-1 (protocol)": paper_top1_cell(model),
                "paper source": paper.source if paper else "",
                "top-1 (torchvision V1)": weights.top1 if weights else None,
                "torchvision eval crop": weights.crop if weights else None,
                "GMACs (counted, at that crop)": round(at_crop["macs"] / 1e9, 3) if at_crop else None,
            }
        )
    return pd.DataFrame(rows)


def comparison_errata(frame: pd.DataFrame) -> list[Erratum]:
    """Seed 3.2's table against its sources: the rules read the comparison table."""
    if frame.empty:
        return []
    rows = []
    factor = frame["GMACs (counted, native)"] / frame[SEED_FLOPS]
    counted = ", ".join(
        f"{r['model']} {r[SEED_FLOPS]:.3f} vs {r['GMACs (counted, native)']:.2f}" for _, r in frame.iterrows()
    )
    rows.append(
        Erratum(
            "3.2",
            "the 'FLOPS' column (`params*2/1e9`) gives each model's FLOPs",
            False,
            f"params x 2 is a function of the parameter count, not of the operations; per model, the seed's formula "
            f"vs counted GFLOPs in the papers' convention (multiply-adds: counted GMACs at the native resolution): "
            f"{counted}",
            note=f"the formula understates the work {factor.min():.0f} to {factor.max():.0f} times over (twice that "
            "counting 2 FLOPs per multiply-add)",
        )
    )
    printed = ", ".join(f"{r['model']} {r['seed prints']}" for _, r in frame.iterrows())
    zeros = int((frame["seed prints"] == "0.0G").sum())
    rows.append(
        Erratum(
            "3.2",
            "the 'FLOPS' column (`{params*2/1e9:>10.1f}G`) can tell the models apart",
            zeros == 0,
            f"with one decimal, {zeros} of {len(frame)} models print 0.0G: {printed} (parameters of the torchvision "
            "models the seed builds)",
        )
    )
    figures = [
        Top1Figure(r["model"], r["hand-written"], r["seed top-1 (3.2)"], r["top-1 (torchvision V1)"])
        for _, r in frame.iterrows()
    ]
    rows += top1_errata("3.2", "`reference_acc` (3.2)", figures)
    rows += [b0_against_resnet50()] if {"efficientnet_b0", "resnet50"} <= set(frame["hand-written"]) else []
    return rows


def b0_against_resnet50() -> Erratum:
    """Key insights 1-2 (EfficientNet-B0: 5.3M parameters, 77.1%; ResNet-50: 25.6M, only 76.1%), decided
    on each source that gives both models by one protocol: EfficientNet paper Table 2, torchvision V1."""
    b0, r50 = PAPER["efficientnet_b0"], EFFICIENTNET_TABLE_2_RESNETS["resnet50"]
    sources = {  # kind: ((top-1, params), (top-1, params)), each value as its source prints it
        r50.kind: ((f"{b0.top1:.1f}", f"{b0.params_m:g}"), (f"{r50.top1:.1f}", f"{r50.params_m:g}")),
        TORCHVISION_KIND: tuple(
            (f"{torchvision_v1(torchvision_builder(m)).top1:.2f}", f"{model_stats(m)['params'] / 1e6:.2f}")
            for m in ("efficientnet_b0", "resnet50")
        ),
    }
    better = {k: float(b[0]) > float(r[0]) and float(b[1]) < float(r[1]) for k, (b, r) in sources.items()}
    return Erratum(
        "3.2",
        "EfficientNet-B0 is more accurate than ResNet-50 with a fifth of its parameters (key insights 1-2)",
        all(better.values()),
        "; ".join(
            f"{k}: B0 {b[0]}% at {b[1]}M vs ResNet-50 {r[0]}% at {r[1]}M"
            + ("" if better[k] else " (not more accurate with fewer parameters)")
            for k, (b, r) in sources.items()
        ),
        note="each comparison on one source and protocol; torchvision's compares recipes as well as models ("
        + "; ".join(f"{SEED_LABELS[m]}: {torchvision_v1(torchvision_builder(m)).origin}"
                    for m in ("efficientnet_b0", "resnet50"))
        + "); the seed's 76.1 is torchvision's figure and its 77.1 the paper's, which the row above finds mixed",
    )


def build(options: Options) -> Page | None:
    names = options.selected(n for n in EFFICIENTNETS if n in MODELS)
    compare = comparison_table(options.selected(m for m in SEED_TOP1_SECTION_3_2 if m in MODELS))
    if not names and compare.empty:
        return None
    tables, rows = [], []
    if "efficientnet_b0" in names:
        table = stage_table(meta_model("efficientnet_b0"), SCALING["b0"].resolution)
        seed = pd.DataFrame(
            SEED_B0_TABLE, columns=["stage", "seed operator", "seed channels", "seed layers", "seed resolution"]
        )
        tables.append(
            Table(
                "efficientnet_b0_stages",
                "EfficientNet-B0 stage table (paper Table 1, seed 3.1), read off the model",
                table.merge(seed, on="stage", validate="one_to_one"),
                "Each stage's input resolution, output channels and block count are recorded by forward hooks on the "
                "hand-written `efficientnet_b0` running one 224x224 "
                "image; `stride` is input over output size. The seed's "
                "own columns are beside them.",
                page_columns=("stage", "operator", "resolution", "channels", "layers", "stride", "seed operator",
                              "seed channels", "seed layers", "seed resolution"),
            )
        )
        rows += b0_errata(table) + mbconv_errata()
    if names:
        frame = scaling_rows(tuple(names))
        tables.append(
            Table(
                "efficientnet_scaling",
                "Compound scaling B0-B7",
                frame,
                scaling_note(frame),
                page_columns=(
                    "model",
                    "width",
                    "depth",
                    "resolution",
                    "blocks",
                    "params",
                    "GMACs (counted)",
                    "GMACs / B0",
                    "d·w²·r²",
                    "phi from GMACs (log2)",
                ),
            )
        )
    if options.selected(EFFICIENTNETS) == list(EFFICIENTNETS) and set(EFFICIENTNETS) <= set(MODELS):
        rows += scaling_errata() + one_phi_errata()
    if not compare.empty:
        tables.append(
            Table(
                "efficientnet_vs_resnet",
                "EfficientNet against ResNet (seed 3.2)",
                compare,
                "The seed's five models. Its 'FLOPS' column is parameters "
                "x 2 / 1e9, a function of the parameter count; "
                "counted multiply-accumulates are beside it, at the native resolution and at the crop torchvision "
                "evaluated its weights at (the top-1 beside them was "
                "measured there: EfficientNet-B2's at 288, not 260). " + trained_and_tested("efficientnet_b2") + ". "
                "Paper top-1 with its protocol: EfficientNet paper Table 2 (single-crop); ResNet paper "
                "Table 2 (ResNet-18, option A) and Table 3 (ResNet-50), 10-crop; torchvision's are single-crop.",
                page_columns=(
                    "model",
                    "params (ours)",
                    "GMACs (counted, native)",
                    SEED_FLOPS,
                    "seed prints",
                    "seed top-1 (3.2)",
                    "paper top-1 (protocol)",
                    "top-1 (torchvision V1)",
                    "torchvision eval crop",
                    "GMACs (counted, at that crop)",
                ),
            )
        )
        rows += comparison_errata(compare)
        rows += [pretrained_argument()]
    if "efficientnet_b0" in names:
        rows += [receptive_field_erratum(), width_only_erratum(), *pitfall_2_errata(names)]
    rows.append(depth_only_erratum(options.selected(SEED_RESNETS)))
    intro = (
        findings(rows) + "\n\n"
        "Seed section 3.1 writes an MBConv block and prints B0's stage table; section 3.2 compares EfficientNet "
        "B0-B2 with ResNet-18/50. Every number below is computed from the hand-written models, which the "
        "equivalence page shows equivalent (bit-identical in float32) to timm's `efficientnet_bN` and "
        "`tf_efficientnet_bN` and torchvision's `efficientnet_bN`, each built with the settings its row names, on "
        "the input sizes it lists (the test suite adds B4-B7 at native size)."
    )
    return Page("efficientnet", "EfficientNet B0-B7 and compound scaling (seed 3.1, 3.2)", intro, tables, errata=rows)


# ---- errata -----------------------------------------------------------------------------------------


def mbconv_errata() -> list[Erratum]:
    """The seed's MBConvBlock run beside the references' (ours, shown equal to timm's and torchvision's on the
    equivalence page)."""
    m = drop_connect_measurements(0.2)
    seed, ours_eval, ours_train = m["seed (eval mode)"], m["ours (eval mode)"], m["ours (train mode)"]
    instances = [
        f"keep probability: the seed's block keeps {seed['keep_fraction']:.3f} of values at p=0.2 (p), the references "
        f"{ours_train['keep_fraction']:.3f} (1-p)",
        f"scale: the seed scales kept values by {seed['kept_scale']:.3f} (1/p), the references by "
        f"{ours_train['kept_scale']:.3f} (1/(1-p), which keeps the expectation)",
        f"mask: {seed['mixed_mask_samples']:.0%} of samples get a mask that is neither all-keep nor all-drop "
        f"(rand_like(out[:, :1]) draws one value per pixel); the references' {ours_train['mixed_mask_samples']:.0%} "
        "(one draw per sample)",
        f"mode: in eval mode the seed's block is {'repeatable' if seed['repeatable'] else 'random'} and keeps "
        f"{seed['keep_fraction']:.3f}; the references' are {'deterministic' if ours_eval['repeatable'] else 'random'} "
        f"and keep {ours_eval['keep_fraction']:.3f}",
    ]
    seed_block, ours = SeedMBConvBlock(16, 24, 3, 2, expand_ratio=6), MBConv(16, 24, 6, 3, 2)
    return [
        Erratum(
            "3.1",
            "`MBConvBlock`'s drop connect matches EfficientNet's (stochastic depth of the residual branch)",
            False,
            "four departures, each measured on the same block (16 channels, expand 6, p=0.2, 512 samples): "
            + "; ".join(f"({i}) {text}" for i, text in enumerate(instances, 1)),
        ),
        Erratum(
            "3.1",
            "`SEBlock(expanded_channels, se_ratio)` squeezes to EfficientNet's SE width",
            False,
            f"MBConv6 16->24: the seed's SE squeezes 96 channels to {seed_block.se.se[2].out_features}; the "
            f"references to {ours.se.conv_reduce.out_channels} (se_ratio x the block's input width)",
        ),
        se_bias_erratum(seed_block, ours),
    ]


def se_bias_erratum(seed_block: SeedMBConvBlock, ours: MBConv) -> Erratum:
    """The SE layers' bias alone (the SE width is its own row): the references' bias parameters in one block."""
    ref_bias = {n: p.numel() for n, p in ours.se.named_parameters() if n.endswith("bias")}
    seed_bias = sum(p.numel() for n, p in seed_block.se.named_parameters() if n.endswith("bias"))
    total = sum(p.numel() for p in ours.parameters())
    return Erratum(
        "3.1",
        "`SEBlock`'s fully connected layers match the references' (the seed's have `bias=False`)",
        seed_bias == sum(ref_bias.values()),
        f"MBConv6 16->24: the references' two SE layers carry {sum(ref_bias.values())} bias parameters ("
        + " + ".join(f"{v} in {n.split('.')[0]}" for n, v in ref_bias.items())
        + f"), the seed's {seed_bias}: the bias alone is {sum(ref_bias.values())} of the block's {total:,} "
        "parameters",
        note="the seed's block has more SE parameters still, from its SE width (the row above), not from the bias",
    )


def b0_errata(table: pd.DataFrame) -> list[Erratum]:
    """The seed's printed B0 table against the stage table read off the model (the table above)."""
    resolutions = ", ".join(table.resolution.str.split("x").str[0])
    seed_res = tuple(r[4] for r in SEED_B0_TABLE)
    seed_channels = tuple(r[2] for r in SEED_B0_TABLE)
    seed_layers = tuple(r[3] for r in SEED_B0_TABLE)
    return [
        Erratum(
            "3.1",
            f"B0 table: stage resolutions {'/'.join(map(str, seed_res))}",
            tuple(int(r) for r in table.resolution.str.split("x").str[0]) == seed_res,
            f"input resolution per stage 1-9: {resolutions} (paper Table 1: 224, 112, 112, 56, 28, 14, 14, 7, 7)",
        ),
        Erratum(
            "3.1",
            f"B0 table: channels {'/'.join(map(str, seed_channels))}",
            tuple(table.channels) == seed_channels,
            "/".join(map(str, table.channels)),
        ),
        Erratum(
            "3.1",
            f"B0 table: layers {'/'.join(map(str, seed_layers))}",
            tuple(table.layers) == seed_layers,
            "/".join(map(str, table.layers)),
        ),
    ]


# The reference code prints width and depth coefficients to one decimal and resolutions in whole
# pixels: each stands for an interval of half a unit of its last digit.
COEFFICIENT_HALF_UNIT, RESOLUTION_HALF_UNIT = 0.05, 0.5


def phi_interval(value: float, half_unit: float, base: float) -> tuple[float, float]:
    """The phi that ``base ** phi`` can be for a coefficient printed as ``value`` (+- ``half_unit``)."""
    return _phi(value - half_unit, base), _phi(value + half_unit, base)


def one_phi_errata() -> list[Erratum]:
    """Seed 3.1: 'B1-B7通过复合缩放得到' under d = α^φ, w = β^φ, r = γ^φ, as two checkable statements:
    (1) B1-B7 are B0 scaled in depth, width and resolution together, none shrinking from one model to the next;
    (2) one φ per model gives its three released coefficients (within their printed precision)."""
    base = SCALING["b0"].resolution
    rows = []
    for name in EFFICIENTNETS[1:]:
        s = SCALING[name.rsplit("_", 1)[1]]
        spans = {
            "depth": phi_interval(s.depth, COEFFICIENT_HALF_UNIT, ALPHA),
            "width": phi_interval(s.width, COEFFICIENT_HALF_UNIT, BETA),
            "resolution": phi_interval(s.resolution / base, RESOLUTION_HALF_UNIT / base, GAMMA),
        }
        one = max(lo for lo, _ in spans.values()) <= min(hi for _, hi in spans.values())
        rows.append((name.split("_")[1].upper(), spans, one))
    ok = [n for n, _, one in rows if one]
    coefficients = [(n.split("_")[1].upper(), SCALING[n.rsplit("_", 1)[1]]) for n in EFFICIENTNETS]
    steps = list(zip(coefficients, coefficients[1:]))
    never_shrink = all(b.depth >= a.depth and b.width >= a.width and b.resolution >= a.resolution
                       for (_, a), (_, b) in steps)
    all_three = [n for n, c in coefficients[1:] if c.depth > 1 and c.width > 1 and c.resolution > base]
    last = coefficients[-1][1]
    together = never_shrink and last.depth > 1 and last.width > 1 and last.resolution > base
    return [
        Erratum(
            "3.1",
            "B1-B7 are B0 compound-scaled: depth, width and resolution scaled up together ('B1-B7通过复合缩放得到')",
            together,
            "released coefficients (depth / width / resolution): "
            + "; ".join(f"{n} {c.depth:g} / {c.width:g} / {c.resolution}" for n, c in coefficients)
            + f": {'none shrinks' if never_shrink else 'some shrink'} from one model to the next; all three above "
            f"B0's in {', '.join(all_three)}",
            note="B1 keeps B0's width (1.0), which β^φ at B1's φ (about 0.5) gives at one decimal (the row below)",
        ),
        Erratum(
            "3.1",
            "each of B1-B7 is B0 scaled by one φ: depth α^φ, width β^φ, resolution γ^φ (α=1.2, β=1.1, γ=1.15)",
            len(ok) == len(rows),
            f"one φ fits {', '.join(ok) or 'none'} of B1-B7; φ implied by the released coefficients (depth / width / "
            "resolution, each an interval for its printed precision): "
            + "; ".join(
                f"{n} " + " / ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in spans.values())
                + ("" if one else " (no common φ)")
                for n, spans, one in rows
            ),
            note="the coefficients of B3-B7 were rounded by hand rather than computed from one φ",
        ),
    ]


# Widths B0 is scaled to alone (depth and resolution kept), and the relative error within which a kind of
# layer's parameters "grow as width²" (or "as width") at every one of them.
WIDTH_FACTORS = (2.0, 4.0)
GROWTH_TOLERANCE = 0.05


def parameters_by_kind(model: nn.Module) -> dict[str, int]:
    """A model's parameters by kind of layer. A convolution that mixes channels (groups 1, SE's 1x1 layers
    included) has a weight of in x out channels, both scaled by width; a depthwise convolution and BatchNorm
    have a fixed number per channel; the classifier reads the pooled features into a fixed number of classes."""
    out = {"channel-mixing convolutions": 0, "depthwise convolutions": 0, "BatchNorm": 0, "classifier": 0}
    for m in model.modules():
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if isinstance(m, nn.Conv2d):
            out["depthwise convolutions" if m.groups > 1 else "channel-mixing convolutions"] += own
        elif isinstance(m, nn.BatchNorm2d):
            out["BatchNorm"] += own
        elif isinstance(m, nn.Linear):
            out["classifier"] += own
    return out


def width_only_erratum(factors: tuple[float, ...] = WIDTH_FACTORS) -> Erratum:
    """Seed 3.1: '只增加宽度:参数呈平方增长'. B0 widened by each of ``factors`` (depth and resolution kept),
    its parameters counted per kind of layer (``parameters_by_kind``, on meta-device models).

    No parameter tensor has more than two channel dimensions, so (up to ``make_divisible``'s rounding) the
    count is a polynomial of degree two in the width, a·w² + b·w + c: the layers whose parameters grow as w²
    (channel-mixing convolutions) make up a·w², those that grow as w (depthwise convolutions, BatchNorm, the
    classifier, whose number of classes is fixed) b·w, and c is the classifier's bias. The claim holds when
    the quadratic part dominates: the kinds of layer that grow within ``GROWTH_TOLERANCE`` of w² at every
    factor hold the majority of B0's parameters. Their share only rises with the width, so the whole
    network's growth tends to w²; at a finite width its ratio falls short of w² by the linear part, and its
    exponent (stated beside the verdict) is below 2. Reading the claim as "exactly x4 at twice the width"
    would make it fail on the classifier alone; the usual sense of "grows quadratically" (the paper's too:
    FLOPS ∝ w², section 3.1) is the order of the dominant term."""
    models = {w: build_on_meta(lambda w=w: EfficientNet(width=w)) for w in (1.0, *factors)}
    counts = {w: parameters_by_kind(m) for w, m in models.items()}
    base, total = counts[1.0], {w: sum(c.values()) for w, c in counts.items()}

    def grows_as(kind: str, power: int) -> bool:
        return all(abs(counts[w][kind] / base[kind] / w**power - 1) <= GROWTH_TOLERANCE for w in factors)

    quadratic = [k for k in base if grows_as(k, 2)]
    linear = [k for k in base if grows_as(k, 1)]
    other = [k for k in base if k not in quadratic + linear]
    share = {w: sum(counts[w][k] for k in quadratic) / total[w] for w in counts}
    rising = all(share[a] < share[b] for a, b in zip(share, list(share)[1:]))
    largest = max(linear, key=base.__getitem__, default=None)
    shortfall = (
        f"the whole network's ratio falls short of width² by the parts that grow as width, the largest of them the "
        f"{largest} ({base[largest] / sum(base[k] for k in linear):.0%} of their parameters)"
        + (f", whose {models[1.0].classifier.out_features} outputs do not scale with width"
           if largest == "classifier" else "")
        if largest
        else ""
    )

    def kinds_text(kinds: list[str]) -> str:
        return "; ".join(
            f"{k} {base[k]:,} (" + ", ".join(f"x{counts[w][k] / base[k]:.2f} at width x{w:g}" for w in factors) + ")"
            for k in kinds
        )

    return Erratum(
        "3.1",
        "scaling width alone makes the parameters grow quadratically ('只增加宽度:参数呈平方增长')",
        share[1.0] > 0.5,
        f"EfficientNet-B0 widened alone (depth and resolution kept), its {total[1.0]:,} parameters by kind of layer: "
        f"growing as width² (within {GROWTH_TOLERANCE:.0%} of " + ", ".join(f"x{w**2:g}" for w in factors) + "): "
        f"{kinds_text(quadratic) or 'none'}, {share[1.0]:.0%} of B0's parameters; growing as width: "
        f"{kinds_text(linear) or 'none'}"
        + (f"; neither: {kinds_text(other)}" if other else "")
        + ". The whole network: "
        + ", ".join(
            f"{total[w]:,} parameters at width x{w:g}, {total[w] / total[1.0]:.2f}x B0's "
            f"(width^{math.log(total[w] / total[1.0], w):.2f})"
            for w in factors
        )
        + f"; the quadratic part's share {'rises' if rising else 'does not rise'} with width: "
        + ", ".join(f"{share[w]:.0%} at x{w:g}" for w in counts),
        note=shortfall,
    )


def depth_only_erratum(names: list[str]) -> Erratum:
    """Seed 3.1: '只增加深度:训练困难,收益递减'. Its diminishing returns are the EfficientNet paper's own
    statement (section 3.2, Observation 1; Figure 3, middle): decided there. Beside it, as context,
    torchvision's IMAGENET1K_V1 top-1 of the seed's ResNets that differ only in depth (Bottleneck, same
    width and resolution, one training recipe), one checkpoint per depth."""
    deep = [n for n in SEED_RESNETS if n in names and meta_model(n).block is Bottleneck]
    context = ""
    if len(deep) >= 3:
        depth = {n: 2 + 3 * sum(meta_model(n).layers) for n in deep}
        top1 = {n: torchvision_v1(torchvision_builder(n)).top1 for n in deep}
        steps = [(a, b, (top1[b] - top1[a]) / (depth[b] - depth[a])) for a, b in zip(deep, deep[1:])]
        diminishing = all(later[2] < earlier[2] for earlier, later in zip(steps, steps[1:]))
        # One checkpoint per depth: its top-1 carries the run-to-run spread of one training run, which this
        # metadata does not give, so these gains are context, not a test.
        context = (
            "; beside it, torchvision IMAGENET1K_V1 top-1 of ResNets that differ only in depth: "
            + ", ".join(f"{n} ({depth[n]} layers) {top1[n]:.2f}%" for n in deep)
            + "; per added layer: "
            + ", ".join(f"{a} -> {b} {gain * 100:+.1f} points per 100 layers" for a, b, gain in steps)
            + (": the gains shrink" if diminishing else ": the gains do not shrink")
            + " (one checkpoint per depth, without its run-to-run spread)"
        )
    return Erratum(
        "3.1",
        "scaling depth alone gives diminishing returns ('只增加深度:...收益递减')",
        Outcome.HOLDS,
        EFFICIENTNET_DEPTH_SOURCE,
        note="the other half, '训练困难' (hard to train), is the degradation claim: section 2.1's rows" + context,
    )


def receptive_field_erratum(sizes: tuple[int, int] = (224, 448)) -> Erratum:
    """Seed 3.1: '只增加分辨率:感受野变大'. What one output of EfficientNet-B0's last feature map depends on,
    at two input sizes: the convolutional path's theoretical receptive field (``receptive_field``), fixed in
    pixels and so a smaller share of a larger image; and, through every block that pools globally
    (``pools_globally``, run on the model's blocks: SE gates average the whole map), the whole image at any
    size. Neither grows relative to the image, which is what a larger receptive field has to mean for the
    claim to say something about the network: in pixels only the global part grows, by being all of a larger
    image, covering no more of the scene.

    The row judges the seed's words: the receptive field *becomes* larger. The paper's section 3.2 argues
    from the opposite premise: because it does not, a larger image needs more layers to enlarge it (and more
    channels for its finer patterns). If the seed's line paraphrases that, its wording inverts it; the note
    gives that reading, which the shrinking share supports."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("efficientnet_b0").eval()  # eval: BatchNorm in training mode pools over the map too
    field = receptive_field(model)
    blocks = [block for stage in model.stages for block in stage]
    with cpu_threads(1):  # maps of a few pixels: more threads only wait on each other
        pooling = [block for block in blocks if pools_globally(block)]
    gated = all(any(isinstance(m, SqueezeExcite) for m in block.modules()) for block in pooling)
    small, large = sizes
    global_part = (
        f"{len(pooling)} of its {len(blocks)} MBConv blocks pool globally (a change to one corner pixel of a "
        "block's input changes its output at the opposite corner, beyond the reach of its convolutions"
        + (": each block's Squeeze-and-Excitation gate averages the whole map" if gated else "")
        + "), so each output also depends on the whole image, at any size"
        if pooling
        else f"none of its {len(blocks)} MBConv blocks pools globally"
    )
    return Erratum(
        "3.1",
        "raising only the resolution makes the network's receptive field larger ('只增加分辨率:感受野变大')",
        False,
        f"EfficientNet-B0's convolutional path has a theoretical receptive field of {field} px at every input size "
        f"(set by its kernels and strides), a shrinking share of the image: {field / small:.2f}x the image side at "
        f"{small} px, {field / large:.2f}x at {large} px; {global_part}. "
        + (f"Relative to the image neither grows: in pixels the convolutional path's stays {field} px, and the "
           "global part grows only as the image does, being all of it at every size"
           if pooling
           else f"Relative to the image it does not grow: in pixels it stays {field} px"),
        note="read as the paper's argument (section 3.2: a larger image needs more layers to increase the receptive "
        "field, and more channels to capture its finer patterns), the line would hold: with the layers fixed, the "
        "convolutional path's field covers less of a larger image, as measured here",
    )


# torchvision's EfficientNet-B0-B4 IMAGENET1K_V1 weights are ported from timm (torchvision's efficientnet.py:
# "Weights ported from https://github.com/rwightman/pytorch-image-models/", files efficientnet_bN_rwightman-*.pth).
# Those of B2 are timm's efficientnet_b2.ra_in1k (efficientnet_b2_ra-*.pth; timm's test size for it, 288, is the
# crop torchvision reports its top-1 at): trained at another size than the seed's (and the paper code's) 260.
TIMM_ORIGIN = {"efficientnet_b2": "efficientnet_b2.ra_in1k"}


def trained_and_tested(model: str) -> str:
    """For torchvision weights ported from timm (``TIMM_ORIGIN``): the size timm trained them at and tests them
    at (its pretrained cfg, read from the installed timm) and the crop of torchvision's top-1; '' otherwise."""
    tag = TIMM_ORIGIN.get(model)
    if tag is None:
        return ""
    import timm

    cfg = timm.models.get_pretrained_cfg(tag)
    train, test = cfg.input_size[-1], (cfg.test_input_size or cfg.input_size)[-1]
    return (
        f"{SEED_LABELS.get(model, model)}'s torchvision weights (IMAGENET1K_V1) are timm's {tag}, trained at "
        f"{train} px "
        f"and tested by timm at {test} px (timm's pretrained cfg: input_size, test_input_size); torchvision reports "
        f"their top-1 at a {torchvision_crop(torchvision_builder(model))} px crop"
    )


def tested_above_training(*patterns: str) -> tuple[list[tuple[str, int, int]], list[str]]:
    """timm's pretrained weights matching ``patterns`` that timm tests above the size they were trained at (their
    pretrained cfgs: ``test_input_size`` against ``input_size``), as (tag, train px, test px); and every tag."""
    import timm

    tags = sorted({tag for pattern in patterns for tag in timm.list_pretrained(pattern)})
    above = []
    for tag in tags:
        cfg = timm.models.get_pretrained_cfg(tag)
        train, test = cfg.input_size[-1], (cfg.test_input_size or cfg.input_size)[-1]
        if test > train:
            above.append((tag, train, test))
    return above, tags


def pitfall_2_errata(names: list[str]) -> list[Erratum]:
    """Seed pitfall 2 in its two parts: the symptom (another test size lowers accuracy) and the remedy
    it names (readjust the compound-scaling parameters)."""
    sizes = {m: s for m, s in SEED_PITFALL_2_SIZES.items() if m in names}
    outputs = {s: "x".join(map(str, model_stats("efficientnet_b0", s)["output"])) for s in (224, 260, 288, 300)}
    crops = {m: torchvision_crop(m) for m in sizes}
    differ = {m: c for m, c in crops.items() if c != sizes[m]}
    label = lambda m: m.split("_")[1].upper()  # noqa: E731
    torchvision_sizes = (
        "; torchvision evaluates its IMAGENET1K_V1 weights of "
        + ", ".join(f"{label(m)} at {c} px (the seed's size: {sizes[m]})" for m, c in differ.items())
        + ", with the scaling parameters unchanged"
        if differ
        else ""
    )
    origins = "; ".join(t for t in (trained_and_tested(m) for m in sizes) if t)
    above, tags = tested_above_training("efficientnet_b*", "tf_efficientnet_b*")
    return [
        Erratum(
            "7, pitfall 2",
            "an EfficientNet at another input size needs its compound-scaling parameters readjusted "
            "('否则需要重新调整模型的复合缩放参数')",
            False,
            f"every EfficientNet ends in adaptive average pooling: B0 gives a {outputs[224]} output at "
            + ", ".join(f"{s} px" for s in outputs)
            + " alike, with nothing changed"
            + torchvision_sizes
            + (f". {origins}" if origins else ""),
            note="the alternative the seed names, adaptive pooling, is already in every EfficientNet",
        ),
        Erratum(
            "7, pitfall 2",
            "testing at another input size than training lowers accuracy, whatever the change ('导致精度下降', "
            "read as a rule)",
            False,
            f"{FIXRES_SOURCE}; timm tests {len(above)} of its {len(tags)} EfficientNet-B weights above their "
            "training size, for the top-1 it reports (its pretrained cfgs, test_input_size against input_size: "
            + ", ".join(f"{tag} {train} -> {test} px" for tag, train, test in above[:4])
            + (" ..." if len(above) > 4 else "")
            + ")",
            note="a higher test size can raise accuracy; a large change either way is the next row",
        ),
        Erratum(
            "7, pitfall 2",
            "testing far from the training size lowers accuracy ('导致精度下降')",
            Outcome.UNDECIDED,
            "not measured: it needs the ImageNet validation set, which is not available here"
            + (
                f"; torchvision's own evaluation size differs from the seed's list for "
                f"{', '.join(label(m) for m in differ)}"
                if differ
                else ""
            )
            + (f". {origins}: a test size above the training size, chosen for the reported top-1" if origins else ""),
            decide="ImageNet validation top-1 of pretrained weights at several test sizes around the training size "
            "(e.g. B0 at 192, 224, 256 and 288 px), with the weights and the preprocessing otherwise unchanged",
        ),
    ]


def pretrained_argument() -> Erratum:
    import warnings

    import torchvision

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = torchvision.models.resnet18(pretrained=False)
    messages = [str(w.message) for w in caught if "pretrained" in str(w.message)]
    seed_uses_weights = bool(lines_containing("weights=None"))
    return Erratum(
        "3.2",
        "`models.resnet18(pretrained=False)` builds an untrained model",
        isinstance(model, torch.nn.Module),
        f"it does, with a warning: '{messages[0]}'"
        if messages
        else f"accepted silently by torchvision {torchvision.__version__}",
        note="deprecated since torchvision 0.13: `weights=None` is the current spelling"
        + (", which the seed itself uses in 6.2" if seed_uses_weights else ""),
    )


def scaling_errata() -> list[Erratum]:
    rows: list[Erratum] = []
    variants = EFFICIENTNETS[: len(SEED_EFFICIENTNET_CONFIG["width_coef"])]
    widths = tuple(meta_model(v).num_features / B0_HEAD_CHANNELS for v in variants)
    depths = tuple(SCALING[v.rsplit("_", 1)[1]].depth for v in variants)
    sizes = tuple(MODELS[v].input_size for v in variants)
    span = f"B0-B{len(variants) - 1}"
    rows.append(
        Erratum(
            "3.1",
            f"calculate_efficientnet_params: width_coef {SEED_EFFICIENTNET_CONFIG['width_coef']}",
            widths == SEED_EFFICIENTNET_CONFIG["width_coef"],
            f"{span} widths (head channels / 1280): {widths}",
        )
    )
    rows.append(
        Erratum(
            "3.1",
            f"calculate_efficientnet_params: depth_coef {SEED_EFFICIENTNET_CONFIG['depth_coef']}",
            depths == SEED_EFFICIENTNET_CONFIG["depth_coef"],
            f"{span} depth coefficients: {depths}; blocks per stage of B0 are "
            f"{tuple(len(s) for s in meta_model('efficientnet_b0').stages)}, not these either",
        )
    )
    rows.append(
        Erratum(
            "3.1",
            f"calculate_efficientnet_params: resolution {SEED_EFFICIENTNET_CONFIG['resolution']}",
            sizes == SEED_EFFICIENTNET_CONFIG["resolution"],
            f"{span}: {sizes} (B7's {MODELS['efficientnet_b7'].input_size} is missing from the seed)",
            note=trained_and_tested("efficientnet_b2"),
        )
    )
    divisor = SEED_EFFICIENTNET_CONFIG["depth_div"]
    widths_all = [
        m.out_channels
        for v in EFFICIENTNETS
        for name, m in meta_model(v).named_modules()
        if isinstance(m, nn.Conv2d) and ".se." not in name
    ]
    rows.append(
        Erratum(
            "3.1",
            f"channels are multiples of depth_div={divisor}",
            all(c % divisor == 0 for c in widths_all),
            f"all {len(widths_all)} convolutions of B0-B7 outside SE (make_divisible); SE widths are "
            f"input/4, e.g. {make_divisible(16, divisor) // 4} in B0's stage 3",
        )
    )
    a, b, g = SEED_ALPHA_BETA_GAMMA
    paper = dict(zip("αβγ", EFFICIENTNET_STEP_1, strict=True))
    rows += [
        Erratum(
            "3.1",
            "B0 was found by neural architecture search ('基准网络B0使用神经架构搜索(NAS)得到')",
            Outcome.HOLDS,
            EFFICIENTNET_B0_SEARCH_SOURCE,
        ),
        Erratum(
            "3.1",
            f"at φ=1, B0's coefficients are α={a}, β={b}, γ={g} ('φ=1时,B0的系数')",
            (a, b, g) == EFFICIENTNET_STEP_1,
            f"{EFFICIENTNET_STEP_1_SOURCE}: " + ", ".join(f"{k}={v}" for k, v in paper.items()),
            note="they are the scaling coefficients found by a search around B0 at φ=1 and then kept for B1-B7 "
            "(step 2), not a property of B0 itself (φ=0)",
        ),
        Erratum(
            "3.1",
            f"α={a}, β={b}, γ={g} satisfy α·β²·γ² ≈ 2",
            abs(a * b**2 * g**2 - 2) < 0.1,
            f"{a * b**2 * g**2:.4f}",
        ),
    ]
    return rows
