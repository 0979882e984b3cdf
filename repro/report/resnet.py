"""ResNet family page (seed section 2.2): parameters and MACs of ResNet-18 to 152 and the plain
baselines, beside the paper's Table 1; the seed's ResNet is torchvision's v1.5, not the paper's v1."""

from __future__ import annotations

import functools
import math

import pandas as pd

from repro.flops import count_macs
from repro.models.resnet import Bottleneck
from repro.flops import build_on_meta
from repro.registry import MODELS, create_model, references_for
from repro.report.base import Erratum, Options, Page, Table, findings
from repro.report.equivalence import equivalence
from repro.report.measure import model_stats, reference_params
from repro.seed import PAPER, RESNET_V15_SOURCE, SEED_RESNETS
from repro.seed.text import normalize, section_lines

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
        v1 = (v1_macs(name) if model.block is Bottleneck else stats["macs"]) / 1e9
        rows.append(
            {
                "model": name,
                "block": model.block.__name__ + ("" if model.shortcut else " (no shortcut)"),
                "layers": "-".join(map(str, model.layers)),
                "params (ours)": stats["params"],
                "params (timm)": reference_params(refs["timm"].spec) if "timm" in refs else None,
                "params (torchvision)": reference_params(refs["torchvision"].spec) if "torchvision" in refs else None,
                "GMACs (counted, stride on 3x3: v1.5)": round(stats["macs"] / 1e9, 3),
                "GMACs (counted, stride on 1x1: v1)": round(v1, 3),
                "paper GFLOPs (Table 1, multiply-adds)": paper.gmacs if paper else None,
                "Table 1 against the v1 count": table_1_reading(v1, paper.gmacs) if paper else "",
                "output shape": "x".join(map(str, stats["output"])),
                "max output diff after port": max(
                    (equivalence(e.spec, full).eval_output.max_abs for e in refs.values()), default=None
                ),
            }
        )
    return pd.DataFrame(rows)


def table_1_reading(counted: float, printed: float) -> str:
    """How Table 1's one-decimal figure relates to a count: rounded, truncated, or neither."""
    rounded, truncated = round(counted, 1), math.floor(counted * 10) / 10
    if abs(rounded - printed) < 1e-9:
        return "the count rounded"
    if abs(truncated - printed) < 1e-9:
        return f"the count truncated (rounded: {rounded:g})"
    return f"neither (the count rounded: {rounded:g}, truncated: {truncated:g})"


def errata(frame: pd.DataFrame) -> list[Erratum]:
    """Seed 2.2's ResNets against the paper's Table 1 (the rule reads the table above)."""
    by = frame.set_index("model")
    deep = [n for n in SEED_RESNETS if n in by.index and by.loc[n, "block"] == "Bottleneck"]
    if not deep:
        return [flops_comment_erratum()]
    v15 = "/".join(f"{by.loc[n, 'GMACs (counted, stride on 3x3: v1.5)']:.2f}" for n in deep)
    v1_col, paper_col = "GMACs (counted, stride on 1x1: v1)", "paper GFLOPs (Table 1, multiply-adds)"
    # Table 1 prints one decimal, and not always our count rounded (3.86 printed 3.8): agreement is within 0.1.
    v1_matches = all(abs(by.loc[n, v1_col] - by.loc[n, paper_col]) < 0.1 for n in deep)
    readings = {n: table_1_reading(by.loc[n, v1_col], by.loc[n, paper_col]) for n in by.index if pd.notna(
        by.loc[n, paper_col])}
    v15_matches = all(abs(by.loc[n, "GMACs (counted, stride on 3x3: v1.5)"] - by.loc[n, paper_col]) < 0.1
                      for n in deep)
    params = "; ".join(
        f"{n} {int(by.loc[n, 'params (ours)']):,}"
        + ("" if pd.isna(by.loc[n, "params (torchvision)"]) else
           " (torchvision's: equal)" if by.loc[n, "params (ours)"] == by.loc[n, "params (torchvision)"]
           else f" (torchvision's: {int(by.loc[n, 'params (torchvision)']):,})")
        for n in deep
    )
    same_params = all(pd.isna(by.loc[n, "params (torchvision)"])
                      or by.loc[n, "params (ours)"] == by.loc[n, "params (torchvision)"] for n in deep)
    paper_layout = "/".join(f"{by.loc[n, v1_col]:.3f}" for n in deep)
    table_1 = "/".join(f"{by.loc[n, paper_col]:g}" for n in deep)
    return [
        Erratum(
            "2.2",
            "the seed's `Bottleneck` ResNet-50/101/152 have the ResNet paper's layers (Table 1) and parameters",
            v1_matches and same_params,
            f"parameters {params}; the same layers strided as the paper strides them count {paper_layout} GMACs, "
            f"paper Table 1: {table_1} (x10^9 multiply-adds, one decimal): "
            + ("within 0.1" if v1_matches else "not within 0.1")
            + ". Table 1 against this count: "
            + "; ".join(f"{n} {by.loc[n, v1_col]:.3f} -> {by.loc[n, paper_col]:g}: {r}" for n, r in readings.items())
            + (
                ""
                if len({r.split(" (")[0] for r in readings.values()}) == 1
                else ". Table 1 neither rounds nor truncates consistently: it appears to count slightly differently"
            ),
        ),
        Erratum(
            "2.2",
            "the seed's `Bottleneck` downsamples where the ResNet paper's does (the first 1x1 of a stage's first "
            "block)",
            v15_matches,
            f"the seed strides the 3x3 (`conv2`, as torchvision's 'v1.5'); the paper's layout strides the first 1x1, "
            f"as the authors' released Caffe models do (KaimingHe/deep-residual-networks: `res3a_branch2a`, a 1x1 of "
            f"stride 2; the paper's text says only that conv3_1, conv4_1 and conv5_1 downsample): counted GMACs "
            f"of {', '.join(deep)} in the seed's layout {v15}, in the paper's {paper_layout}; paper Table 1: "
            f"{table_1}",
            note=f"v1.5 is torchvision's choice and its pretrained weights' layout; {RESNET_V15_SOURCE}. "
            "A 'ResNet-50' GMACs figure must say which layout it counts.",
        ),
        flops_comment_erratum(),
    ]


def flops_comment_erratum() -> Erratum:
    """Seed 2.2's loop announces approximate FLOPs ('# 计算FLOPs(近似)'): what the code under it computes."""
    lines = section_lines("2.2")
    at = next(i for i, line in enumerate(lines) if "计算FLOPs" in line)
    after = [normalize(line) for line in lines[at + 1 :]]
    mentions = [line for line in after if "flop" in line.lower()]
    printed = [line for line in after if line.startswith("print(f")]
    return Erratum(
        "2.2",
        "the architecture comparison computes approximate FLOPs ('# 计算FLOPs(近似)')",
        bool(mentions),
        "the code under the comment runs one forward pass and prints "
        + ", ".join(f"`{p}`" for p in printed)
        + (": nothing computes or prints a FLOP count" if not mentions else "")
        + "; counted multiply-accumulates are on the ResNet page",
    )


def build(options: Options) -> Page | None:
    names = options.selected(n for n in NAMES if n in MODELS)
    if not names:
        return None
    frame = family_table(names, options.full)
    same = all(r["params (ours)"] == r["params (timm)"] or pd.isna(r["params (timm)"]) for _, r in frame.iterrows())
    rows = errata(frame)
    intro = (
        findings(rows, f"the hand-written ResNets {'have' if same else 'do NOT all have'} the references' parameter "
                 "counts")
        + "\n\n"
        "Seed section 2.2 builds ResNet-18 to 152 and prints their parameter counts. GMACs here are counted by "
        "`torch.utils.flop_counter` on one 224x224 image (convolutions and the classifier), in both stride "
        "layouts; the paper's Table 1 'FLOPs' are multiply-adds. `max output diff after port` is the largest "
        "absolute eval-output difference against timm and torchvision after porting randomized weights (in the "
        "CSV; see the equivalence page). `plain18/34` are the seed's PlainBlock networks: the same layers without "
        "shortcuts."
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
            "Table 1 against the v1 count",
        ),
    )
    return Page("resnet", "ResNet family (seed 2.2)", intro, [table], errata=rows)
