#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU (dvc is not needed) that prints every GPU number
# BENCHMARKS.md asks for: the GPU tests, then at 227x227 the project loop's speed with one epoch's
# time and MFU against the GPU's own best kernel, with torch.compile on and off and deterministic
# kernels on and off, then where a step's time goes. Needs torch, torchvision, pyyaml, tqdm and
# pytest, and the four MNIST files in $MNIST_MIRROR (a folder) or data/raw/.
# Usage: bash benchmarks/gpu_check.sh [report folder]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
out=${1:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv
python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_lrn.py tests/test_model.py
python benchmarks/train_speed.py --device cuda --sizes 227 --loops project,compile,deterministic \
    --steps 100 --rounds 2 --output "$out/gpu-speed.md"
python benchmarks/profile_step.py --device cuda --sizes 227 --steps 20 --output "$out/gpu-profile.md"
