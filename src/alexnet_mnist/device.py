"""Where and in what precision to run: device and precision choice, autocast, determinism switches."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from .errors import PipelineError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """'auto' -> CUDA if present, else CPU. 'cuda' without CUDA is an error, never a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError(
            f"params.yaml: {key}: 'cuda' was asked for but PyTorch sees no CUDA device "
            f"(torch {torch.__version__}); set {key} to 'auto' or 'cpu'"
        )
    return torch.device(name)


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
    """Whether `device` computes bf16 natively (CUDA with bf16, or a CPU as `cpu_native_bf16` says)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
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


def make_deterministic(device: torch.device) -> None:
    """Deterministic kernels only; must run before the first CUDA call for cuBLAS to obey."""
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
