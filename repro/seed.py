"""The seed document's claims, as data, with the section each comes from.

The seed is ``shared/seeds/000_2ef9e53f9445ed92.txt`` (a tutorial chapter, "Modern CNN
architectures: ResNet and EfficientNet"). Nothing here is a measurement: the report puts the
suite's measurements beside these figures and says where they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedModelClaim:
    label: str  # how the seed names the model
    model: str  # the hand-written model it corresponds to
    torchvision: str | None  # torchvision builder, for top-1 from its weight metadata
    params_m: float | None = None  # seed section 5.2 table, millions
    top1: float | None = None  # seed section 5.2 table (and 3.2 where it gives one), percent
    top1_section: str = "5.2"


# Seed section 5.2 (trade_off_analysis) and 3.2 (compare_models: reference_acc).
# Section 3.2's figures are ResNet-18 69.8, ResNet-50 76.1, EfficientNet-B0/B1/B2 77.1/79.1/80.1.
SEED_MODELS: tuple[SeedModelClaim, ...] = (
    SeedModelClaim("MobileNetV3-S", "mobilenetv3_small_100", "mobilenet_v3_small", 2.5, 56),
    SeedModelClaim("MobileNetV3-L", "mobilenetv3_large_100", "mobilenet_v3_large", 5.4, 56),
    SeedModelClaim("EfficientNet-B0", "efficientnet_b0", "efficientnet_b0", 5.3, 77),
    SeedModelClaim("EfficientNet-B1", "efficientnet_b1", "efficientnet_b1", 7.8, 79),
    SeedModelClaim("EfficientNet-B2", "efficientnet_b2", "efficientnet_b2", 9.2, 80),
    SeedModelClaim("EfficientNet-B3", "efficientnet_b3", "efficientnet_b3", 12.2, 82),
    SeedModelClaim("ResNet-18", "resnet18", "resnet18", 11.7, 70),
    SeedModelClaim("ResNet-34", "resnet34", "resnet34", 21.8, 73),
    SeedModelClaim("ResNet-50", "resnet50", "resnet50", 25.6, 76),
    SeedModelClaim("ResNet-101", "resnet101", "resnet101", 44.5, 78),
)
SEED_TOP1_SECTION_3_2 = {"resnet18": 69.8, "resnet50": 76.1, "efficientnet_b0": 77.1, "efficientnet_b1": 79.1, "efficientnet_b2": 80.1}

# Seed section 2.2: "ResNet各版本架构对比" lists these five, printing parameters computed at run time.
SEED_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def seed_flops_column(params: int) -> float:
    """Seed section 3.2 prints a 'FLOPS' column as ``params * 2 / 1e9``: a formula of the parameter
    count, not a count of operations. Kept only to show how far it is from the counted value."""
    return params * 2 / 1e9


def torchvision_top1(builder: str, weights: str = "IMAGENET1K_V1") -> tuple[float, str] | None:
    """ImageNet-1K top-1 from torchvision's own weight metadata (no download), with its source."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(builder)
    if weights not in enum.__members__:
        return None
    meta = enum[weights].meta
    return float(meta["_metrics"]["ImageNet-1K"]["acc@1"]), f"torchvision {enum.__name__}.{weights} metadata"


# Seed section 3.1, calculate_efficientnet_params(): the printed EfficientNet-B0 table
# (stage, operator, channels, layers, resolution), and its 'B0' config dict.
SEED_B0_TABLE: tuple[tuple[int, str, int, int, int], ...] = (
    (1, "Conv3x3 + BN + Swish", 32, 1, 224),
    (2, "MBConv1, 3x3", 16, 1, 224),
    (3, "MBConv6, 3x3", 24, 2, 224),
    (4, "MBConv6, 5x5", 40, 2, 224),
    (5, "MBConv6, 3x3", 80, 3, 224),
    (6, "MBConv6, 5x5", 112, 3, 224),
    (7, "MBConv6, 5x5", 192, 4, 224),
    (8, "MBConv6, 3x3", 320, 1, 224),
    (9, "Conv1x1 + BN + Swish + GlobalPool", 1280, 1, 224),
)
SEED_EFFICIENTNET_CONFIG = {
    "width_coef": (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "depth_coef": (1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0),
    "resolution": (224, 240, 260, 300, 380, 456, 528),
    "depth_div": 8,
}
# Seed section 3.1: "φ=1时,B0的系数: α=1.2, β=1.1, γ=1.15" under "α×β²×γ²≈2".
SEED_ALPHA_BETA_GAMMA = (1.2, 1.1, 1.15)

