"""Inside a tox environment, the torch version is the one the environment's name promises."""

import os

import pytest
import torch


@pytest.mark.skipif(not os.environ.get("EXPECTED_TORCH"), reason="not running under tox")
def test_torch_version_matches_environment():
    expected = os.environ["EXPECTED_TORCH"]
    assert torch.__version__.split("+")[0].startswith(expected + "."), (torch.__version__, expected)
