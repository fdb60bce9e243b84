#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU (dvc is not needed): the GPU tests, then the
# speed benchmark on CUDA with torch.compile timed too. Needs torch, torchvision, pyyaml,
# pandas, matplotlib, tqdm and pytest, and the MNIST files in $MNIST_MIRROR or data/raw/.
# Usage: bash benchmarks/gpu_check.sh [report path]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
report=${1:-/tmp/bench-gpu.md}
nvidia-smi --query-gpu=name,memory.total --format=csv
python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_model.py
python benchmarks/train_speed.py --device cuda --compile --steps 100 --rounds 2 --output "$report"
