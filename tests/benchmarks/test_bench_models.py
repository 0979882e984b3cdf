"""Forward latency of each hand-written model beside its timm and torchvision references.

Grouped per model and batch, so each pytest-benchmark table compares implementations of one
model measured in the same run. ``pytest --benchmark-only`` runs these; plain ``pytest`` skips them.
"""

import platform

import pytest
import torch

import reference
import repro
from repro.environment import environment
from repro.registry import MODELS


@pytest.fixture(scope="session", autouse=True)
def _machine_info(request):
    plugin = request.config.pluginmanager.getplugin("benchmark_session")
    if plugin is not None and getattr(plugin, "machine_info", None) is not None:
        plugin.machine_info.update(environment())
    yield


def _build(model_name: str, impl: str) -> torch.nn.Module:
    return repro.create_model(model_name) if impl == "ours" else reference.create(impl)


def test_forward_latency_cpu_fp32(benchmark, bench_case, request):
    model_name, impl, batch = bench_case
    resolution = request.config.getoption("--bench-resolution") or MODELS[model_name].input_size
    model = _build(model_name, impl).eval()
    x = torch.randn(batch, 3, resolution, resolution)
    benchmark.group = f"{model_name} b{batch} {resolution}px cpu fp32"
    benchmark.extra_info.update(model=model_name, implementation=impl, batch=batch, resolution=resolution,
                                device="cpu", dtype="float32", machine=platform.machine())
    with torch.inference_mode():
        model(x)  # warm-up
        out = benchmark(model, x)
    assert out.shape == (batch, 1000)
