#!/usr/bin/env bash
# The GPU measurements of issue 7 as one prepared run, for a lent GPU machine whose python3 already
# has torch, torchvision, timm, pandas, tabulate, tqdm and matplotlib (no install, no network):
#   bash scripts/gpu_report.sh [OUT_DIR]          (default reports/gpu; not yet run on a GPU: no GPU was lent to this project so far)
# Smoke-test the same steps on CPU with tiny settings (57 s here): SMOKE=1 bash scripts/gpu_report.sh /tmp/g
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-reports/gpu}
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
    DEV=cpu; BIG=2; SMALL=1; RES=(--resolution 64); ROUNDS=(--rounds 2 --min-run-time 0.01); COMPILE=
else
    DEV=cuda; BIG=256; SMALL=1,8; RES=(); ROUNDS=(--rounds 7 --min-run-time 0.5); COMPILE=,compile
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/nvidia-smi.csv"
fi
"$PY" -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"

# 1. CUDA correctness first: equivalence (eval, train, grads, running stats), fusion and benchmark
#    cases on the GPU (tests/test_cuda.py; skipped on a machine without one).
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -rA 2>&1 | tee "$OUT_DIR/test_cuda.log"

# 2. Throughput goal: bf16 autocast, channels_last, batch 256, ResNet-50 and EfficientNet-B0
#    (ours, ours fused, timm, torchvision; each also under torch.compile), interleaved.
"$PY" -m repro.bench --device "$DEV" --dtype bf16 --format channels_last --batch "$BIG" "${RES[@]}" "${ROUNDS[@]}" \
    --models resnet50 efficientnet_b0 --modes "eager,fused$COMPILE" --json "$OUT_DIR/gpu_bf16_channels_last.json"

# 3. Latency of the seed's four models, fp32, batch 1 and 8 (seed 6.2, GPU column).
"$PY" -m repro.bench --device "$DEV" --batch "$SMALL" "${RES[@]}" "${ROUNDS[@]}" --modes eager,fused \
    --models resnet18 resnet50 efficientnet_b0 mobilenetv3_small_100 --json "$OUT_DIR/gpu_fp32.json"

# 4. The latency page from those measurements (one table per machine/setting, speed goals checked).
"$PY" -m repro.report --pages latency \
    --from-json "$OUT_DIR/gpu_bf16_channels_last.json" "$OUT_DIR/gpu_fp32.json" --out "$OUT_DIR/report"
