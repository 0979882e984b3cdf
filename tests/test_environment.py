"""Inside a tox environment, the torch version is the one the environment's name promises."""

import os

import pytest
import torch


@pytest.mark.skipif(not os.environ.get("EXPECTED_TORCH"), reason="not running under tox")
def test_torch_version_matches_environment():
    expected = os.environ["EXPECTED_TORCH"]
    assert torch.__version__.split("+")[0].startswith(expected + "."), (torch.__version__, expected)


def test_deterministic_kernels_sets_and_restores():
    """The train-mode step of every equivalence check runs on one CPU thread with deterministic
    cuDNN (multi-threaded CPU conv backward is not run-to-run deterministic), so a serial run and a
    pytest-xdist run (one thread per worker) reach the same bit-identity verdicts."""
    from repro.environment import deterministic_kernels

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with deterministic_kernels():
            assert torch.get_num_threads() == 1
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.get_num_threads() == 2 and not torch.backends.cudnn.deterministic
    finally:
        torch.set_num_threads(before)


def test_in_processes_returns_every_item_and_raises_what_fn_raises():
    from repro.environment import in_processes

    assert dict(in_processes(abs, [-1, -2, 3], workers=1)) == {-1: 1, -2: 2, 3: 3}
    assert dict(in_processes(abs, [-1, -2, 3], workers=2)) == {-1: 1, -2: 2, 3: 3}
    with pytest.raises(ValueError, match="invalid literal"):
        list(in_processes(int, ["1", "x"], workers=2))
