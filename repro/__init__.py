"""Hand-written classic CNNs, proven identical to the timm and torchvision models they reproduce."""

from reference.weights import WeightsError
from repro import models, ports  # noqa: F401  (registers every family)
from repro.fuse import FuseError, fuse
from repro.port_rules import PortRules
from repro.porting import PortError, PortReport, from_reference, port_weights
from repro.registry import MODELS, REFERENCES, UnknownNameError, create_model, list_models, list_references
# ``repro.verify`` is the function: binding it here shadows the package's attribute on ``repro``, while the
# package itself stays importable by its name (``python -m repro.verify``, ``from repro.verify import _run``;
# not ``import repro.verify._run as m``, which looks the package up as an attribute of ``repro``).
from repro.verify import PairingError, VerifyError, VerifyReport, verify

__all__ = [
    "MODELS",
    "REFERENCES",
    "FuseError",
    "PortError",
    "PortReport",
    "PortRules",
    "UnknownNameError",
    "WeightsError",
    "create_model",
    "from_reference",
    "fuse",
    "list_models",
    "list_references",
    "port_weights",
    "PairingError",
    "VerifyError",
    "VerifyReport",
    "verify",
]
