"""Porting rules and reference table for the ResNet family (plain, v2, SE, legacy SENet, ResNeXt, wide).

timm's and torchvision's ResNets name their tensors as torchvision does, and so does the
hand-written ResNet (it follows the seed's code, which follows torchvision): the mapping is the
identity but for timm's SE modules (``se.fc1/fc2``; ours are ``se.conv_reduce/conv_expand``).
One rule set per pair of model types, so a port between mismatched variants (SE weights into a
plain ResNet, ResNeXt into ResNet-50) fails on the tensors one side has and the other lacks.

timm's ResNetV2 (``stem``, ``stages.N.blocks.M``, ``normK``, ``downsample.conv``, ``norm``,
``head.fc``) and its legacy SENet (``layer0``, ``se_module``, ``last_linear``) are renamed.
"""

from repro.porting import SAME_NAMES, PortRules
from repro.registry import register_reference

TIMM_RESNET = PortRules(
    name="timm ResNet -> repro ResNet",
    source_type="timm.models.resnet.ResNet",
    target_type="repro.models.resnet.ResNet",
    renames=(
        (r"(.*)\.se\.fc1\.(weight|bias)", r"\1.se.conv_reduce.\2"),
        (r"(.*)\.se\.fc2\.(weight|bias)", r"\1.se.conv_expand.\2"),
        *SAME_NAMES,
    ),
)
TORCHVISION_RESNET = PortRules(
    name="torchvision ResNet -> repro ResNet",
    source_type="torchvision.models.resnet.ResNet",
    target_type="repro.models.resnet.ResNet",
    renames=SAME_NAMES,
)


def _resnetv2_stage(index: int) -> tuple[tuple[str, str], ...]:
    src, dst = rf"stages\.{index}\.blocks\.(\d+)", rf"layer{index + 1}.\1"
    return (
        (rf"{src}\.norm(\d)\.(weight|bias|running_mean|running_var|num_batches_tracked)", rf"{dst}.bn\2.\3"),
        (rf"{src}\.conv(\d)\.weight", rf"{dst}.conv\2.weight"),
        (rf"{src}\.downsample\.conv\.weight", rf"{dst}.downsample.weight"),
    )


TIMM_RESNETV2 = PortRules(
    name="timm ResNetV2 -> repro ResNet (pre-activation)",
    source_type="timm.models.resnetv2.ResNetV2",
    target_type="repro.models.resnet.ResNet",
    renames=(
        (r"stem\.conv\.weight", "conv1.weight"),
        *(rule for index in range(4) for rule in _resnetv2_stage(index)),
        (r"norm\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"final_bn.\1"),
        (r"head\.fc\.(weight|bias)", r"fc.\1"),
    ),
)
TIMM_LEGACY_SENET = PortRules(
    name="timm legacy SENet -> repro ResNet",
    source_type="timm.models.senet.SENet",
    target_type="repro.models.resnet.ResNet",
    renames=(
        (r"layer0\.(conv1|bn1)\.(.*)", r"\1.\2"),
        (r"(layer\d\.\d+)\.se_module\.fc1\.(weight|bias)", r"\1.se.conv_reduce.\2"),
        (r"(layer\d\.\d+)\.se_module\.fc2\.(weight|bias)", r"\1.se.conv_expand.\2"),
        (r"last_linear\.(weight|bias)", r"fc.\1"),
        (r"(layer[1-4]\..*)", r"\1"),
    ),
)

for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_reference(f"timm:{_name}", _name, TIMM_RESNET)
    register_reference(f"torchvision:{_name}", _name, TORCHVISION_RESNET)

# The variants of seed section 2.3 / 7. To keep the sweep cheap, ResNet-18/34 variants run at
# the native 224x224, 50-layer ones at 128x128 and deeper ones at 64x64 (stage 4 still 2x2): at
# that depth the cost is mostly randomizing and copying 45-127M parameters, not arithmetic.
def _reduced(depth: int) -> dict:
    size = 224 if depth < 50 else 128 if depth == 50 else 64
    return {} if size == 224 else dict(input_size=size, note=f"tested at {size}x{size} to keep the sweep cheap")


for _depth in (18, 34, 50, 101, 152):
    register_reference(f"timm:resnetv2_{_depth}", f"resnetv2_{_depth}", TIMM_RESNETV2, **_reduced(_depth))
    register_reference(f"timm:seresnet{_depth}", f"seresnet{_depth}", TIMM_RESNET, **_reduced(_depth))
    register_reference(
        f"timm:legacy_seresnet{_depth}", f"legacy_seresnet{_depth}", TIMM_LEGACY_SENET,
        deterministic_reference_kwargs={"drop_rate": 0.0}, deterministic_model_kwargs={"drop_rate": 0.0},
        **_reduced(_depth),
    )
register_reference("timm:resnext50_32x4d", "resnext50_32x4d", TIMM_RESNET, **_reduced(50))
register_reference("torchvision:resnext50_32x4d", "resnext50_32x4d", TORCHVISION_RESNET, **_reduced(50))
register_reference("torchvision:wide_resnet50_2", "wide_resnet50_2", TORCHVISION_RESNET, **_reduced(50))
for _name in ("resnext101_32x4d", "resnext101_32x8d", "resnext101_64x4d"):
    register_reference(f"timm:{_name}", _name, TIMM_RESNET, **_reduced(101))
for _name in ("resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"):
    register_reference(f"torchvision:{_name}", _name, TORCHVISION_RESNET, **_reduced(101))
