import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet_mnist.device import cpu_flags, cpu_native_bf16, resolve_device, resolve_precision
from alexnet_mnist.errors import PipelineError

# Training steps of the full-width AlexNet at 67x67 (64 MiB of fc2 weight gradient among the
# buffers each step frees and allocates again), in the precision 'auto' gives on this CPU (bf16
# where native; emulated bf16 would only make it minutes slower); prints the page faults of each step.
FAULTS_PER_STEP = """
import resource, sys, torch
sys.path.insert(0, sys.argv[1])  # tests/, for conftest's train_params
from conftest import train_params
from alexnet_mnist.device import resolve_precision, tune_cpu
from alexnet_mnist.model import ModelConfig
from alexnet_mnist.train import start, train_epoch
tune_cpu()
precision = resolve_precision("auto", torch.device("cpu"))
params = train_params(epochs=1, batch_size=64, seed=0, device="cpu", precision=precision)
run = start(ModelConfig(67, 0.5), params, torch.device("cpu"))
images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
for step in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_epoch(run, run.model, images, labels, params, precision)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, flush=True)
"""


@pytest.mark.slow  # 16 training steps of the full-width AlexNet
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tune_cpu tunes glibc's allocator only")
def test_tune_cpu_lets_training_steps_reuse_freed_memory():
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_STEP, str(Path(__file__).parent)], capture_output=True, text=True, check=True
    )
    faults = [int(line) for line in out.stdout.split()]
    # Memory freed back to the kernel comes back as fresh zero-filled pages, one fault per 4 KiB.
    # Untuned (or with a threshold that overflowed mallopt's int), each step faults in more than
    # the 64 MiB of one gradient, 16384 pages; tuned, the steps after the first few reuse the heap.
    steady = faults[-8:]
    assert sum(steady) / len(steady) < 4096, f"page faults per training step: {faults}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_an_error_not_a_fallback():
    with pytest.raises(PipelineError, match=r"train\.device: 'cuda' was asked for but PyTorch sees no CUDA"):
        resolve_device("cuda", "train.device")


@pytest.mark.parametrize(
    "capability, avx512_bf16, amx, native",
    [
        ("AVX512", True, False, True),  # AVX512-BF16, e.g. AMD Zen 4
        ("AVX512", True, True, True),  # AMX, e.g. Intel Sapphire Rapids
        ("AVX512", False, False, False),  # AVX512 without bf16, e.g. Intel Skylake-SP
        ("AVX2", False, False, False),  # an AVX2-only CPU
        ("AVX2", True, True, False),  # a bf16 CPU whose kernels ATEN_CPU_CAPABILITY=avx2 limits to AVX2
        ("DEFAULT", False, False, False),  # no vector kernels
    ],
)
def test_cpu_native_bf16_needs_avx512_kernels_and_bf16_instructions(capability, avx512_bf16, amx, native):
    assert cpu_native_bf16(capability, avx512_bf16, amx) is native


def test_cpu_flags_are_the_first_flags_line_of_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
        "vmx flags\t: ept\nbugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}


def test_cpu_flags_are_empty_without_a_readable_cpuinfo_or_flags_line(tmp_path):
    assert cpu_flags(tmp_path / "missing") == set()  # e.g. macOS, which has no /proc
    assert cpu_flags(tmp_path) == set()  # a folder: unreadable as a file
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert cpu_flags(tmp_path / "arm") == set()


def test_auto_precision_is_fp32_on_a_cpu_limited_to_avx2():
    code = (
        "import torch; from alexnet_mnist.device import resolve_precision; "
        "print(torch.backends.cpu.get_cpu_capability(), resolve_precision('auto', torch.device('cpu')))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    capability, precision = out.stdout.split()
    assert capability != "AVX512" and precision == "fp32", out.stdout


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept(name):
    assert resolve_precision(name, torch.device("cpu")) == name
