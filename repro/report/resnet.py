"""ResNet family page (seed section 2.2): parameters and MACs of ResNet-18 to 152 and the plain
baselines, beside the paper's Table 1; the seed's ResNet is torchvision's v1.5, not the paper's v1."""

from __future__ import annotations

import functools

import pandas as pd

from repro.flops import count_macs
from repro.models.resnet import Bottleneck
from repro.flops import build_on_meta
from repro.registry import MODELS, create_model, references_for
from repro.report.base import Erratum, Options, Outcome, Page, Table
from repro.report.equivalence import equivalence
from repro.report.measure import model_stats, reference_params
from repro.seed import PAPER, SEED_RESNETS

NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34")


@functools.lru_cache(maxsize=None)
def v1_macs(name: str) -> int:
    """MACs of the paper's v1 layout of ``name`` (stride on the first 1x1 of a downsampling bottleneck)."""
    return count_macs(build_on_meta(lambda: create_model(name, stride_in_1x1=True)), (1, 3, 224, 224))


def family_table(names: list[str], full: bool) -> pd.DataFrame:
    rows = []
    for name in names:
        stats = model_stats(name)
        model = stats["model"]
        refs = {e.source: e for e in references_for(name)}
        paper = PAPER.get(name)
        bottleneck = model.block is Bottleneck
        rows.append(
            {
                "model": name,
                "block": model.block.__name__ + ("" if model.shortcut else " (no shortcut)"),
                "layers": "-".join(map(str, model.layers)),
                "params (ours)": stats["params"],
                "params (timm)": reference_params(refs["timm"].spec) if "timm" in refs else None,
                "params (torchvision)": reference_params(refs["torchvision"].spec) if "torchvision" in refs else None,
                "GMACs (counted, stride on 3x3: v1.5)": round(stats["macs"] / 1e9, 3),
                "GMACs (counted, stride on 1x1: v1)": round(v1_macs(name) / 1e9, 3)
                if bottleneck
                else round(stats["macs"] / 1e9, 3),
                "paper GFLOPs (Table 1, multiply-adds)": paper.gmacs if paper else None,
                "output shape": "x".join(map(str, stats["output"])),
                "max output diff after port": max(
                    (equivalence(e.spec, full).eval_output.max_abs for e in refs.values()), default=None
                ),
            }
        )
    return pd.DataFrame(rows)


def errata(frame: pd.DataFrame) -> list[Erratum]:
    """Seed 2.2's ResNets against the paper's Table 1 (the rule reads the table above)."""
    by = frame.set_index("model")
    deep = [n for n in SEED_RESNETS if n in by.index and by.loc[n, "block"] == "Bottleneck"]
    if not deep:
        return []
    v15 = "/".join(f"{by.loc[n, 'GMACs (counted, stride on 3x3: v1.5)']:.2f}" for n in deep)
    v1 = "/".join(f"{by.loc[n, 'GMACs (counted, stride on 1x1: v1)']:.2f}" for n in deep)
    paper = "/".join(f"{by.loc[n, 'paper GFLOPs (Table 1, multiply-adds)']:g}" for n in deep)
    # Table 1 prints one decimal (3.8 for ResNet-50's 3.86: truncated), so agreement is within 0.1.
    v1_matches = all(
        abs(by.loc[n, "GMACs (counted, stride on 1x1: v1)"] - by.loc[n, "paper GFLOPs (Table 1, multiply-adds)"]) < 0.1
        for n in deep
    )
    return [
        Erratum(
            "2.2",
            "the seed's `Bottleneck` ResNet-50/101/152 are the ResNet paper's networks",
            Outcome.PARTLY if v1_matches else Outcome.FAILS,
            f"same layers and parameters, but the seed strides the 3x3 (`conv2`, as torchvision's 'v1.5'); the paper "
            f"strides the first 1x1. Counted GMACs of {', '.join(deep)}: seed's layout {v15}; paper's layout {v1}; "
            f"paper Table 1: {paper} (x10^9 multiply-adds, one "
            f"decimal){'' if v1_matches else ' (v1 does not match either)'}",
            note="v1.5 is torchvision's choice and its pretrained weights' layout; it costs more and is slightly more "
            "accurate. A 'ResNet-50' GMACs figure must say which layout it counts.",
        )
    ]


def build(options: Options) -> Page | None:
    names = options.selected(n for n in NAMES if n in MODELS)
    if not names:
        return None
    frame = family_table(names, options.full)
    same = all(r["params (ours)"] == r["params (timm)"] or pd.isna(r["params (timm)"]) for _, r in frame.iterrows())
    findings = [f"the hand-written ResNets {'have' if same else 'do NOT all have'} the references' parameter counts"]
    if "resnet50" in names:
        r50 = frame.set_index("model").loc["resnet50"]
        findings.append(
            f"the seed's `Bottleneck` (2.2) puts the stride on the 3x3 convolution (torchvision's 'v1.5'), "
            f"so its ResNet-50 counts {r50['GMACs (counted, stride on 3x3: v1.5)']:.2f} GMACs where the "
            f"paper's layout counts {r50['GMACs (counted, stride on 1x1: v1)']:.2f} (Table 1: "
            f"{r50['paper GFLOPs (Table 1, multiply-adds)']:g})"
        )
    intro = (
        "Findings: " + "; ".join(findings) + ".\n\n"
        "Seed section 2.2 builds ResNet-18 to 152 and prints their parameter counts. GMACs here are counted by "
        "`torch.utils.flop_counter` on one 224x224 image (convolutions and the classifier), in both stride "
        "layouts; the paper's Table 1 'FLOPs' are multiply-adds. `max output diff after port` is the largest "
        "absolute eval-output difference against timm and torchvision after porting randomized weights (see the "
        "equivalence page). `plain18/34` are the seed's PlainBlock networks: the same layers without shortcuts."
    )
    table = Table(
        "resnet_family",
        "ResNet-18 to 152 and plain baselines",
        frame,
        page_columns=(
            "model",
            "block",
            "layers",
            "params (ours)",
            "params (torchvision)",
            "GMACs (counted, stride on 3x3: v1.5)",
            "GMACs (counted, stride on 1x1: v1)",
            "paper GFLOPs (Table 1, multiply-adds)",
            "max output diff after port",
        ),
    )
    return Page("resnet", "ResNet family (seed 2.2)", intro, [table], errata=errata(frame))
