import os

# No model hub is reachable from tests: make hub lookups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto already runs one worker per core: more threads per worker only contend.
    torch.set_num_threads(1)


def pytest_addoption(parser):
    group = parser.getgroup("repro benchmarks")
    group.addoption("--bench-models", default="resnet18,resnet50", help="comma-separated hand-written model names or patterns")
    group.addoption("--bench-batch", default="1", help="comma-separated batch sizes")
    group.addoption("--bench-resolution", type=int, default=None, help="input resolution (default: each model's native one)")


def pytest_collection_modifyitems(config, items):
    """Plain ``pytest`` skips benchmarks; ``--benchmark-only`` runs only them; ``--benchmark-disable``
    runs their code once, untimed (how CI keeps them from rotting)."""
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_disable", False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with pytest --benchmark-only")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
