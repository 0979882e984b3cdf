"""Porting rules and reference table for MobileNetV1 and MobileNetV3.

The hand-written models lay out the paper's table flat (``features.0`` stem, ``features.1..N`` one
per row, then the last 1x1 convolution), as torchvision does; inside a block the parts are named
``expand``, ``depthwise``, ``se``, ``project`` (``depthwise``/``pointwise`` in MobileNetV1).

* torchvision numbers each block's parts in order (``features.5.block.2.fc1``), so one part's index
  depends on whether the block has an expansion and an SE; the SE's tensors are named ``fc1``/``fc2``
  and only the first block has no expansion (its "exp size" equals its input in both of the paper's
  tables), which lets one rule set serve Large and Small.
* timm groups the blocks into stages, ``blocks.<stage>.<index>``: a new stage wherever the output
  width changes, the last 1x1 convolution a stage of its own. Its rules are generated from the
  same table rows the models are built from, one rule per tensor group and block.
"""

from __future__ import annotations

from itertools import groupby

from repro.models.mobilenet import LARGE, MOBILENETV1_BLOCKS, SMALL, MobileNetV3Arch
from repro.porting import PortRules
from repro.registry import register_reference


def timm_positions(outs: list[int]) -> list[tuple[int, int]]:
    """``(stage, index)`` in timm's ``blocks`` of each block, given the blocks' output widths in order."""
    positions = []
    for stage, (_, run) in enumerate(groupby(outs)):
        positions += [(stage, i) for i, _ in enumerate(run)]
    return positions


def _block_rules(stage: int, index: int, feature: int, parts: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(rf"blocks\.{stage}\.{index}\.{src}\.(.*)", rf"features.{feature}.{dst}.\1") for src, dst in parts]


_TIMM_STEM = ((r"conv_stem\.(.*)", r"features.0.conv.\1"), (r"bn1\.(.*)", r"features.0.bn.\1"))
_TIMM_DS_V1 = (("conv_dw", "depthwise.conv"), ("bn1", "depthwise.bn"),
               ("conv_pw", "pointwise.conv"), ("bn2", "pointwise.bn"))
_TIMM_DS_V3 = (("conv_dw", "depthwise.conv"), ("bn1", "depthwise.bn"), ("se", "se"),
               ("conv_pw", "project.conv"), ("bn2", "project.bn"))
_TIMM_IR = (("conv_pw", "expand.conv"), ("bn1", "expand.bn"), ("conv_dw", "depthwise.conv"), ("bn2", "depthwise.bn"),
            ("se", "se"), ("conv_pwl", "project.conv"), ("bn3", "project.bn"))
_TIMM_CONV = (("conv", "conv"), ("bn1", "bn"))


def timm_mobilenetv1_rules() -> PortRules:
    renames = list(_TIMM_STEM)
    for feature, (stage, index) in enumerate(timm_positions([out for out, _ in MOBILENETV1_BLOCKS]), start=1):
        renames += _block_rules(stage, index, feature, _TIMM_DS_V1)
    renames.append((r"classifier\.(.*)", r"classifier.\1"))
    return PortRules(
        name="timm MobileNetV1 -> repro MobileNetV1",
        source_type="timm.models.efficientnet.EfficientNet",
        target_type="repro.models.mobilenet.MobileNetV1",
        renames=tuple(renames),
    )


def timm_mobilenetv3_rules(label: str, arch: MobileNetV3Arch) -> PortRules:
    # The last 1x1 convolution gets its own stage: a sentinel width no block has.
    positions = timm_positions([row.out for row in arch.blocks] + [-1])
    renames = list(_TIMM_STEM)
    for feature, (stage, index) in enumerate(positions, start=1):
        parts = _TIMM_DS_V3 if feature == 1 else _TIMM_CONV if feature == len(positions) else _TIMM_IR
        renames += _block_rules(stage, index, feature, parts)
    renames += [(r"conv_head\.(.*)", r"head.\1"), (r"classifier\.(.*)", r"classifier.\1")]
    return PortRules(
        name=f"timm MobileNetV3-{label} -> repro MobileNetV3",
        source_type="timm.models.mobilenetv3.MobileNetV3",
        target_type="repro.models.mobilenet.MobileNetV3",
        renames=tuple(renames),
    )


TIMM_MOBILENETV1 = timm_mobilenetv1_rules()
TIMM_MOBILENETV3_LARGE = timm_mobilenetv3_rules("Large", LARGE)
TIMM_MOBILENETV3_SMALL = timm_mobilenetv3_rules("Small", SMALL)

TORCHVISION_MOBILENETV3 = PortRules(
    name="torchvision MobileNetV3 -> repro MobileNetV3",
    source_type="torchvision.models.mobilenetv3.MobileNetV3",
    target_type="repro.models.mobilenet.MobileNetV3",
    renames=(
        # The first block: no expansion, so block.0 is the depthwise conv and the projection is
        # block.1 (no SE, Large) or block.2 (after the SE, Small).
        (r"features\.1\.block\.0\.0\.(.*)", r"features.1.depthwise.conv.\1"),
        (r"features\.1\.block\.0\.1\.(.*)", r"features.1.depthwise.bn.\1"),
        (r"features\.1\.block\.[12]\.0\.(.*)", r"features.1.project.conv.\1"),
        (r"features\.1\.block\.[12]\.1\.(.*)", r"features.1.project.bn.\1"),
        # The SE, wherever it sits.
        (r"features\.(\d+)\.block\.\d+\.fc1\.(.*)", r"features.\1.se.conv_reduce.\2"),
        (r"features\.(\d+)\.block\.\d+\.fc2\.(.*)", r"features.\1.se.conv_expand.\2"),
        # Every other block: expansion, depthwise, then the projection at 2 (no SE) or 3 (after the SE).
        (r"features\.(\d+)\.block\.0\.0\.(.*)", r"features.\1.expand.conv.\2"),
        (r"features\.(\d+)\.block\.0\.1\.(.*)", r"features.\1.expand.bn.\2"),
        (r"features\.(\d+)\.block\.1\.0\.(.*)", r"features.\1.depthwise.conv.\2"),
        (r"features\.(\d+)\.block\.1\.1\.(.*)", r"features.\1.depthwise.bn.\2"),
        (r"features\.(\d+)\.block\.[23]\.0\.(.*)", r"features.\1.project.conv.\2"),
        (r"features\.(\d+)\.block\.[23]\.1\.(.*)", r"features.\1.project.bn.\2"),
        # The stem and the last 1x1 convolution (Conv2dNormActivation: 0 conv, 1 BN).
        (r"features\.(\d+)\.0\.(.*)", r"features.\1.conv.\2"),
        (r"features\.(\d+)\.1\.(.*)", r"features.\1.bn.\2"),
        # classifier = Linear (the head), Hardswish, Dropout, Linear.
        (r"classifier\.0\.(.*)", r"head.\1"),
        (r"classifier\.3\.(.*)", r"classifier.\1"),
    ),
)

_TIMM_DETERMINISTIC = dict(drop_rate=0.0, drop_path_rate=0.0)

for _name in ("mobilenetv1_100", "mobilenetv1_125"):
    register_reference(f"timm:{_name}", _name, TIMM_MOBILENETV1,
                       deterministic_reference_kwargs=dict(drop_rate=0.0),
                       deterministic_model_kwargs=dict(drop_rate=0.0))

for _name in ("mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100",
              "mobilenetv3_large_075", "mobilenetv3_large_100"):
    register_reference(
        f"timm:{_name}", _name, TIMM_MOBILENETV3_SMALL if "small" in _name else TIMM_MOBILENETV3_LARGE,
        model_kwargs=dict(head="conv", bn_eps=1e-5, bn_momentum=0.1, drop_rate=0.0),  # timm's defaults
        deterministic_reference_kwargs=_TIMM_DETERMINISTIC, deterministic_model_kwargs=_TIMM_DETERMINISTIC,
    )

for _tv, _name in (("mobilenet_v3_small", "mobilenetv3_small_100"), ("mobilenet_v3_large", "mobilenetv3_large_100")):
    register_reference(
        f"torchvision:{_tv}", _name, TORCHVISION_MOBILENETV3,
        model_kwargs=dict(head="linear", bn_eps=1e-3, bn_momentum=0.01, drop_rate=0.2),  # torchvision's defaults
        deterministic_reference_kwargs=dict(dropout=0.0), deterministic_model_kwargs=dict(drop_rate=0.0),
    )
