"""Porting rules and reference table for DenseNet-BC.

timm's DenseNet is a copy of torchvision's (its ``BatchNormAct2d`` folds each ReLU into the
BatchNorm module but keeps the BatchNorm's tensor names), and the hand-written DenseNet uses the
same names: the mapping is the identity, and the porting layer still checks every key and shape.
"""

from repro.porting import SAME_NAMES, PortRules
from repro.registry import register_reference

TIMM_DENSENET = PortRules(
    name="timm DenseNet -> repro DenseNet",
    source_type="timm.models.densenet.DenseNet",
    target_type="repro.models.densenet.DenseNet",
    renames=SAME_NAMES,
)
TORCHVISION_DENSENET = PortRules(
    name="torchvision DenseNet -> repro DenseNet",
    source_type="torchvision.models.densenet.DenseNet",
    target_type="repro.models.densenet.DenseNet",
    renames=SAME_NAMES,
)

# DenseNet-161/169/201 are among the heaviest networks of the sweep at 224x224 (train mode, batch 2,
# with gradients); they are compared at 128x128, which still leaves a 4x4 map before the final pool.
# DenseNet-121 is compared at its native 224x224.
_REDUCED = {"densenet161": 128, "densenet169": 128, "densenet201": 128}

for _name in ("densenet121", "densenet161", "densenet169", "densenet201"):
    _fields = {}
    if _name in _REDUCED:
        _fields = dict(input_size=_REDUCED[_name],
                       note=f"compared at {_REDUCED[_name]}x{_REDUCED[_name]} to keep the sweep fast")
    register_reference(f"timm:{_name}", _name, TIMM_DENSENET, **_fields)
    register_reference(f"torchvision:{_name}", _name, TORCHVISION_DENSENET, **_fields)
