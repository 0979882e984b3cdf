"""ResNet variants page (seed sections 2.3 and 7): what pre-activation, SE, grouped convolution and
width cost against the baseline ResNet of the same depth, and the seed's own variant blocks, checked.

The seed's blocks (``PreActResidualBlock``, ``SEResidualBlock``, ``ResNeXtBlock``) are run as
transcribed in ``repro.seed.code``: the ResNeXt block's ``forward`` is ``pass`` and returns None; the
pre-activation block projects its raw input in the shortcut; the SE block squeezes to ``out_channels // 16``.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from repro.equivalence import Diff, randomize_
from repro.layers import conv_bn
from repro.models.resnet import BasicBlock, Bottleneck, PreActBasicBlock, se_reduced_width, squeeze_excite
from repro.porting import SAME_NAMES, PortRules, port_weights
from repro.registry import MODELS
from repro.report.base import Erratum, Options, Outcome, Page, Table, findings
from repro.report.measure import meta_model, model_stats
from repro.seed import PREACT_TABLE_3_CIFAR10_ERROR
from repro.seed.code import SeedPreActResidualBlock, SeedResNeXtBlock, SeedSEResidualBlock
from repro.seed.text import elision

# Seed block -> hand-written block. The seed's SE layers are nn.Linear (``se.2``, ``se.4``); ours are
# 1x1 convolutions: the porting layer reshapes [out, in] into [out, in, 1, 1] and records it.
SEED_SE_BLOCK_RULES = PortRules(
    name="seed SEResidualBlock -> repro BasicBlock",
    source_type="repro.seed.code.SeedSEResidualBlock",
    target_type="repro.models.resnet.BasicBlock",
    renames=(
        (r"se\.2\.(weight|bias)", r"se.conv_reduce.\1"),
        (r"se\.4\.(weight|bias)", r"se.conv_expand.\1"),
        *SAME_NAMES,
    ),
)
SEED_PREACT_BLOCK_RULES = PortRules(
    name="seed PreActResidualBlock -> repro PreActBasicBlock",
    source_type="repro.seed.code.SeedPreActResidualBlock",
    target_type="repro.models.resnet.PreActBasicBlock",
    renames=((r"shortcut\.weight", "downsample.weight"), *SAME_NAMES),
)


def seed_se_width(channels: int, reduction: int = 16) -> int:
    """The seed's SE width, ``out_channels // reduction``, computed by building its block."""
    return SeedSEResidualBlock(channels, channels, reduction=reduction).se[2].out_features


def ported_block_diff(
    seed_block: nn.Module, ours: nn.Module, rules: PortRules, input_size: tuple[int, ...]
) -> tuple[Diff, list[str]]:
    """Randomize the seed's block, port it into ours, compare eval outputs; also return the recorded reshapes."""
    randomize_(seed_block, input_size)
    report = port_weights(seed_block, ours, rules=rules)
    x = torch.randn(input_size, generator=torch.Generator().manual_seed(1))
    seed_block.eval()
    ours.eval()
    with torch.no_grad():
        return Diff.of(ours(x), seed_block(x)), [p.target_key for p in report.transformed]


# ---- the variants against the baseline ResNet -------------------------------------------------------

SEED_CLAIMS = {
    "pre-activation": "2.3: 'Pre-activation: BN-ReLU-Conv order, improves training stability'",
    "SE": "2.3: 'SE (Squeeze-and-Excitation): channel attention'",
    "SE (original SENet)": "2.3: 'SE (Squeeze-and-Excitation): channel attention'",
    "ResNeXt": "2.3: 'ResNeXt: grouped convolution, increases cardinality'; "
    "7: 'residual connection + grouped convolution'",
    "wide": "(not in the seed)",
}
# (hand-written model, variant, baseline ResNet of the same depth)
VARIANT_PAIRS: tuple[tuple[str, str, str], ...] = (
    *((f"resnetv2_{d}", "pre-activation", f"resnet{d}") for d in (18, 34, 50, 101, 152)),
    *((f"seresnet{d}", "SE", f"resnet{d}") for d in (18, 34, 50, 101, 152)),
    *((f"legacy_seresnet{d}", "SE (original SENet)", f"resnet{d}") for d in (18, 34, 50, 101, 152)),
    ("resnext50_32x4d", "ResNeXt", "resnet50"),
    ("resnext101_32x4d", "ResNeXt", "resnet101"),
    ("resnext101_32x8d", "ResNeXt", "resnet101"),
    ("resnext101_64x4d", "ResNeXt", "resnet101"),
    ("wide_resnet50_2", "wide", "resnet50"),
    ("wide_resnet101_2", "wide", "resnet101"),
)


def params_and_macs(name: str) -> tuple[int, int]:
    """(parameters, MACs of one image at the native resolution)."""
    stats = model_stats(name)
    return stats["params"], stats["macs"]


def batchnorm_parameters(model: nn.Module) -> dict[str, int]:
    """BatchNorm parameters by place: the stem (before the stages), inside the blocks, on the shortcuts,
    after the last stage; and every other parameter."""
    names = [n for n, _ in model.named_children()]
    first_stage = next(i for i, n in enumerate(names) if n.startswith("layer"))
    out = {"stem BatchNorm": 0, "in-block BatchNorms": 0, "shortcut BatchNorms": 0, "BatchNorm after the last stage": 0}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            top = name.split(".")[0]
            role = (
                ("shortcut BatchNorms" if ".downsample" in name else "in-block BatchNorms")
                if top.startswith("layer")
                else ("stem BatchNorm" if names.index(top) < first_stage else "BatchNorm after the last stage")
            )
            out[role] += sum(p.numel() for p in m.parameters())
    out["other parameters"] = sum(p.numel() for p in model.parameters()) - sum(out.values())
    return out


def preactivation_difference(model: nn.Module, base: nn.Module) -> str:
    """Where a pre-activation ResNet's parameters differ from the ResNet's, read off both models: every
    difference, so that the parts add up to the total."""
    ours, theirs = batchnorm_parameters(model), batchnorm_parameters(base)
    parts = {k: ours[k] - theirs[k] for k in ours if ours[k] != theirs[k]}

    def in_block(m: nn.Module) -> dict[str, int]:  # in-block BatchNorm parameters per block ("layer2.0")
        out: dict[str, int] = {}
        for name, bn in m.named_modules():
            if isinstance(bn, nn.BatchNorm2d) and name.startswith("layer") and ".downsample" not in name:
                block = ".".join(name.split(".")[:2])
                out[block] = out.get(block, 0) + sum(p.numel() for p in bn.parameters())
        return out

    a, b = in_block(model), in_block(base)
    blocks = [k for k in a if a[k] != b.get(k)]
    why = {
        "stem BatchNorm": "v2 has none before the first stage",
        "BatchNorm after the last stage": f"v2 normalizes the last stage's {model.final_bn.num_features} channels",
        "shortcut BatchNorms": "v2's projection shortcuts have none",
        "in-block BatchNorms": "v2 normalizes each block's input, v1 each convolution's output: they differ in the "
        f"blocks that change the width, {', '.join(blocks)}",
        "other parameters": "convolutions and classifier",
    }
    total = sum(parts.values())
    return (
        ", ".join(f"{k} {v:+,} ({why[k]})" for k, v in parts.items())
        + f"; together {total:+,}"
        + ("; the convolutions are the same" if "other parameters" not in parts else "")
    )


def measured_behaviour(name: str, variant: str, baseline: str) -> str:
    (params, macs), (base_params, base_macs) = params_and_macs(name), params_and_macs(baseline)
    delta = (
        f"{params - base_params:+,} parameters ({params / base_params - 1:+.2%}), "
        f"{(macs - base_macs) / 1e9:+.3f} GMACs ({macs / base_macs - 1:+.2%})"
    )
    model, base = meta_model(name), meta_model(baseline)
    if variant == "pre-activation":
        return f"{delta}: {preactivation_difference(model, base)}"
    if variant.startswith("SE"):
        se = model.layer1[0].se
        text = (
            f"{delta}: one gate per block, stage 1 squeezing {se.conv_reduce.in_channels} channels to "
            f"{se.conv_reduce.out_channels}"
        )
        first = model.layer2[0]
        if isinstance(first, Bottleneck) and first.conv1.stride == (2, 2):
            text += "; stride on the first 1x1 of each stage's first bottleneck (fewer MACs than ResNet v1.5)"
        return text
    conv, base_conv = model.layer1[0].conv2, base.layer1[0].conv2
    if variant == "ResNeXt":
        return (
            f"{delta}: the stage-1 3x3 is {conv.groups} groups x {conv.out_channels // conv.groups} channels "
            f"= {conv.out_channels} wide (ResNet: 1 group x {base_conv.out_channels})"
        )
    return f"{delta}: the stage-1 3x3 is {conv.out_channels} wide (ResNet: {base_conv.out_channels})"


def build(options: Options) -> Page | None:
    rows = []
    for name, variant, baseline in VARIANT_PAIRS:
        if name not in MODELS or not options.selected([name]):
            continue
        (params, macs), (base_params, base_macs) = params_and_macs(name), params_and_macs(baseline)
        rows.append(
            {
                "model": name,
                "variant": variant,
                "baseline ResNet": baseline,
                "params": params,
                "params (baseline)": base_params,
                "params ratio": round(params / base_params, 4),
                "GMACs": round(macs / 1e9, 3),
                "GMACs (baseline)": round(base_macs / 1e9, 3),
                "GMACs ratio": round(macs / base_macs, 4),
                "seed's claim": SEED_CLAIMS[variant],
                "measured": measured_behaviour(name, variant, baseline),
            }
        )
    if not rows:
        return None
    se_rows = []
    for channels in (64, 128, 256, 512, 1024, 2048):
        se_rows.append(
            {
                "channels": channels,
                "seed SEResidualBlock (out_channels // 16)": seed_se_width(channels),
                "original SENet (timm legacy_seresnet*)": se_reduced_width(channels, 16, round_to=None),
                "timm seresnet* (rounded to a multiple of 8, at least 8)": se_reduced_width(channels, 16, round_to=8),
            }
        )
    errata = seed_variant_blocks(options)
    intro = (
        findings(
            errata, "the variants' costs against the baseline ResNet are below; their training benefits are not "
            "measured here"
        )
        + "\n\n"
        "Seed section 2.3 lists three improvements on ResNet: pre-activation (ResNet v2), Squeeze-and-"
        "Excitation and ResNeXt's grouped convolution; section 7 sketches a ResNeXt block. Each is built "
        "here as an option of the hand-written ResNet and shown equal to timm's and torchvision's models "
        "on randomized weights (equivalence page). Parameters and GMACs (multiply-accumulates of one 224x224 "
        "image, counted by `torch.utils.flop_counter`) are set against the baseline ResNet of the same depth. "
        "The seed's claims are qualitative; what can be measured without training is the cost."
    )
    tables = [
        Table(
            "resnet_variants",
            "Variants against the baseline ResNet of the same depth",
            pd.DataFrame(rows),
            "`params ratio` and `GMACs ratio` are variant / baseline ResNet (the ResNet v1.5 of the same depth; "
            "'plain' on the other pages means a network without shortcuts).",
            page_columns=(
                "model",
                "variant",
                "baseline ResNet",
                "params",
                "params ratio",
                "GMACs",
                "GMACs ratio",
                "seed's claim",
                "measured",
            ),
        ),
        Table(
            "resnet_se_widths",
            "SE squeezed width per block width",
            pd.DataFrame(se_rows),
            "The seed and the original SENet floor `channels / 16`; timm's SE-ResNets round it to a "
            "multiple of 8, at least 8. They differ only for 64-channel blocks (stage 1 of SE-ResNet-18/34).",
        ),
    ]
    return Page("resnet_variants", "ResNet variants (seed 2.3, 7)", intro, tables, errata=errata)


# ---- the seed's blocks, checked --------------------------------------------------------------


def seed_variant_blocks(options: Options) -> list[Erratum]:
    rows = []
    if options.selected([n for n in MODELS if n.startswith("resnext")]):
        x = torch.randn(1, 256, 56, 56)
        seed_block, ours = SeedResNeXtBlock(256, 64), Bottleneck(256, 64, groups=32, base_width=4).eval()
        out = seed_block(x)
        with torch.no_grad():
            our_shape = "x".join(map(str, ours(x).shape))
        seed_shapes = {k: tuple(v.shape) for k, v in seed_block.state_dict().items()}
        reference_block = meta_model("resnext50_32x4d").layer1[1]
        same = seed_shapes == {k: tuple(v.shape) for k, v in reference_block.state_dict().items()}
        elided = elision("ResNeXtBlock")
        runs = isinstance(out, torch.Tensor) and "x".join(map(str, out.shape)) == our_shape
        rows.append(
            Erratum(
                "7",
                "`ResNeXtBlock` has a ResNeXt bottleneck block's layers, its width `int(out_channels * base_width / "
                "64) * cardinality` (32x4d: 128)",
                same,
                f"the block's {len(seed_shapes)} tensors "
                + ("have" if same else "do not all have")
                + f" the names and shapes of resnext50_32x4d's layer1.1 (3x3: {seed_block.conv2.out_channels} "
                f"channels in {seed_block.conv2.groups} groups)",
            )
        )
        rows.append(
            Erratum(
                "7",
                "`ResNeXtBlock` computes a ResNeXt bottleneck block (its forward, as printed)",
                runs,
                (
                    f"the seed elides its forward ('{elided}', then `pass`), so the block is not runnable as printed: "
                    f"it returns {out!r} for a 1x256x56x56 input (the hand-written Bottleneck with groups=32, "
                    f"base_width=4 returns {our_shape})"
                    if elided
                    else f"its forward returns {out!r} for a 1x256x56x56 input (the hand-written Bottleneck returns "
                    f"{our_shape})" + ("" if runs else ", and the seed does not mark it as elided")
                ),
            )
        )
    if options.selected([n for n in MODELS if "seresnet" in n]):
        diff, reshaped = ported_block_diff(
            SeedSEResidualBlock(64, 128, stride=2),
            BasicBlock(64, 128, 2, conv_bn(64, 128, 1, stride=2), se_layer=squeeze_excite),
            SEED_SE_BLOCK_RULES,
            (2, 64, 56, 56),
        )
        rows.append(
            Erratum(
                "2.3",
                "`SEResidualBlock` is SE-ResNet's basic block (SE after bn2, before the addition)",
                diff.ok(1e-5),
                f"ported into the hand-written SE BasicBlock ({', '.join(reshaped)} "
                f"reshaped from Linear): max rel output diff {diff.max_rel:.2g}",
            )
        )
        rows.append(
            Erratum(
                "2.3",
                "`SEResidualBlock` squeezes like the SENet paper's SE-ResNet: `out_channels // 16` channels (64 -> 4)",
                seed_se_width(64) == se_reduced_width(64, 16, round_to=None),
                f"the SENet paper's rule, reduction ratio r = 16, C/r: {se_reduced_width(64, 16, None)} for "
                f"64 channels, as the seed and timm's legacy_seresnet18 (the original SENet layout)",
                note=f"timm's seresnet18/34 round C/16 to a multiple of 8, at least 8: "
                f"{se_reduced_width(64, 16, 8)} at 64 channels; equal from 128 channels on",
            )
        )
    if options.selected([n for n in MODELS if n.startswith("resnetv2")]):
        identity, _ = ported_block_diff(
            SeedPreActResidualBlock(64, 64), PreActBasicBlock(64, 64), SEED_PREACT_BLOCK_RULES, (2, 64, 28, 28)
        )
        projection, _ = ported_block_diff(
            SeedPreActResidualBlock(64, 128, stride=2),
            PreActBasicBlock(64, 128, 2, nn.Conv2d(64, 128, 1, stride=2, bias=False)),
            SEED_PREACT_BLOCK_RULES,
            (2, 64, 28, 28),
        )
        rows.append(
            Erratum(
                "2.3",
                "pre-activation (BN-ReLU-Conv) improves training stability ('提高训练稳定性')",
                Outcome.UNDECIDED,
                "not measured here; its source, the pre-activation paper (He et al. 2016, 'Identity Mappings in Deep "
                "Residual Networks'), shows easier optimization and better accuracy, not stability as such: its "
                "Figure 1 (ResNet-1001 on CIFAR-10) shows the pre-activation net's training loss falling faster from "
                "the start (the paper's 'ease of optimization', section 4), and its Table 3 gives CIFAR-10 test error "
                + ", ".join(f"{net} {a:.2f}% (original unit) -> {b:.2f}% (pre-activation)"
                            for net, (a, b) in PREACT_TABLE_3_CIFAR10_ERROR.items())
                + "; neither measures stability (spread over seeds, divergence)",
                decide="training runs of the ResNet and its pre-activation version at depth over several seeds, "
                "comparing the spread and divergence of their training-loss curves",
            )
        )
        rows.append(
            Erratum(
                "2.3",
                "`PreActResidualBlock` with an identity shortcut is the ResNet v2 block",
                identity.ok(1e-5),
                f"ported into the hand-written v2 block (`PreActBasicBlock`, as timm's): max rel output diff "
                f"{identity.max_rel:.2g}",
            )
        )
        rows.append(
            Erratum(
                "2.3",
                "`PreActResidualBlock` with a projection shortcut is the ResNet v2 block",
                projection.ok(1e-5),
                f"ported into the hand-written v2 block (`PreActBasicBlock`, as timm's): max rel output diff "
                f"{projection.max_rel:.2g}"
                + ("" if projection.ok(1e-5)
                   else ": the seed's block projects the raw x, v2 projects the pre-activation relu(bn1(x))"),
            )
        )
    return rows
