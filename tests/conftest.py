import os

# No model hub is reachable from tests: make hub lookups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto already runs one worker per core: more threads per worker only contend.
    torch.set_num_threads(1)


def pytest_addoption(parser):
    group = parser.getgroup("repro benchmarks (pytest --benchmark-only)")
    group.addoption("--bench-models", default="resnet18,resnet50,efficientnet_b0,mobilenetv3_large_100",
                    help="comma-separated hand-written model names or fnmatch patterns")
    group.addoption("--bench-batch", default="1", help="comma-separated batch sizes (default 1)")
    group.addoption("--bench-resolution", type=int, default=None,
                    help="input resolution (default: each model's native one, capped by --bench-max-resolution)")
    group.addoption("--bench-max-resolution", type=int, default=None,
                    help="cap on the native resolution (default: 224 on CPU, none on CUDA); "
                         "the group name states the size used")
    group.addoption("--bench-device", default="cpu", help="comma-separated: cpu, cuda (cuda cases skip without a GPU)")
    group.addoption("--bench-dtype", default="fp32", help="comma-separated: fp32, bf16 (autocast)")
    group.addoption("--bench-format", default="nchw", help="comma-separated: nchw, channels_last")
    group.addoption("--bench-modes", default="eager,fused,frozen,channels_last",
                    help="comma-separated: eager, fused (ours, BN folded, NHWC inside), frozen (ours, folded + "
                         "TorchScript-frozen, CPU), channels_last (ours and references in NHWC), "
                         "compile (all but frozen)")


def pytest_collection_modifyitems(config, items):
    """Plain ``pytest`` skips benchmarks; ``--benchmark-only`` runs only them; ``--benchmark-disable``
    runs their code once, untimed (how CI keeps them from rotting)."""
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_disable", False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with pytest --benchmark-only")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    """Versions, device and thread count travel with every --benchmark-json file."""
    from repro.environment import environment

    machine_info.update(environment())


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
