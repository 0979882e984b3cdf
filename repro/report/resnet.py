"""ResNet family page (seed section 2.2) and the seed's ResNet figures (sections 3.2, 5.2)."""

from __future__ import annotations

import functools
import warnings

import pandas as pd
import torch

import reference
from repro.flops import build_on_meta, count_params, macs_and_output_shape, meta_params
from repro.registry import MODELS, create_model, references_for
from repro.report import Erratum, Options, Page, Table, erratum, section
from repro.report.equivalence import equivalence
from repro.seed import (
    SEED_MODELS,
    SEED_TOP1_SECTION_3_2,
    seed_flops_column,
    torchvision_top1,
)


@functools.lru_cache(maxsize=None)
def meta_model(name: str) -> torch.nn.Module:
    """The hand-written model on the meta device: its structure and shapes, no memory, no initialization cost."""
    return build_on_meta(lambda: create_model(name)).eval()


@functools.lru_cache(maxsize=None)
def model_stats(name: str, resolution: int | None = None) -> dict:
    """Parameters, MACs of one image and output shape of the hand-written model at ``resolution``
    (default: native), counted on the meta device."""
    size = resolution or MODELS[name].input_size
    model = meta_model(name)
    macs, shape = macs_and_output_shape(model, (1, 3, size, size))
    return {"params": count_params(model), "macs": macs, "output": shape, "model": model}


@functools.lru_cache(maxsize=None)
def reference_params(spec: str) -> int:
    return meta_params(lambda: reference.create(spec))


@section
def resnet_page(options: Options) -> Page | None:
    names = options.selected(n for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34") if n in MODELS)
    if not names:
        return None
    seed_params = {c.model: c.params_m for c in SEED_MODELS}
    rows = []
    for name in names:
        stats = model_stats(name)
        model = stats["model"]
        refs = {e.source: e for e in references_for(name)}
        row = {
            "model": name,
            "block": model.block.__name__ + ("" if model.shortcut else " (no shortcut)"),
            "layers": "-".join(map(str, model.layers)),
            "params (ours)": stats["params"],
            "params (timm)": reference_params(refs["timm"].spec) if "timm" in refs else None,
            "params (torchvision)": reference_params(refs["torchvision"].spec) if "torchvision" in refs else None,
            "GMACs (counted)": round(stats["macs"] / 1e9, 3),
            "seed 'FLOPS' (params x 2 / 1e9)": round(seed_flops_column(stats["params"]), 3),
            "seed params (M, 5.2)": seed_params.get(name),
            "output shape": "x".join(map(str, stats["output"])),
            "max output diff after port": max((equivalence(e.spec, options.full).eval_output.max_abs for e in refs.values()), default=None),
        }
        rows.append(row)
    intro = (
        "Seed section 2.2 builds ResNet-18 to 152 and prints their parameter counts; section 3.2 prints a "
        "'FLOPS' column computed as parameters x 2 / 1e9. GMACs here are counted by "
        "`torch.utils.flop_counter` on one 224x224 image (convolutions and the classifier). "
        "`max output diff after port` is the largest absolute eval-output difference against timm and "
        "torchvision after porting randomized weights (see the equivalence page). `plain18/34` are the "
        "seed's PlainBlock networks: the same layers without shortcuts or projections."
    )
    return Page("resnet", "ResNet family (seed 2.2)", intro, [Table("resnet_family", "ResNet-18 to 152 and plain baselines", pd.DataFrame(rows))])


@erratum
def resnet_errata(options: Options) -> list[Erratum]:
    rows = []
    for claim in SEED_MODELS:
        if claim.model not in MODELS or not options.selected([claim.model]):
            continue
        params = model_stats(claim.model)["params"]
        if claim.params_m is not None:
            rows.append(Erratum("5.2", f"{claim.label} has {claim.params_m}M parameters",
                                abs(params / 1e6 - claim.params_m) < 0.05, f"{params:,} ({params / 1e6:.2f}M)"))
        if claim.model in SEED_TOP1_SECTION_3_2:  # the models of section 3.2's table, where the column is printed
            macs = model_stats(claim.model)["macs"]
            rows.append(Erratum("3.2", f"{claim.label}'s FLOPs are params x 2 = {seed_flops_column(params):.3f} G",
                                abs(seed_flops_column(params) - 2 * macs / 1e9) < 0.05 * 2 * macs / 1e9,
                                f"{2 * macs / 1e9:.2f} GFLOPs counted ({macs / 1e9:.2f} GMACs)"))
        top1 = torchvision_top1(claim.torchvision) if claim.torchvision else None
        for section_label, claimed in (("5.2", claim.top1), ("3.2", SEED_TOP1_SECTION_3_2.get(claim.model))):
            if claimed is not None and top1 is not None:
                digits = len(str(claimed).partition(".")[2])
                rows.append(Erratum(section_label, f"{claim.label} top-1 is {claimed}%",
                                    abs(top1[0] - claimed) <= 0.5 * 10 ** -digits, f"{top1[0]:.2f}% ({top1[1]})"))
    return rows


@erratum
def pretrained_argument(options: Options) -> list[Erratum]:
    import torchvision

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torchvision.models.resnet18(pretrained=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, (UserWarning, DeprecationWarning)) and "pretrained" in str(w.message)]
    return [Erratum("3.2", "`models.resnet18(pretrained=False)` is how to build an untrained model",
                    not messages, messages[0] if messages else f"accepted silently by torchvision {torchvision.__version__}")]
