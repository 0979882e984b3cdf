"""Helpers for users' own test suites.

    from repro.testing import assert_equivalent

    def test_my_resnet_is_timms():
        assert_equivalent(MyResNet50(), "timm:resnet50", input_size=(2, 3, 64, 64))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from repro.verify import VerifyReport, verify


def assert_equivalent(candidate: nn.Module | str | Path, reference: str | nn.Module, *, bit_exact: bool = False,
                      **verify_kwargs: Any) -> VerifyReport:
    """Fail (``AssertionError`` with the full report as its message) unless ``candidate`` (a module,
    or an ONNX file) verifies as equivalent to ``reference`` (bit-identical too with ``bit_exact=True``).
    Keyword arguments go to ``repro.verify``; returns the report."""
    report = verify(candidate, reference, **verify_kwargs)
    if not report.equivalent:
        raise AssertionError(f"{report.candidate} is not equivalent to {report.reference}\n{report}")
    if bit_exact and not report.bit_exact:
        raise AssertionError(f"{report.candidate} is equivalent to {report.reference} but not bit-identical\n{report}")
    return report
