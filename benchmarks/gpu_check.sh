#!/usr/bin/env bash
# The GPU measurements of issue 18 as one prepared run, for a machine with an NVIDIA GPU:
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]        (default: $OUT, else ./gpu-results)
# 1. throughput of `scclip segment` (float16, batched crops) beside the bare forward pass, on
#    64 generated 683x512 photos with 150 classes, plus the size and vocabulary tables;
# 2. float16 against float32 on the same GPU: forward time and label agreement.
# Needs the project installed (README) and CUDA visible to PyTorch; random weights, no download.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${1:-${OUT:-gpu-results}}"
mkdir -p "$results"
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_check: CUDA is not available to this PyTorch; nothing measured")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
python benchmarks/throughput.py --device cuda --precision float16 --images 64 --repeat 5 \
    --json "$results/throughput.json" | tee "$results/throughput.md"
python benchmarks/bf16.py --device cuda --precision float16 --rounds 5 \
    --json "$results/float16.json" | tee "$results/float16.md"
