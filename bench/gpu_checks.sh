#!/usr/bin/env bash
# Every GPU measurement in one run, for a session lent a GPU (`run` on the device machine):
#   bash bench/gpu_checks.sh            # writes its tables under $OUT (default runs/bench)
# 1. training throughput on CUDA (bf16 autocast) of the `small` preset against plain PyTorch;
# 2. bench/real_scale.py on a ~1.1B Llama-shaped random checkpoint in bfloat16 on CUDA: time,
#    peak RSS and peak GPU memory of every analysis (the checkpoint is built there, ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv
"$PY" bench/train_throughput.py --device cuda --preset small --batch-size 32 --steps 20 \
    --rounds 3 | tee "$OUT/train_throughput_cuda.txt"
"$PY" bench/real_scale.py --models llama1b --device cuda --model-dtype bfloat16 --threads 8 \
    --workdir "${WORKDIR:-/tmp/real_scale}" --json "$OUT/real_scale_cuda.json" \
    | tee "$OUT/real_scale_cuda.txt" || true  # the table is the result, met or not
