"""Porting rules and reference tables, one file per family. Importing one registers its references."""

from repro.ports import resnet  # noqa: F401
from repro.ports import efficientnet  # noqa: F401
from repro.ports import densenet, mobilenet  # noqa: F401
