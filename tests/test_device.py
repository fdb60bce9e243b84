import os
import platform
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import determinism_settings, kept_determinism, train_params

from alexnet_mnist import device as dev
from alexnet_mnist.checkpoint import fingerprint
from alexnet_mnist.device import cpu_flags, cpu_native_bf16, resolve_device, resolve_precision
from alexnet_mnist.errors import PipelineError
from alexnet_mnist.model import ModelConfig

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


# What /proc/driver/nvidia/version says, as the proprietary and the open kernel modules write it
PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc 12\n"
)
OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)  Jul 2025\n"
)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens where PyTorch can use no CUDA")


@pytest.mark.parametrize(
    "text, version", [(PROPRIETARY, "535.104.05"), (OPEN, "580.65.06"), ("NVRM\n", "unknown version")]
)
def test_the_loaded_nvidia_driver_is_read_from_its_proc_file(tmp_path, text, version):
    (tmp_path / "version").write_text(text)
    assert dev.nvidia_driver(tmp_path / "version") == version
    assert dev.nvidia_driver(tmp_path / "missing") is None  # no driver loaded, or not Linux


@pytest.mark.parametrize(
    "driver, cuda, visible, cause, fix",
    [
        ("535.104.05", "13.0", None, "built for CUDA 13.0, which needs driver 580.65.06", "update the NVIDIA driver"),
        ("580.65.06", "13.0", "", "CUDA_VISIBLE_DEVICES is ''", "unset CUDA_VISIBLE_DEVICES"),
        ("580.65.06", None, None, "is built without CUDA", "make setup"),
        ("580.65.06", "13.0", None, "CUDA did not start", "nvidia-smi"),  # new enough: another cause
        ("unknown version", "13.0", None, "CUDA did not start", "nvidia-smi"),
        ("525.60.13", "12.8", None, "CUDA did not start", "nvidia-smi"),  # CUDA 12 runs on 525.60.13
    ],
)
def test_why_cuda_is_unusable_with_a_driver_loaded(driver, cuda, visible, cause, fix):
    found_cause, found_fix = dev.cuda_problem(driver, cuda, visible)
    assert cause in found_cause and fix in found_fix


@no_cuda
@pytest.mark.skipif(not (torch.version.cuda or "").startswith("13."), reason="the pinned CUDA 13 build's driver")
def test_auto_says_in_one_line_that_a_loaded_driver_is_too_old_then_runs_on_the_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "version").write_text(PROPRIETARY)
    assert resolve_device("auto", "evaluate.device", tmp_path / "version") == torch.device("cpu")
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"warning: evaluate.device is auto and an NVIDIA driver (535.104.05) is loaded, but torch {torch.__version__} "
        f"is built for CUDA {torch.version.cuda}, which needs driver 580.65.06 or newer, so this runs on the CPU; to "
        "run on the GPU, update the NVIDIA driver to 580.65.06 or newer (or set evaluate.device to cpu to silence "
        "this)"
    )
    with pytest.raises(PipelineError, match=r"driver \(535.104.05\) is loaded, but .* update the NVIDIA driver"):
        resolve_device("cuda", "evaluate.device", tmp_path / "version")
    assert resolve_device("auto", "evaluate.device", tmp_path / "missing") == torch.device("cpu")  # no driver
    assert capsys.readouterr().err == ""


def test_this_torch_has_kernels_from_turing_on():
    archs = torch.cuda.get_arch_list()
    assert torch.version.cuda is None or "sm_75" in archs, archs  # README states the GPUs the pinned build runs on
    supported = {capability: dev.gpu_supported(capability, archs) for capability in [(7, 0), (7, 5), (8, 9), (9, 0)]}
    assert supported == {(7, 0): False, (7, 5): True, (8, 9): True, (9, 0): True} or not archs


@pytest.mark.parametrize(
    "capability, archs, supported",
    [
        ((7, 0), ["sm_75", "sm_80"], False),  # Volta: older than the oldest
        ((8, 9), ["sm_75", "sm_80", "sm_86"], True),  # sm_86 machine code runs on 8.9
        ((8, 0), ["sm_75", "sm_86"], False),  # the minor version must not exceed the GPU's
        ((11, 0), ["sm_90", "sm_100", "sm_120"], False),  # no machine code of that major, no PTX
        ((9, 0), ["sm_90a"], True),
        ((10, 0), ["sm_90a"], False),  # architecture-specific code runs on 9.0 alone
        ((12, 0), ["sm_80", "compute_90"], True),  # PTX: compiled by the driver for newer GPUs
        ((8, 6), ["compute_90"], False),
    ],
)
def test_which_gpus_a_build_runs_on(capability, archs, supported):
    assert dev.gpu_supported(capability, archs) is supported


def patch_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    """CUDA's answers for one GPU of `name` and compute `capability`, for the code paths that ask them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    properties = types.SimpleNamespace(name=name, major=capability[0], minor=capability[1])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)


@pytest.mark.skipif(not torch.cuda.get_arch_list(), reason="a torch without CUDA kernels checks no GPU")
def test_a_gpu_older_than_the_build_is_a_one_line_error(monkeypatch):
    patch_gpu(monkeypatch, "Tesla V100-SXM2-16GB", (7, 0))
    for name in ("auto", "cuda"):
        with pytest.raises(PipelineError) as error:
            resolve_device(name, "train.device")
        assert str(error.value).startswith(
            "params.yaml: train.device: GPU 0 (Tesla V100-SXM2-16GB) has compute capability 7.0, and torch "
        )
        assert "sm_75" in str(error.value) and str(error.value).endswith(
            "set train.device to 'cpu', or run on a GPU of one of those (CUDA_VISIBLE_DEVICES picks GPUs)"
        )
    patch_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0))
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name, capability, precision", [("Tesla T4", (7, 5), "fp32"), ("NVIDIA A100", (8, 0), "bf16")])
def test_auto_precision_on_cuda_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, name, capability, precision):
    patch_gpu(monkeypatch, name, capability)  # a Turing T4 emulates bf16, slower than its fp32
    assert resolve_precision("auto", torch.device("cuda")) == precision


def test_the_checkpoint_fingerprint_holds_the_gpu_model_and_cuda_and_cudnn_versions(monkeypatch):
    config, params = ModelConfig(67, 0.5), train_params()

    def on(name: str, capability=(9, 0), cuda="13.0", cudnn=92400) -> str:
        patch_gpu(monkeypatch, name, capability)
        monkeypatch.setattr(torch.version, "cuda", cuda)
        monkeypatch.setattr(torch.backends.cudnn, "version", lambda: cudnn)
        identity = dev.identity(torch.device("cuda"))
        assert identity == {"gpu": name, "capability": f"{capability[0]}.{capability[1]}", "cuda": cuda, "cudnn": cudnn}
        return fingerprint(config, params, [{"type": "cuda", **identity}], "bf16", "inputs")

    h100 = on("NVIDIA H100 80GB HBM3")
    assert h100 == on("NVIDIA H100 80GB HBM3")
    assert (
        len(
            {
                h100,
                on("NVIDIA H200"),
                on("NVIDIA H100 80GB HBM3", cuda="13.2"),
                on("NVIDIA H100 80GB HBM3", cudnn=91000),
            }
        )
        == 4
    )


def test_the_cpu_identity_is_its_model_and_kernels():
    identity = dev.identity(torch.device("cpu"))
    assert identity == {"cpu": dev.cpu_name(), "kernels": torch.backends.cpu.get_cpu_capability()}


def test_kept_determinism_restores_every_setting_make_deterministic_changes(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with kept_determinism() as before:
        dev.make_deterministic(torch.device("cuda"))  # flags only: no CUDA call
        changed = determinism_settings()
    assert changed == {
        **before,
        "algorithms": True,
        "compile": True,  # torch.compile chooses its kernels without timing them
        "cudnn.deterministic": True,
        "cudnn.benchmark": False,
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    }
    assert before["algorithms"] is before["compile"] is False and before["CUBLAS_WORKSPACE_CONFIG"] is None
    assert determinism_settings() == before
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with kept_determinism():
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = True
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    assert determinism_settings() == {**before, "CUBLAS_WORKSPACE_CONFIG": ":16:8"}


@pytest.mark.parametrize(
    "device, deterministic, benchmark, algorithms",
    [
        ("cuda", False, True, False),
        ("cuda", True, False, True),
        ("cpu", False, False, False),
        ("cpu", True, False, True),
    ],
)
def test_cudnn_benchmarks_its_kernels_for_cuda_training_unless_deterministic(
    restore_determinism, device, deterministic, benchmark, algorithms
):
    torch.backends.cudnn.benchmark = False
    dev.choose_kernels(torch.device(device), deterministic)  # flags only: no CUDA call
    assert torch.backends.cudnn.benchmark is benchmark
    assert torch.are_deterministic_algorithms_enabled() is algorithms
