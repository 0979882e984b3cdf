"""Porting rules and reference table for the EfficientNet family.

Three reference families, one hand-written family:

* timm ``efficientnet_bN``: PyTorch BatchNorm defaults, symmetric padding, no dropout or
  drop-path unless asked (timm's defaults) -> ours with ``drop_rate=0, drop_path_rate=0``.
* timm ``tf_efficientnet_bN``: the TensorFlow checkpoints' settings (BatchNorm eps 1e-3,
  "SAME" padding) -> our ``tf_efficientnet_bN`` builders, same dropout settings.
* torchvision ``efficientnet_bN``: the paper's dropout and stochastic depth 0.2 (our defaults);
  B5-B7 use BatchNorm eps 1e-3 and momentum 0.01 (TensorFlow's 0.99) -> passed as ``model_kwargs``.

Names (ours on the right):

=====================================  =========================================
timm                                   ours
=====================================  =========================================
conv_stem / bn1                        stem.conv / stem.bn
blocks.0.j (DepthwiseSeparable)        stages.0.j: conv_dw/bn1 -> dw, conv_pw/bn2 -> project
blocks.i.j (InvertedResidual, i>0)     stages.i.j: conv_pw/bn1 -> expand, conv_dw/bn2 -> dw,
                                       conv_pwl/bn3 -> project
blocks.i.j.se.conv_reduce/conv_expand  stages.i.j.se.conv_reduce/conv_expand
conv_head / bn2, classifier            head.conv / head.bn, classifier
=====================================  =========================================

torchvision numbers everything: ``features.0`` is the stem, ``features.1`` to ``features.7`` the
stages (ours ``stages.0`` to ``stages.6``: one rule per stage, generated below), ``features.8`` the
head, ``classifier.1`` the linear layer. Inside a block ``block.k`` counts the layers present: stage 1
(MBConv1) has no expansion, so its depthwise conv is ``block.0``; elsewhere it is ``block.1``. Each
``Conv2dNormActivation`` holds ``0`` (conv) and ``1`` (bn); the SE layers are ``fc1`` / ``fc2``.
"""

from __future__ import annotations

from repro.models.efficientnet import B0_STAGES
from repro.porting import PortRules
from repro.registry import register_reference

_TARGET = "repro.models.efficientnet.EfficientNet"
_CONV_BN = {"conv": "conv", "bn": "bn"}

TIMM_EFFICIENTNET_RENAMES: tuple[tuple[str, str], ...] = (
    (r"conv_stem\.(.*)", r"stem.conv.\1"),
    (r"bn1\.(.*)", r"stem.bn.\1"),
    # Stage 0 is MBConv1: timm builds it as a DepthwiseSeparableConv with its own layer names.
    (r"blocks\.0\.(\d+)\.conv_dw\.(.*)", r"stages.0.\1.dw.conv.\2"),
    (r"blocks\.0\.(\d+)\.bn1\.(.*)", r"stages.0.\1.dw.bn.\2"),
    (r"blocks\.0\.(\d+)\.conv_pw\.(.*)", r"stages.0.\1.project.conv.\2"),
    (r"blocks\.0\.(\d+)\.bn2\.(.*)", r"stages.0.\1.project.bn.\2"),
    (r"blocks\.([1-9])\.(\d+)\.conv_pw\.(.*)", r"stages.\1.\2.expand.conv.\3"),
    (r"blocks\.([1-9])\.(\d+)\.bn1\.(.*)", r"stages.\1.\2.expand.bn.\3"),
    (r"blocks\.([1-9])\.(\d+)\.conv_dw\.(.*)", r"stages.\1.\2.dw.conv.\3"),
    (r"blocks\.([1-9])\.(\d+)\.bn2\.(.*)", r"stages.\1.\2.dw.bn.\3"),
    (r"blocks\.([1-9])\.(\d+)\.conv_pwl\.(.*)", r"stages.\1.\2.project.conv.\3"),
    (r"blocks\.([1-9])\.(\d+)\.bn3\.(.*)", r"stages.\1.\2.project.bn.\3"),
    (r"blocks\.(\d+)\.(\d+)\.se\.(conv_reduce|conv_expand)\.(.*)", r"stages.\1.\2.se.\3.\4"),
    (r"conv_head\.(.*)", r"head.conv.\1"),
    (r"bn2\.(.*)", r"head.bn.\1"),
    (r"classifier\.(.*)", r"classifier.\1"),
)


def _torchvision_renames() -> tuple[tuple[str, str], ...]:
    renames = [
        (r"features\.0\.0\.(.*)", r"stem.conv.\1"),
        (r"features\.0\.1\.(.*)", r"stem.bn.\1"),
        (rf"features\.{len(B0_STAGES) + 1}\.0\.(.*)", r"head.conv.\1"),
        (rf"features\.{len(B0_STAGES) + 1}\.1\.(.*)", r"head.bn.\1"),
        (r"classifier\.1\.(.*)", r"classifier.\1"),
    ]
    for stage, cfg in enumerate(B0_STAGES):
        layers = ["dw", "se", "project"] if cfg.expand_ratio == 1 else ["expand", "dw", "se", "project"]
        for k, layer in enumerate(layers):
            source = rf"features\.{stage + 1}\.(\d+)\.block\.{k}\."
            if layer == "se":
                renames.append((source + r"fc1\.(.*)", rf"stages.{stage}.\1.se.conv_reduce.\2"))
                renames.append((source + r"fc2\.(.*)", rf"stages.{stage}.\1.se.conv_expand.\2"))
            else:
                renames.append((source + r"0\.(.*)", rf"stages.{stage}.\1.{layer}.conv.\2"))
                renames.append((source + r"1\.(.*)", rf"stages.{stage}.\1.{layer}.bn.\2"))
    return tuple(renames)


TIMM_EFFICIENTNET = PortRules(
    name="timm EfficientNet -> repro EfficientNet",
    source_type="timm.models.efficientnet.EfficientNet",
    target_type=_TARGET,
    renames=TIMM_EFFICIENTNET_RENAMES,
)
TORCHVISION_EFFICIENTNET = PortRules(
    name="torchvision EfficientNet -> repro EfficientNet",
    source_type="torchvision.models.efficientnet.EfficientNet",
    target_type=_TARGET,
    renames=_torchvision_renames(),
)

_NO_DROPOUT = {"drop_rate": 0.0, "drop_path_rate": 0.0}
# torchvision's efficientnet_b5/b6/b7 builders pass norm_layer=partial(BatchNorm2d, eps=0.001, momentum=0.01).
_TORCHVISION_BN = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7"}
# The equivalence sweep checks B4-B7 at 96x96, not at 380-600: at native size one full check costs
# 10-30 s of CPU each (B7 at 600x600: 27 s at batch 1), too much for a sweep of every reference.
# 96 halves to 48, 24, 12, 6, 3, so every stride-2 convolution of the TF ports sees an even size and pads
# asymmetrically, as at native size. tests/test_efficientnet.py runs the full check of B4-B7 at native
# size, and of every pair at 225x225 (marked slow where large).
CHECK_RESOLUTION = 96
_REDUCED = {f"efficientnet_b{n}" for n in range(4, 8)}

for _n in range(8):
    _name = f"efficientnet_b{_n}"
    _fields = dict(deterministic_reference_kwargs=_NO_DROPOUT, deterministic_model_kwargs=_NO_DROPOUT)
    if _name in _REDUCED:
        _fields.update(input_size=CHECK_RESOLUTION, note=(
            f"checked at {CHECK_RESOLUTION}x{CHECK_RESOLUTION} (native is too slow for the sweep on CPU); "
            "the same full check at native size and at 225x225 in tests/test_efficientnet.py (slow)"))
    register_reference(f"timm:{_name}", _name, TIMM_EFFICIENTNET, model_kwargs=_NO_DROPOUT, **_fields)
    register_reference(f"timm:tf_{_name}", f"tf_{_name}", TIMM_EFFICIENTNET, model_kwargs=_NO_DROPOUT, **_fields)
    register_reference(
        f"torchvision:{_name}",
        _name,
        TORCHVISION_EFFICIENTNET,
        model_kwargs={"bn_eps": 1e-3, "bn_momentum": 0.01} if _name in _TORCHVISION_BN else {},
        **{**_fields, "deterministic_reference_kwargs": {"dropout": 0.0, "stochastic_depth_prob": 0.0}},
    )
