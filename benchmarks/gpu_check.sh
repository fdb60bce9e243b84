#!/usr/bin/env bash
# The one command that proves a machine with an NVIDIA GPU end to end, in a few minutes, and writes one
# Markdown report: the GPU tests (pytest -m gpu); a tiny `dvc exp run` on CUDA on real MNIST; the same with
# train.epochs raised (it resumes); train.nproc=2 where there are two GPUs; train.compile; the CUDA-trained
# model's ONNX export and `alexnet-mnist predict` with no GPU visible; the speed table's GPU rows
# (benchmarks/train_speed.py at 227x227, MFU against the GPU's measured peak). Exit status 1 if any failed.
#
#   MNIST_MIRROR=/path/to/mnist bash benchmarks/gpu_check.sh [report.md]   # default report: gpu-check.md
#   bash benchmarks/gpu_check.sh --fetch-wheels [3.12]    # where pip reaches the index: wheels for an offline machine
#
# MNIST: the four files in $MNIST_MIRROR (a folder), or data/raw/. Python: $PYTHON if set, else the project's .venv
# (make setup), else python3 when its torch sees a GPU, else `make setup` makes the .venv. Packages that environment
# lacks are installed at their pins in requirements.txt: from the wheels in $WHEELS (default .whl/, made by
# --fetch-wheels for that Python version) without the index where that folder exists, else from the index.
# GPU_CHECK_ROUNDS: fresh processes per loop of the speed table (default 1).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
wheels=${WHEELS:-$root/.whl}
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1

pins() {  # the pinned requirement of each distribution named
    for name in "$@"; do grep -i "^$name==" requirements.txt || { echo "no pin for $name in requirements.txt" >&2; exit 1; }; done
}

if [ "${1:-}" = --fetch-wheels ]; then
    version=${2:-3.12}
    py=${PYTHON:-python3}
    [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
    mkdir -p "$wheels"
    # dvc's hydra-core needs antlr4-python3-runtime 4.9, published as source only: its wheel (pure Python) is built here
    "$py" -m pip wheel -q --no-deps -w "$wheels" "antlr4-python3-runtime==4.9.*" &&
        "$py" -m pip download -q --only-binary=:all: --find-links "$wheels" -d "$wheels" \
            --python-version "$version" --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
            $(pins dvc) || exit 1
    echo "wrote $(ls "$wheels" | wc -l) wheels ($(du -sh "$wheels" | cut -f1)) to $wheels: dvc and what it needs, for Python $version"
    exit 0
fi

report=$(realpath -m "${1:-gpu-check.md}")
fail() { echo "error: $*" >&2; exit 1; }

# ---- the Python environment
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
elif python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    py=python3
else
    make setup || fail "make setup failed: see above"
    py=.venv/bin/python
fi
py=$("$py" -c 'import sys; print(sys.executable)') || fail "no Python at $py"
bin=$(dirname "$py")
# module -> distribution, for what the pipeline, the tests and predict import
missing=$("$py" - <<'EOF'
import importlib.util
modules = {"torch": "torch", "yaml": "PyYAML", "tqdm": "tqdm", "pytest": "pytest", "matplotlib": "matplotlib",
           "pandas": "pandas", "PIL": "pillow", "onnx": "onnx", "onnxscript": "onnxscript",
           "onnxruntime": "onnxruntime", "dvc": "dvc"}
print(" ".join(dist for module, dist in modules.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "installing into $py: $missing"
    source=(--retries 1 --timeout 30)
    [ -d "$wheels" ] && source=(--no-index --find-links "$wheels")
    "$py" -m pip install -q "${source[@]}" $(pins $missing) || fail "could not install $missing into $py"
fi
if [ ! -x "$bin/alexnet-mnist" ]; then  # the project itself, for its console script; needs nothing fetched
    "$py" -m pip install -q --no-deps --no-build-isolation --no-index -e . || fail "could not install the project"
fi
"$py" - <<'EOF' || exit 1
import sys
from alexnet_mnist.device import resolve_device
from alexnet_mnist.errors import PipelineError
try:
    resolve_device("cuda", "train.device")  # says why where a driver is loaded but CUDA is unusable
except PipelineError as e:
    sys.exit(f"error: {e}")
EOF
mirror=${MNIST_MIRROR:-}
[ -z "$mirror" ] && [ -d data/raw ] && mirror=$root/data/raw
[ -n "$mirror" ] && [ -d "$mirror" ] || fail "no MNIST files: set MNIST_MIRROR to a folder holding the four MNIST files"
export MNIST_MIRROR=$(realpath "$mirror")

# ---- a scratch DVC project of this tree, so that the experiments leave this checkout as it is
work=$(mktemp -d /tmp/gpu-check.XXXXXX)
logs=$work/logs
mkdir -p "$logs" "$work/bin" "$work/project"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$py" >"$work/bin/python"  # the stages' `python` (a link would lose a venv)
chmod +x "$work/bin/python"
export PATH=$work/bin:$bin:$PATH
cp -r dvc.yaml params.yaml mnist.sha256 stages src .dvc .gitignore .dvcignore "$work/project/"
rm -rf "$work/project/.dvc/cache" "$work/project/.dvc/tmp"
(cd "$work/project" && git init -q && git add -A &&
    git -c user.name=gpu-check -c user.email=gpu-check@localhost commit -qm "gpu check") || fail "git init failed"
export PYTHONPATH=$work/project/src  # the stages import the code dvc hashes

gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo
    echo "Command: \`bash benchmarks/gpu_check.sh\`; MNIST from $MNIST_MIRROR."
    echo
    echo '```text'
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1
    "$py" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, kernels for {' '.join(torch.cuda.get_arch_list())}")
EOF
    grep -qx "$("$py" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])')" requirements.txt ||
        echo "note: not the pinned $(pins torch): the numbers below are of this torch"
    echo '```'
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---:|"
} >"$report"

failed=0
step() {  # step NAME SECONDS COMMAND...: runs COMMAND (stdin: step's) in the scratch project, logs it, adds a row
    local name=$1 limit=$2 began=$SECONDS status=pass
    shift 2
    echo "== $name" >&2
    (cd "$work/project" && timeout "$limit" "$@") >"$logs/$name.log" 2>&1 || { status="FAIL (exit $?)"; failed=1; }
    echo "| $name | $status | $((SECONDS - began)) |" >>"$report"
    [ "$status" = pass ] || tail -n 30 "$logs/$name.log" >&2
}
dvc=("$py" -m dvc)
tiny=(-S data.train_size=10000 -S data.val_size=1000 -S data.test_size=2000 -S model.image_size=67
    -S train.device=cuda -S evaluate.device=cuda -S train.deterministic=true)

step "GPU tests (pytest -m gpu)" 420 "$py" -m pytest -q -p no:cacheprovider -m gpu "$root/tests"
step "dvc exp run on CUDA, 1 epoch" 240 "${dvc[@]}" exp run -n cuda-1 "${tiny[@]}" -S train.epochs=1
step "dvc exp run, train.epochs=2: resumes" 240 bash -c \
    'out=$("$@" 2>&1); status=$?; echo "$out"; [ $status = 0 ] && grep -q "resuming from models/checkpoint.pt: 1 of 2" <<<"$out"' \
    _ "${dvc[@]}" exp run -n cuda-2 "${tiny[@]}" -S train.epochs=2
step "export and predict with no GPU visible" 180 env CUDA_VISIBLE_DEVICES= DIGITS="$work/digits" "$py" - <<'EOF'
# The CUDA-trained model of the last experiment: its ONNX export's check, and `alexnet-mnist predict` on 20
# MNIST test digits with the .pt and the .onnx file, on the CPU
import json, os, shutil, subprocess
from pathlib import Path
from PIL import Image
from alexnet_mnist.idx import TEST_IMAGES, TEST_LABELS, read_pair
export = json.loads(Path("metrics/export.json").read_text())
assert export["prediction_agreement"] == 1.0, export
images, labels = read_pair(Path("data/raw") / TEST_IMAGES, Path("data/raw") / TEST_LABELS)
digits = Path(os.environ["DIGITS"])  # outside the project: its git workspace stays clean
digits.mkdir()
for i in range(20):
    Image.fromarray(images[i]).save(digits / f"{i:02d}.png")
predicted = {}
for model in ("models/model.pt", "models/model.onnx"):
    command = [shutil.which("alexnet-mnist"), "predict", str(digits), "--model", model, "--json"]
    lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    predicted[model] = {Path(row["path"]).name: row["digit"] for row in map(json.loads, lines)}
    right = sum(digit == labels[int(name[:2])] for name, digit in predicted[model].items())
    print(f"{model}: {right} of {len(lines)} test digits right")
    assert len(lines) == 20 and right >= 12, f"{right} of 20 right: hardly better than chance (2)"
agree = sum(predicted["models/model.pt"][name] == digit for name, digit in predicted["models/model.onnx"].items())
assert agree >= 19, f"the .pt and the .onnx file predict the same digit for {agree} of 20"
EOF
if [ "$gpus" -ge 2 ]; then
    step "dvc exp run, train.nproc=2 (NCCL)" 300 "${dvc[@]}" exp run -n cuda-ddp "${tiny[@]}" -S train.epochs=1 -S train.nproc=2
else
    echo "| dvc exp run, train.nproc=2 (NCCL) | skipped: $gpus GPU | 0 |" >>"$report"
fi
step "dvc exp run, train.compile=true" 360 "${dvc[@]}" exp run -n cuda-compile "${tiny[@]}" -S train.epochs=1 \
    -S train.compile=true -S train.deterministic=false
step "speed table at 227x227" 480 "$py" "$root/benchmarks/train_speed.py" --device cuda --sizes 227 \
    --loops project,compile,deterministic --steps 100 --rounds "${GPU_CHECK_ROUNDS:-1}" --output "$work/speed.md"

{
    echo
    echo "## Experiments (\`dvc exp show\`)"
    echo
    echo '```text'
    (cd "$work/project" && COLUMNS=200 "${dvc[@]}" exp show --no-pager --drop '.*' \
        --keep 'Experiment|^accuracy|^val_accuracy|seconds|images_per_second|^train\.(epochs|nproc|compile)' 2>&1)
    echo '```'
    echo
    echo "## Speed at 227x227"
    echo
    cat "$work/speed.md" 2>/dev/null || echo "(no speed table: the step failed)"
    for log in "$logs"/*.log; do
        echo
        echo "## Log: $(basename "$log" .log) (last 40 lines)"
        echo
        echo '```text'
        tail -n 40 "$log"
        echo '```'
    done
} >>"$report"
if [ $failed = 0 ]; then
    rm -rf "$work"
    echo "wrote $report: every step passed"
else
    echo "wrote $report: a step failed; logs and the scratch project are in $work" >&2
fi
exit $failed
