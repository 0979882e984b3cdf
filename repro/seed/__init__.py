"""The seed document: its claims as data (here), its code transcribed (``repro.seed.code``), its
text (``repro.seed.text``); and the published figures its numbers are checked against.

The seed is ``shared/seeds/000_2ef9e53f9445ed92.txt`` (a tutorial chapter, "Modern CNN
architectures: ResNet and EfficientNet"; a copy sits in this package). Nothing here is a
measurement: the report puts the suite's measurements beside these figures and says where they
disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedModelClaim:
    label: str  # how the seed names the model
    model: str  # the hand-written model it corresponds to
    torchvision: str | None  # torchvision builder, for top-1 from its weight metadata
    params_m: float | None = None  # seed section 5.2 table, millions
    top1: float | None = None  # seed section 5.2 table, percent


# Seed section 5.2 (trade_off_analysis), in the seed's order.
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
# Seed section 3.2, compare_models(): reference_acc, the five models it builds with torchvision.
SEED_TOP1_SECTION_3_2 = {
    "resnet18": 69.8,
    "resnet50": 76.1,
    "efficientnet_b0": 77.1,
    "efficientnet_b1": 79.1,
    "efficientnet_b2": 80.1,
}
SEED_LABELS = {c.model: c.label for c in SEED_MODELS}

# Seed section 2.2: "ResNet各版本架构对比" lists these five, printing parameters computed at run time.
SEED_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# Seed section 6.2, run_benchmark(): the four torchvision models it times.
SEED_BENCHMARK_MODELS = ("resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_small_100")

# Seed section 5.1, model_selection_guide(): scenario, recommended models, stated reason, the
# device the scenario names, if any (None: the seed names none), and the task it recommends them for
# where that is not image classification. Only the scenario or its reason can name a device:
# "移动端/边缘设备" is a mobile or edge device; server deployment's reason "可以使用GPU" is a GPU.
# "实时检测/分割" gives "需要快速推理" (fast inference) and names no device; it names a task: the models
# as backbones of detection or segmentation networks, which run at those networks' input resolutions.
MOBILE_DEVICE, GPU = "a mobile or edge device", "a GPU"
DETECTION_BACKBONE = "backbones of detection or segmentation networks, at their input resolutions"


@dataclass(frozen=True)
class SeedScenario:
    scenario: str
    recommended: tuple[str, ...]  # hand-written model names
    reason: str
    device: str | None  # MOBILE_DEVICE, GPU or None
    task: str | None = None  # DETECTION_BACKBONE, or None: image classification


SEED_SCENARIOS = (
    SeedScenario(
        "mobile / edge devices",
        ("mobilenetv3_small_100", "mobilenetv3_large_100"),
        "latency-sensitive, little compute",
        MOBILE_DEVICE,
    ),
    SeedScenario(
        "general image classification",
        ("efficientnet_b0", "efficientnet_b1"),
        "balance of accuracy and efficiency",
        None,
    ),
    SeedScenario(
        "high accuracy", ("efficientnet_b5", "efficientnet_b7", "resnet152"), "aiming for the highest accuracy", None
    ),
    SeedScenario(
        "real-time detection / segmentation",
        ("resnet18", "resnet34", "mobilenetv3_small_100", "mobilenetv3_large_100"),
        "fast inference",
        None,
        DETECTION_BACKBONE,
    ),
    SeedScenario("server deployment", ("efficientnet_b3", "efficientnet_b4", "resnet50"), "a GPU is available", GPU),
    SeedScenario(
        "compression / distillation",
        ("mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0"),
        "as teacher or student",
        None,
    ),
)
# Seed section 3.2, key insight 4: "对于移动端/边缘设备,EfficientNet是更好的选择" (a mobile-device claim).
SEED_INSIGHT_4_DEVICE = MOBILE_DEVICE


def seed_flops_column(params: int) -> float:
    """Seed section 3.2 prints a 'FLOPS' column as ``params * 2 / 1e9``: a formula of the parameter
    count, not a count of operations. Kept only to show how far it is from the counted value."""
    return params * 2 / 1e9


def seed_flops_printed(params: int) -> str:
    """The 'FLOPS' cell as seed 3.2 prints it: ``f"{params*2/1e9:>10.1f}G"``, stripped."""
    return f"{params * 2 / 1e9:>10.1f}G".strip()


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
# Seed section 7, pitfall 2: the input size of each EfficientNet ("不要随意更改输入尺寸").
SEED_PITFALL_2_SIZES = {"efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260, "efficientnet_b3": 300}

# Seed 4.2's worked example: D_K = 3, M = N = 64, D_F = 14.
SEED_SEPARABLE_SHAPE = (3, 64, 64, 14)


# ---- the papers' figures the seed's numbers are checked against ------------------------------------


@dataclass(frozen=True)
class PaperFigure:
    model: str  # hand-written model name
    source: str  # paper and table
    top1: float | None = None  # percent
    params_m: float | None = None  # millions, as printed (its digits are its precision)
    gmacs: float | None = None  # multiply-adds, billions (the papers call them FLOPs or MAdds)
    crop: str = "single-crop"  # how the top-1 was evaluated: "single-crop" or "10-crop"

    @property
    def kind(self) -> str:
        """The figure's source and evaluation protocol: two figures compare like for like only if equal."""
        return f"{self.source.split(';')[0].split(' (')[0]}, {self.crop}"


# EfficientNet (Tan & Le 2019), Table 2: top-1, parameters, FLOPS (multiply-adds). The table omits
# "ensemble and multi-crop models": single-crop. Its figures changed between versions (v1 and the 2019
# blog post: B7 84.4%, ResNet-50 76.3%); these are the last version's, arXiv:1905.11946v5 (2020).
_EFFICIENTNET_T2 = "EfficientNet paper Table 2 (arXiv:1905.11946v5)"
# MobileNetV3 (Howard et al. 2019), Table 3: top-1, MAdds, parameters.
_MOBILENETV3_T3 = "MobileNetV3 paper Table 3"
# ResNet (He et al. 2015): Table 1 FLOPs (multiply-adds) of the v1 networks; Table 3, 10-crop
# top-1 error (ResNet-34 option B); Table 2 for ResNet-18 (10-crop, option A). Top-1 = 100 - error.
PAPER_FIGURES: tuple[PaperFigure, ...] = (
    PaperFigure("efficientnet_b0", _EFFICIENTNET_T2, 77.1, 5.3, 0.39),
    PaperFigure("efficientnet_b1", _EFFICIENTNET_T2, 79.1, 7.8, 0.70),
    PaperFigure("efficientnet_b2", _EFFICIENTNET_T2, 80.1, 9.2, 1.0),
    PaperFigure("efficientnet_b3", _EFFICIENTNET_T2, 81.6, 12, 1.8),
    PaperFigure("efficientnet_b4", _EFFICIENTNET_T2, 82.9, 19, 4.2),
    PaperFigure("efficientnet_b5", _EFFICIENTNET_T2, 83.6, 30, 9.9),
    PaperFigure("efficientnet_b6", _EFFICIENTNET_T2, 84.0, 43, 19),
    PaperFigure("efficientnet_b7", _EFFICIENTNET_T2, 84.3, 66, 37),
    PaperFigure("mobilenetv3_large_100", _MOBILENETV3_T3, 75.2, 5.4, 0.219),
    PaperFigure("mobilenetv3_small_100", _MOBILENETV3_T3, 67.4, 2.5, 0.056),
    PaperFigure("resnet18", "ResNet paper Table 2 (option A); FLOPs Table 1", 72.12, None, 1.8, "10-crop"),
    PaperFigure("resnet34", "ResNet paper Table 3 (option B); FLOPs Table 1", 75.48, None, 3.6, "10-crop"),
    PaperFigure("resnet50", "ResNet paper Table 3; FLOPs Table 1", 77.15, None, 3.8, "10-crop"),
    PaperFigure("resnet101", "ResNet paper Table 3; FLOPs Table 1", 78.25, None, 7.6, "10-crop"),
    PaperFigure("resnet152", "ResNet paper Table 3; FLOPs Table 1", 78.57, None, 11.3, "10-crop"),
)
PAPER = {f.model: f for f in PAPER_FIGURES}
# The ResNets as EfficientNet paper Table 2 lists them, beside the EfficientNets (single-crop): the
# one source that puts EfficientNet and ResNet figures of one kind side by side.
EFFICIENTNET_TABLE_2_RESNETS: dict[str, PaperFigure] = {
    f.model: f
    for f in (
        PaperFigure("resnet50", _EFFICIENTNET_T2, 76.0, 26, 4.1),
        PaperFigure("resnet152", _EFFICIENTNET_T2, 77.8, 60, 11),
    )
}

# The papers' own statements of the training claims the seed repeats (seed 2.1, 2.3, 3.1), each with the
# table, figure or section it is read from.
# ResNet (He et al. 2015, arXiv:1512.03385), Table 2: ImageNet validation top-1 error (%, 10-crop) of the plain
# and residual nets of 18 and 34 layers (option A shortcuts); Figure 4 draws their training error (thin curves)
# and validation error through training; section 4.1 reads them: the 34-layer plain net has higher training
# error than the 18-layer one throughout training (degradation), the 34-layer ResNet considerably lower training
# error than both; at 18 layers plain and residual nets are comparably accurate, the ResNet converging faster.
RESNET_TABLE_2_ERROR = {"plain18": 27.94, "plain34": 28.54, "resnet18": 27.88, "resnet34": 25.03}
RESNET_TABLE_2 = "ResNet paper (He et al. 2015) Table 2 (ImageNet validation top-1 error, 10-crop)"
RESNET_FIGURE_4 = "Figure 4 (ImageNet training error, thin curves) and section 4.1"
# EfficientNet (Tan & Le 2019), section 3.2, Observation 1: "Scaling up any dimension of network width, depth,
# or resolution improves accuracy, but the accuracy gain diminishes for bigger models"; Figure 3 (middle) scales
# B0's depth alone, d = 1 to 8, and the text beside it reads the diminishing return of depth off it (and names
# ResNet-1000, about as accurate as ResNet-101).
EFFICIENTNET_DEPTH_SOURCE = (
    "EfficientNet paper (Tan & Le 2019), section 3.2, Observation 1 ('the accuracy gain diminishes for bigger "
    "models') and Figure 3 (middle): B0 scaled in depth alone, d = 1 to 8, top-1 rising ever more slowly"
)
# EfficientNet paper, section 4: B0 comes from a multi-objective neural architecture search (MnasNet's search
# space, optimizing accuracy and FLOPS); step 1 of its compound scaling fixes phi = 1 and grid-searches alpha, beta,
# gamma under alpha * beta**2 * gamma**2 ~ 2, finding "the best values for EfficientNet-B0"; step 2 keeps them for
# B1-B7.
EFFICIENTNET_B0_SEARCH_SOURCE = (
    "EfficientNet paper (Tan & Le 2019), section 4: B0 is the result of a multi-objective neural architecture "
    "search (MnasNet's search space) optimizing accuracy and FLOPS"
)
EFFICIENTNET_STEP_1 = (1.2, 1.1, 1.15)  # alpha, beta, gamma
EFFICIENTNET_STEP_1_SOURCE = (
    "EfficientNet paper (Tan & Le 2019), section 4, step 1: phi fixed at 1, a small grid search gives 'the best "
    "values for EfficientNet-B0' under α·β²·γ² ≈ 2"
)
# Pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027):
# Table 3, CIFAR-10 test error of the original and the pre-activation units; Figure 1, training curves of
# ResNet-1001 on CIFAR-10 with each (the paper's "ease of optimization").
PREACT_TABLE_3_CIFAR10_ERROR = {"ResNet-1001": (7.61, 4.92)}  # (original unit, pre-activation unit)

# ResNet-50 v1.5 (stride on the 3x3) against v1 (stride on the first 1x1), as NVIDIA's model card
# "ResNet v1.5 for PyTorch" (NGC catalog) states it: "slightly more accurate (~0.5% top1) than v1,
# but comes with a small performance drawback (~5% imgs/sec)".
RESNET_V15_SOURCE = "NVIDIA's ResNet v1.5 model card (NGC): about +0.5% top-1 over v1, about 5% fewer images/s"
# FixRes (Touvron, Vedaldi, Douze, Jegou 2019, "Fixing the train-test resolution discrepancy", NeurIPS), section
# 3 and its Table 1: a network trained at one resolution is, with nothing else changed, most accurate tested at a
# somewhat higher one (a ResNet-50 trained at 224 px, tested above 224 px), because random-resized-crop
# augmentation makes objects look larger in training than a center crop does in testing.
FIXRES_SOURCE = (
    "FixRes paper (Touvron et al. 2019, 'Fixing the train-test resolution discrepancy'), section 3 and Table 1: "
    "a ResNet-50 trained at 224 px is more accurate tested at a somewhat higher resolution than at 224 px"
)
# DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks", CVPR), section 4.4 and Figure 3:
# DenseNet-BC and ResNets trained on ImageNet with one recipe (fb.resnet.torch's), validation error against
# parameters; the text reads it off the figure.
DENSENET_PARAMETERS_SOURCE = (
    "DenseNet paper (Huang et al. 2017), section 4.4 and Figure 3, DenseNets and ResNets trained with one recipe: "
    "'a DenseNet-201 with 20M parameters model yields similar validation error as a 101-layer ResNet with more "
    "than 40M parameters'"
)


def rounds_to(value: float, claim: float) -> bool:
    """The rounding rule: a claim printed with k decimals holds if ``value`` rounds to it at k decimals
    (79 holds for 78.64 and 79.1; 79.1 does not hold for 78.64)."""
    digits = len(repr(float(claim)).partition(".")[2].rstrip("0")) if float(claim) != int(claim) else 0
    return abs(value - claim) <= 0.5 * 10**-digits + 1e-9
