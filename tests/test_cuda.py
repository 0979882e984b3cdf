"""The CUDA paths: equivalence, fusion and benchmark cases on a GPU. Skipped where there is none
(CI); `bash scripts/gpu_report.sh` runs them first on a lent GPU machine."""

import pytest
import torch

import repro
from repro.bench import BenchCase, prepare
from repro.equivalence import Diff, check_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")

SPECS = ["timm:resnet50", "torchvision:resnet50", "timm:seresnet50", "timm:efficientnet_b0", "timm:tf_efficientnet_b0",
         "timm:mobilenetv3_small_100", "timm:densenet121"]


@pytest.mark.parametrize("spec", SPECS)
def test_equivalence_on_gpu(spec):
    """Same comparison as on the CPU (eval, train, every gradient and running statistic), on CUDA.
    The same kernels run for both models, so bit-identical results are expected but only
    equivalence to 1e-4 is required (cuDNN may pick algorithms per call)."""
    torch.backends.cudnn.benchmark = False
    result = check_reference(spec, device="cuda")
    result.assert_equivalent(rtol=1e-4)
    if result.bit_exact:
        print(spec, "bit-identical on CUDA")
    else:
        print(spec, f"max rel {Diff.worst(result.all_diffs())[1].max_rel:.3g}")


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0", "mobilenetv3_small_100"])
def test_fused_on_gpu(name):
    model = repro.create_model(name).eval().cuda()
    fused = repro.fuse(model)
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        assert Diff.of(fused(x), model(x)).ok(1e-4)


@pytest.mark.parametrize("impl", ["ours", "ours+fused", "timm:resnet50", "timm:resnet50+channels_last"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_benchmark_cases_run_on_gpu(impl, dtype):
    out = prepare(BenchCase("resnet50", impl, batch=8, resolution=224, device="cuda", dtype=dtype))()
    assert out.shape == (8, 1000) and out.is_cuda and torch.isfinite(out).all()
