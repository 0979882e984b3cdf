"""Porting rules and reference tables, one file per family. Importing one registers its references."""

from repro.ports import resnet  # noqa: F401
