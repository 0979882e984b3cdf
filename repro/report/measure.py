"""Measurements several pages share, each made once per report run: the hand-written model on the
meta device, its parameter and MAC counts, a reference's parameter count, and torchvision's
weight metadata (the one reader of it)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import reference
from repro.flops import build_on_meta, count_params, macs_and_output_shape, meta_params
from repro.registry import MODELS, create_model, references_for


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
    return {"params": count_params(model), "macs": macs, "output": shape, "model": model, "resolution": size}


@functools.lru_cache(maxsize=None)
def reference_params(spec: str) -> int:
    return meta_params(lambda: reference.create(spec))


def torchvision_builder(name: str) -> str | None:
    """The torchvision model this hand-written model is shown equal to (its torchvision reference)."""
    specs = [e.name for e in references_for(name) if e.source == "torchvision"]
    return specs[0] if specs else None


@dataclass(frozen=True)
class WeightsInfo:
    """torchvision's metadata of one set of ImageNet-1K weights (no download)."""

    builder: str
    weights: str  # e.g. "IMAGENET1K_V1"
    top1: float
    crop: int  # the resolution the top-1 was measured at
    gmacs: float | None  # torchvision's own "_ops" (GFLOPs in its docs; multiply-adds) at that crop
    url: str = ""  # the weights file torchvision downloads
    recipe: str = ""  # the training recipe its metadata links to
    # The evaluation preprocessing its top-1 was measured with (``weights.transforms()``): resize the shorter
    # side, centre-crop ``crop``, normalize.
    resize: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    interpolation: str = ""

    @property
    def source(self) -> str:
        return f"torchvision {self.builder} {self.weights} metadata"

    @property
    def origin(self) -> str:
        """Who trained these weights, read off torchvision's file name and recipe link: torchvision's weights
        are not one recipe (its EfficientNet-B0-B4 V1 files, efficientnet_bN_rwightman-*.pth, are 'ported from
        rwightman/pytorch-image-models', i.e. timm; B5-B7's, *_lukemelas-*.pth, from lukemelas/EfficientNet-PyTorch)."""
        file = self.url.rsplit("/", 1)[-1]
        if "_rwightman-" in file:
            return "ported from timm, trained by R. Wightman"
        if "_lukemelas-" in file:
            return "ported from lukemelas/EfficientNet-PyTorch"
        if "issues/3995" in self.recipe:
            return "torchvision's newer recipe, vision issue 3995"
        return "torchvision's original reference recipe"


@functools.lru_cache(maxsize=None)
def torchvision_weights(builder: str) -> dict[str, WeightsInfo]:
    """Every ImageNet-1K weights of ``builder`` by name (empty when torchvision has none)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(builder)
    except ValueError:
        return {}
    out = {}
    for key, weights in enum.__members__.items():
        metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K")
        if key == "DEFAULT" or not metrics:
            continue
        evaluation = weights.transforms()
        out[key] = WeightsInfo(builder, key, float(metrics["acc@1"]), int(evaluation.crop_size[0]),
                               weights.meta.get("_ops"), weights.url, weights.meta.get("recipe", ""),
                               int(evaluation.resize_size[0]), tuple(evaluation.mean), tuple(evaluation.std),
                               evaluation.interpolation.value)
    return out


def torchvision_v1(builder: str | None) -> WeightsInfo | None:
    """The IMAGENET1K_V1 weights: torchvision's first weights of each model, which the seed's torchvision figures
    are. Not one recipe, nor the papers': ResNets trained with torchvision's original reference recipe,
    EfficientNet-B0-B4 ported from timm, B5-B7 from lukemelas/EfficientNet-PyTorch (``WeightsInfo.origin``)."""
    return torchvision_weights(builder).get("IMAGENET1K_V1") if builder else None


def best_torchvision(builder: str) -> WeightsInfo | None:
    weights = torchvision_weights(builder)
    return max(weights.values(), key=lambda w: w.top1) if weights else None
