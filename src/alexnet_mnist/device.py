"""Where and in what precision to run: device and precision choice, the checks that a GPU can run this torch,
autocast, kernel choice (deterministic or benchmarked), and what results depend on about the device."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import torch

from .errors import PipelineError

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # written by the NVIDIA kernel driver while it is loaded (Linux)
# the oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA release notes, minor version compatibility)
MIN_DRIVER = {"12": "525.60.13", "13": "580.65.06"}


def resolve_device(name: str, key: str = "train.device", driver_file: Path = NVIDIA_DRIVER) -> torch.device:
    """'auto' -> CUDA if present, else CPU. 'cuda' without CUDA is an error, never a fallback.

    Where an NVIDIA driver is loaded (`driver_file`) but PyTorch can use no CUDA device, 'auto' prints
    one line on stderr saying why and how to fix it, then runs on the CPU. A GPU this torch has no
    kernels for is an error, as its first kernel would fail.
    """
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        require_supported_gpus(key)
        return torch.device("cuda")
    driver = nvidia_driver(driver_file)
    problem = cuda_problem(driver, torch.version.cuda, os.environ.get("CUDA_VISIBLE_DEVICES")) if driver else None
    if name == "cuda":
        cause, fix = problem or ("", "")
        raise PipelineError(
            f"params.yaml: {key}: 'cuda' was asked for but PyTorch sees no CUDA device (torch {torch.__version__})"
            f"{f': an NVIDIA driver ({driver}) is loaded, but {cause}; {fix}, or' if problem else ';'} "
            f"set {key} to 'auto' or 'cpu'"
        )
    if problem:
        cause, fix = problem
        print(
            f"warning: {key} is auto and an NVIDIA driver ({driver}) is loaded, but {cause}, so this runs on the "
            f"CPU; to run on the GPU, {fix} (or set {key} to cpu to silence this)",
            file=sys.stderr,
            flush=True,
        )
    return torch.device("cpu")


def nvidia_driver(version_file: Path = NVIDIA_DRIVER) -> str | None:
    """The loaded NVIDIA kernel driver's version ('580.65.06') as `version_file` states it; 'unknown version'
    where its text has none; None where no driver is loaded (no such file: no driver, or not Linux)."""
    try:
        text = Path(version_file).read_text()
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..." (the open modules:
    # "NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build ...")
    match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return match[1] if match else "unknown version"


def cuda_problem(driver: str, cuda: str | None, visible: str | None) -> tuple[str, str]:
    """(why PyTorch can use no CUDA device though NVIDIA `driver` is loaded, the fix): from torch's CUDA
    version `cuda` (None: a build without CUDA) and $CUDA_VISIBLE_DEVICES (`visible`, None if unset)."""
    if cuda is None:
        return f"torch {torch.__version__} is built without CUDA", "install the pinned CUDA build: make setup"
    if visible is not None:
        return f"CUDA_VISIBLE_DEVICES is {visible!r}", "unset CUDA_VISIBLE_DEVICES or list the GPU in it"
    needed = MIN_DRIVER.get(cuda.split(".")[0])
    if needed and re.fullmatch(r"[\d.]+", driver) and _version(driver) < _version(needed):
        return (
            f"torch {torch.__version__} is built for CUDA {cuda}, which needs driver {needed} or newer",
            f"update the NVIDIA driver to {needed} or newer",
        )
    return (
        "CUDA did not start (torch's warning above says why)",
        "check that nvidia-smi lists the GPU, and reboot if the driver was updated since the last boot",
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def gpu_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a GPU of compute `capability` (major, minor) runs a build with kernels for `arch_list`
    ('sm_75', 'sm_90a', 'compute_90', ...): machine code for sm_XY runs on major X from minor Y up
    (sm_XYa only on X.Y itself), PTX for compute_XY on X.Y and every newer GPU."""
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = number.rstrip("af")  # sm_90a: architecture-specific; sm_100f: family-specific
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "compute" and built <= capability:
            return True
        same_major = kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]
        if same_major and (not number.endswith("a") or built == capability):
            return True
    return False


def require_supported_gpus(key: str) -> None:
    """Stop unless this torch has kernels for every visible GPU (a build without an arch list is not checked)."""
    archs = torch.cuda.get_arch_list()
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        if archs and not gpu_supported(capability, archs):
            raise PipelineError(
                f"params.yaml: {key}: GPU {index} ({torch.cuda.get_device_name(index)}) has compute capability "
                f"{capability[0]}.{capability[1]}, and torch {torch.__version__} has kernels for {' '.join(archs)} "
                f"only (its first kernel would fail: no kernel image is available); set {key} to 'cpu', or run "
                f"on a GPU of one of those (CUDA_VISIBLE_DEVICES picks GPUs)"
            )


def cpu_native_bf16(capability: str, avx512_bf16: bool, amx: bool) -> bool:
    """Whether a CPU computes bf16 natively: AVX512 kernels in use and AVX512-BF16 or AMX instructions.

    `capability` is `torch.backends.cpu.get_cpu_capability()` ('AVX512', 'AVX2', 'DEFAULT', ...),
    the widest kernels PyTorch runs, lowered by ATEN_CPU_CAPABILITY; the flags are the CPU's own.
    Without native bf16, autocast emulates it and is slower than fp32.
    """
    return capability == "AVX512" and (avx512_bf16 or amx)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields in `cpuinfo` ('model name', 'flags', ...), as Linux writes them;
    {} where the file is missing or unreadable (macOS). All cores of a machine report alike."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # a blank line ends the first processor
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags ('avx2', 'avx512_bf16', 'amx_tile', ...); empty where `cpuinfo` can't be
    read or has no "flags" line (ARM says "Features")."""
    return set(cpu_info(cpuinfo).get("flags", "").split())


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """'AMD EPYC (family 26, model 2)': the model name with its family and model numbers; '' where unknown."""
    info = cpu_info(cpuinfo)
    numbers = (
        f" (family {info['cpu family']}, model {info['model']})" if "cpu family" in info and "model" in info else ""
    )
    return info.get("model name", "") + numbers


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a GPU of compute capability 8.0 or more (Turing emulates
    it, slower than fp32), or a CPU as `cpu_native_bf16` says."""
    if device.type == "cuda":  # the current GPU: each process's own once distributed.setup has run
        return torch.cuda.is_bf16_supported(including_emulation=False)  # Ampere (8.0) and newer
    flags = cpu_flags()  # PyTorch has no public bf16 query for CPUs
    return cpu_native_bf16(torch.backends.cpu.get_cpu_capability(), "avx512_bf16" in flags, "amx_tile" in flags)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the device has native bf16, else 'fp32'."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` ('bf16' or 'fp32') on `device`."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def choose_kernels(device: torch.device, deterministic: bool) -> None:
    """Deterministic kernels where asked (`make_deterministic`); otherwise, on CUDA, cuDNN times each
    convolution's algorithms at its first shape and keeps the fastest: every training step has the
    same shapes, so the timing is paid once. Call before the first CUDA kernel."""
    if deterministic:
        make_deterministic(device)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def make_deterministic(device: torch.device) -> None:
    """Deterministic kernels only, chosen without timing them; must run before the first cuBLAS call.

    cuDNN's benchmark mode and torch.compile's autotuning would pick kernels by their measured speed,
    which may differ between runs and round differently: both are off (torch.use_deterministic_algorithms
    also sets torch.compile's `deterministic`).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility, per CUDA docs
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True


def describe(device: torch.device, precision: str) -> dict:
    """What a reader needs to reproduce a number: device, precision, torch version, threads. Facts
    about a run, not numbers to compare: they go in the model file and metrics/run-info.json, not in
    the metrics."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": device.type,
        "device_name": name,
        "precision": precision,
        "torch_version": str(torch.__version__),
        "threads": torch.get_num_threads(),
    }


def identity(device: torch.device) -> dict:
    """What bitwise results depend on about `device` beyond torch's version: the GPU model and compute
    capability with the CUDA and cuDNN versions; or the CPU model and the kernels PyTorch runs on it."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {
            "gpu": torch.cuda.get_device_name(device),
            "capability": f"{major}.{minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return {"cpu": cpu_name(), "kernels": torch.backends.cpu.get_cpu_capability()}


def tune_cpu() -> None:
    """Process-wide CPU settings that make training faster without changing what it computes.

    - glibc keeps freed memory for reuse instead of returning it to the OS. Each training step
      allocates activations of tens of MB; by default glibc maps them fresh and the kernel
      zero-fills every page on first touch, about half of a CPU step of AlexNet at 227x227.
    - Denormal floats are flushed to zero: MNIST's flat background makes many tiny gradients,
      and x86 computes on denormals many times slower. (Results stay deterministic.)
    """
    import ctypes

    torch.set_flush_denormal(True)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # int mallopt(int param, int value)
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers from <malloc.h>
    most = 2**31 - 1  # bytes: the largest value an int holds (a larger one would wrap, e.g. 2**34 to 0)
    libc.mallopt(m_mmap_threshold, 1 << 30)  # bytes: serve blocks up to 1 GiB from the heap
    libc.mallopt(m_trim_threshold, most)  # bytes of free heap kept before trimming
