"""EfficientNet page (seed sections 3.1, 3.2): the B0 stage table, compound scaling B0-B7, and
EfficientNet against ResNet; plus the seed's MBConv code run side by side with the references'."""

from __future__ import annotations

import functools
import math

import pandas as pd
import torch
from torch import nn

from repro.flops import count_macs
from repro.layers import make_divisible
from repro.models.efficientnet import ALPHA, B0_HEAD_CHANNELS, B0_STAGES, BETA, GAMMA, SCALING, MBConv
from repro.registry import MODELS
from repro.report import Erratum, Options, Page, Table, erratum, section
from repro.report.resnet import meta_model, model_stats, reference_params
from repro.seed import (
    SEED_ALPHA_BETA_GAMMA,
    SEED_B0_TABLE,
    SEED_EFFICIENTNET_CONFIG,
    SEED_MODELS,
    SEED_TOP1_SECTION_3_2,
    seed_flops_column,
    torchvision_top1,
)

VARIANTS = tuple(f"efficientnet_b{n}" for n in range(8))
SEED_FLOPS = "seed 'FLOPS' (params x 2 / 1e9)"


def torchvision_crop(builder: str, weights: str = "IMAGENET1K_V1") -> int | None:
    """The crop size torchvision evaluated ``weights`` at (its transforms' ``crop_size``)."""
    from torchvision.models import get_model_weights

    transforms = get_model_weights(builder)[weights].transforms
    return getattr(transforms, "keywords", {}).get("crop_size")


# ---- the seed's section 3.1 code, verbatim in behaviour (only the class names are prefixed) ---------


class SeedSwish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class SeedSEBlock(nn.Module):
    def __init__(self, in_channels, se_ratio=0.25):
        super().__init__()
        reduced = max(1, int(in_channels * se_ratio))
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_channels, reduced, bias=False),
            SeedSwish(),
            nn.Linear(reduced, in_channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.se(x).view(x.size(0), x.size(1), 1, 1)


class SeedMBConvBlock(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, expand_ratio=1, se_ratio=0.25, drop_connect_rate=0.0):
        super().__init__()
        self.stride = stride
        self.drop_connect_rate = drop_connect_rate
        self.in_channels = in_channels
        self.out_channels = out_channels
        expanded_channels = in_channels * expand_ratio
        if expand_ratio != 1:
            self.expand_conv = nn.Sequential(
                nn.Conv2d(in_channels, expanded_channels, 1, bias=False),
                nn.BatchNorm2d(expanded_channels, momentum=0.01, eps=1e-3),
                SeedSwish(),
            )
        else:
            self.expand_conv = nn.Identity()
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(expanded_channels, expanded_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=expanded_channels, bias=False),
            nn.BatchNorm2d(expanded_channels, momentum=0.01, eps=1e-3),
            SeedSwish(),
        )
        if se_ratio > 0:
            self.se = SeedSEBlock(expanded_channels, se_ratio)
        else:
            self.se = nn.Identity()
        self.project_conv = nn.Sequential(
            nn.Conv2d(expanded_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=0.01, eps=1e-3),
        )
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        identity = x
        out = self.expand_conv(x)
        out = self.depthwise_conv(out)
        out = self.se(out)
        out = self.project_conv(out)
        if self.use_residual and self.drop_connect_rate > 0:
            out = out * (torch.rand_like(out[:, :1, :, :]) < self.drop_connect_rate).detach() / self.drop_connect_rate
        if self.use_residual:
            out = out + identity
        return out


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
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, (inp[0].shape, out.shape)))
             for name, m in parts]
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
        rows.append({"stage": i, "operator": operator, "resolution": f"{h}x{w}", "channels": c, "layers": layers,
                     "stride": round(h / seen[name][1][2]), "module": name})
    return pd.DataFrame(rows)


def _phi(value: float, base: float) -> float:
    return math.log(value) / math.log(base)


def scaling_rows(names: tuple[str, ...] = VARIANTS) -> pd.DataFrame:
    """One row per variant; growth is measured against B0, which is always computed."""
    base_macs = model_stats("efficientnet_b0")["macs"]
    constraint = ALPHA * BETA**2 * GAMMA**2
    rows = []
    for name in names:
        n = VARIANTS.index(name)
        s, stats = SCALING[name.rsplit("_", 1)[1]], model_stats(name)
        model = stats["model"]
        ratio = stats["macs"] / base_macs
        rows.append({
            "model": name,
            "width": s.width,
            "depth": s.depth,
            "resolution": MODELS[name].input_size,
            "head channels": model.num_features,
            "blocks per stage": "-".join(str(len(stage)) for stage in model.stages),
            "blocks": sum(len(stage) for stage in model.stages),
            "depth (realised)": round(sum(len(stage) for stage in model.stages) / sum(c.repeats for c in B0_STAGES), 3),
            "params": stats["params"],
            "GMACs (counted)": round(stats["macs"] / 1e9, 3),
            "GMACs / B0": round(ratio, 2),
            "d*w^2*r^2": round(s.depth * s.width**2 * (s.resolution / SCALING["b0"].resolution) ** 2, 2),
            "phi (nominal, = N)": n,
            "2^phi": 2**n,
            f"{constraint:.3f}^phi": round(constraint**n, 2),
            "phi from GMACs (log2)": round(math.log2(ratio), 2),
            "phi implied by depth": round(_phi(s.depth, ALPHA), 2),
            "phi implied by width": round(_phi(s.width, BETA), 2),
            "phi implied by resolution": round(_phi(s.resolution / SCALING["b0"].resolution, GAMMA), 2),
        })
    return pd.DataFrame(rows)


def scaling_note(frame: pd.DataFrame) -> str:
    constraint = ALPHA * BETA**2 * GAMMA**2
    note = (
        "Width, depth and resolution coefficients are the paper's reference code's (timm and torchvision copy them); "
        "channels are `make_divisible(c * width, 8)`, block repeats `ceil(r * depth)`. Params and GMACs are counted "
        "from the hand-written model at its native resolution (`torch.utils.flop_counter`: convolutions and the "
        f"classifier). The paper's rule, depth {ALPHA}^phi, width {BETA}^phi, resolution {GAMMA}^phi with "
        f"alpha*beta^2*gamma^2 = {constraint:.3f} ~ 2, promises FLOPs growing as about 2^phi. The paper gives no phi "
        "per model: `phi (nominal)` reads B<N> as phi = N, the usual reading; the "
        "`phi implied by` columns invert each released coefficient and `phi from GMACs` the counted growth. "
        "`d*w^2*r^2` is the growth the coefficients themselves predict."
    )
    rows = frame.set_index("model")
    scaled = rows[rows["phi (nominal, = N)"] > 0]
    if len(scaled):
        # Which variant's counted growth strays furthest from what its own coefficients predict.
        name = (scaled["GMACs / B0"] / scaled["d*w^2*r^2"]).idxmax()
        v = scaled.loc[name]
        note += (
            f" {name} departs most from its own coefficients (phi {v['phi implied by width']:g} by width, "
            f"{v['phi implied by depth']:g} by depth, {v['phi implied by resolution']:g} by resolution): `ceil` turns "
            f"depth {v['depth']:g} into {v['blocks']} blocks instead of {sum(c.repeats for c in B0_STAGES)} "
            f"({v['depth (realised)']:g}x), so it counts {v['GMACs / B0']:g}x B0's MACs where d*w^2*r^2 says "
            f"{v['d*w^2*r^2']:g} and 2^{v['phi (nominal, = N)']} says {v['2^phi']}."
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


@section
def efficientnet_page(options: Options) -> Page | None:
    names = options.selected(n for n in VARIANTS if n in MODELS)
    if not names:
        return None
    tables = []
    if "efficientnet_b0" in names:
        table = stage_table(meta_model("efficientnet_b0"), SCALING["b0"].resolution)
        seed = pd.DataFrame(SEED_B0_TABLE, columns=["stage", "seed operator", "seed channels", "seed layers", "seed resolution"])
        tables.append(Table(
            "efficientnet_b0_stages", "EfficientNet-B0 stage table (paper Table 1, seed 3.1), read off the model",
            table.merge(seed, on="stage", validate="one_to_one"),
            "Each stage's input resolution, output channels and block count are recorded by forward hooks on the "
            "hand-written `efficientnet_b0` running one 224x224 image; `stride` is input over output size. The seed's "
            "own columns are beside them: its channels and layers are right, its resolution column (224 for every "
            "stage) is not.",
        ))
    frame = scaling_rows(tuple(names))
    tables.append(Table("efficientnet_scaling", "Compound scaling B0-B7", frame, scaling_note(frame)))
    rows = []
    for claim in SEED_MODELS:
        if claim.model not in SEED_TOP1_SECTION_3_2 or claim.model not in MODELS or not options.selected([claim.model]):
            continue
        stats = model_stats(claim.model)
        top1 = torchvision_top1(claim.torchvision) if claim.torchvision else None
        size = MODELS[claim.model].input_size
        rows.append({
            "model": claim.label,
            "hand-written": claim.model,
            "params (ours)": stats["params"],
            "params (torchvision, as the seed builds)": reference_params(f"torchvision:{claim.torchvision}"),
            "resolution": size,
            "GMACs (counted, native)": round(stats["macs"] / 1e9, 3),
            "GMACs (counted, 224)": round((stats["macs"] if size == 224 else count_macs(stats["model"])) / 1e9, 3),
            SEED_FLOPS: round(seed_flops_column(stats["params"]), 3),
            "seed top-1 (3.2)": SEED_TOP1_SECTION_3_2[claim.model],
            "top-1 (torchvision weights)": top1[0] if top1 else None,
            "top-1 eval crop": torchvision_crop(claim.torchvision) if top1 else None,
            "top-1 source": top1[1] if top1 else "none",
        })
    if rows:
        frame = pd.DataFrame(rows)
        by_model = frame.set_index("hand-written")
        note = (
            "The seed's five models. Its 'FLOPS' column is parameters x 2 / 1e9, a function of the parameter count, "
            "not a count of operations; counted multiply-accumulates are beside it. Top-1 is from torchvision's "
            "weight metadata (the IMAGENET1K_V1 weights, each measured at its own crop size, which is not always the "
            "model's native resolution). The seed gives no source for its top-1 figures."
        )
        if {"resnet50", "efficientnet_b0"} <= set(by_model.index):
            r50, b0 = by_model.loc["resnet50"], by_model.loc["efficientnet_b0"]
            note += (
                f" ResNet-50 counts {r50['GMACs (counted, native)'] / b0['GMACs (counted, native)']:.1f}x the MACs of "
                f"EfficientNet-B0; the seed's column makes it {r50[SEED_FLOPS] / b0[SEED_FLOPS]:.1f}x."
            )
        tables.append(Table("efficientnet_vs_resnet", "EfficientNet against ResNet (seed 3.2)", frame, note))
    intro = (
        "Seed section 3.1 writes an MBConv block and prints B0's stage table; section 3.2 compares EfficientNet "
        "B0-B2 with ResNet-18/50. Every number below is computed from the hand-written models, which the "
        "equivalence page proves identical to timm's `efficientnet_bN` and `tf_efficientnet_bN` and torchvision's "
        "`efficientnet_bN`. The seed's MBConv departs from those references in four ways (drop-connect keep "
        "probability, its scale, per-pixel masks, acting in eval) plus its SE width and bias; the errata page "
        "measures each by running the seed's code."
    )
    return Page("efficientnet", "EfficientNet B0-B7 and compound scaling (seed 3.1, 3.2)", intro, tables)


# ---- errata -----------------------------------------------------------------------------------------


@erratum
def efficientnet_errata(options: Options) -> list[Erratum]:
    if not options.selected(["efficientnet_b0"]) or "efficientnet_b0" not in MODELS:
        return []
    rows: list[Erratum] = []
    m = drop_connect_measurements(0.2)
    seed, ours_eval, ours_train = m["seed (eval mode)"], m["ours (eval mode)"], m["ours (train mode)"]
    rows.append(Erratum(
        "3.1", "MBConvBlock drop-connect with rate p keeps a residual branch with probability p",
        False, f"p=0.2: the seed's block keeps {seed['keep_fraction']:.3f} of values; the references (and ours) "
               f"keep {ours_train['keep_fraction']:.3f}, i.e. 1-p",
    ))
    rows.append(Erratum(
        "3.1", "MBConvBlock drop-connect rescales kept values by 1/p",
        False, f"p=0.2: the seed scales kept values by {seed['kept_scale']:.3f}; the references by "
               f"{ours_train['kept_scale']:.3f} = 1/(1-p), which keeps the expectation unchanged",
    ))
    rows.append(Erratum(
        "3.1", "MBConvBlock drop-connect draws one mask value per pixel (rand_like(out[:, :1]))",
        False, f"{seed['mixed_mask_samples']:.0%} of samples get a mask that is neither all-keep nor all-drop in the "
               f"seed's block; {ours_train['mixed_mask_samples']:.0%} in the references' (one draw per sample)",
    ))
    rows.append(Erratum(
        "3.1", "MBConvBlock drop-connect acts in eval mode too",
        False, f"in eval mode the seed's block gives {'the same' if seed['repeatable'] else 'different'} outputs on two "
               f"calls with the same input and keeps {seed['keep_fraction']:.3f}; the references' are "
               f"{'deterministic' if ours_eval['repeatable'] else 'random'} and keep {ours_eval['keep_fraction']:.3f}",
    ))
    seed_block = SeedMBConvBlock(16, 24, 3, 2, expand_ratio=6)
    ours = MBConv(16, 24, 6, 3, 2)
    rows.append(Erratum(
        "3.1", "SEBlock reduces to se_ratio x the expanded width (SEBlock(expanded_channels, se_ratio))",
        False, f"MBConv6 16->24: the seed's SE squeezes 96 channels to {seed_block.se.se[2].out_features}; the "
               f"references to {ours.se.conv_reduce.out_channels} (a quarter of the block's input width)",
    ))
    rows.append(Erratum(
        "3.1", "SEBlock's two fully connected layers have no bias",
        False, f"the references' SE layers have biases; with the seed's width and no bias that block has "
               f"{sum(p.numel() for p in seed_block.parameters()):,} parameters, the references' "
               f"{sum(p.numel() for p in ours.parameters()):,}",
    ))
    table = stage_table(meta_model("efficientnet_b0"), SCALING["b0"].resolution)
    resolutions = ", ".join(table.resolution.str.split("x").str[0])
    rows.append(Erratum("3.1", "B0 table: every stage works at resolution 224", False,
                        f"input resolution per stage 1-9: {resolutions}"))
    seed_channels = tuple(r[2] for r in SEED_B0_TABLE)
    seed_layers = tuple(r[3] for r in SEED_B0_TABLE)
    rows.append(Erratum("3.1", f"B0 table: channels {'/'.join(map(str, seed_channels))}",
                        tuple(table.channels) == seed_channels, "/".join(map(str, table.channels))))
    rows.append(Erratum("3.1", f"B0 table: layers {'/'.join(map(str, seed_layers))}",
                        tuple(table.layers) == seed_layers, "/".join(map(str, table.layers))))

    return rows


@erratum
def efficientnet_scaling_errata(options: Options) -> list[Erratum]:
    if options.selected(VARIANTS) != list(VARIANTS) or not set(VARIANTS) <= set(MODELS):
        return []
    rows: list[Erratum] = []
    variants = VARIANTS[: len(SEED_EFFICIENTNET_CONFIG["width_coef"])]
    widths = tuple(meta_model(v).num_features / B0_HEAD_CHANNELS for v in variants)
    depths = tuple(SCALING[v.rsplit("_", 1)[1]].depth for v in variants)
    sizes = tuple(MODELS[v].input_size for v in variants)
    span = f"B0-B{len(variants) - 1}"
    rows.append(Erratum("3.1", f"calculate_efficientnet_params: width_coef {SEED_EFFICIENTNET_CONFIG['width_coef']}",
                        widths == SEED_EFFICIENTNET_CONFIG["width_coef"],
                        f"{span} widths (head channels / 1280): {widths}"))
    rows.append(Erratum("3.1", f"calculate_efficientnet_params: depth_coef {SEED_EFFICIENTNET_CONFIG['depth_coef']}",
                        depths == SEED_EFFICIENTNET_CONFIG["depth_coef"],
                        f"{span} depth coefficients: {depths}; blocks per stage of B0 are "
                        f"{tuple(len(s) for s in meta_model('efficientnet_b0').stages)}, not these either"))
    rows.append(Erratum("3.1", f"calculate_efficientnet_params: resolution {SEED_EFFICIENTNET_CONFIG['resolution']}",
                        sizes == SEED_EFFICIENTNET_CONFIG["resolution"],
                        f"{span}: {sizes} (B7's {MODELS['efficientnet_b7'].input_size} is missing from the seed)"))
    divisor = SEED_EFFICIENTNET_CONFIG["depth_div"]
    widths_all = [m.out_channels for v in VARIANTS for name, m in meta_model(v).named_modules()
                  if isinstance(m, nn.Conv2d) and ".se." not in name]
    rows.append(Erratum("3.1", f"channels are multiples of depth_div={divisor}",
                        all(c % divisor == 0 for c in widths_all),
                        f"all {len(widths_all)} convolutions of B0-B7 outside SE (make_divisible); SE widths are "
                        f"input/4, e.g. {make_divisible(16, divisor) // 4} in B0's stage 3"))
    a, b, g = SEED_ALPHA_BETA_GAMMA
    rows.append(Erratum("3.1", f"alpha={a}, beta={b}, gamma={g} satisfy alpha*beta^2*gamma^2 ~ 2",
                        abs(a * b**2 * g**2 - 2) < 0.1, f"{a * b**2 * g**2:.4f}"))
    return rows
