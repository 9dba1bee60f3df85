#!/usr/bin/env bash
# GPU check for the device machine: one prepared script, under 8 minutes on one H100.
# MirroredStrategy over one GPU split into 2 logical GPUs, mixed precision, images/s of
# resnet50 at 224 px on streamed data vs synthetic in-memory tensors, then the trainer CLI.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (writes OUT_DIR/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-check}}"
mkdir -p "$out"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[gpu]'
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
timeout -k 10 420 .venv/bin/python scripts/gpu_check.py --out "$out/run" | tee "$out/gpu_check.json"
