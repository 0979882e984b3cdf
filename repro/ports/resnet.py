"""Porting rules and reference table for the ResNet family.

timm's and torchvision's ResNets name their tensors as torchvision does, and so does the
hand-written ResNet (it follows the seed's code, which follows torchvision): the mapping is
the identity, and the porting layer still checks every key and shape on both sides.
"""

from repro.porting import SAME_NAMES, PortRules
from repro.registry import register_reference

TIMM_RESNET = PortRules(
    name="timm ResNet -> repro ResNet",
    source_type="timm.models.resnet.ResNet",
    target_type="repro.models.resnet.ResNet",
    renames=SAME_NAMES,
)
TORCHVISION_RESNET = PortRules(
    name="torchvision ResNet -> repro ResNet",
    source_type="torchvision.models.resnet.ResNet",
    target_type="repro.models.resnet.ResNet",
    renames=SAME_NAMES,
)

for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_reference(f"timm:{_name}", _name, TIMM_RESNET)
    register_reference(f"torchvision:{_name}", _name, TORCHVISION_RESNET)
