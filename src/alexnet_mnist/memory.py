"""Device memory: what a device has, a process's share of a batch, the least a run needs there, and running
out of it as one error line."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch
from torch import nn

from .errors import PipelineError
from .model import AlexNet, ModelConfig, feature_side

CPU_FAILURE = "can't allocate memory"  # how c10's DefaultCPUAllocator words a failed allocation
# The size a failed allocation asked for: the CPU allocator's "you tried to allocate 123 bytes", or
# the CUDA caching allocator's "Tried to allocate 2.00 GiB" (in bytes, KiB, MiB or GiB).
ASKED = re.compile(r"you tried to allocate (\d+) bytes|Tried to allocate ([\d.]+) (bytes|KiB|MiB|GiB)")
UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def capacity(device: torch.device) -> int:
    """Bytes of memory `device` has: a GPU's own, or for the CPU the machine's RAM plus swap."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") + _swap()


def _swap() -> int:
    """Bytes of swap space, from /proc/meminfo; 0 without swap or without /proc."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:
        pass
    return 0


def batch_share(batch_size: int, images: int, processes: int = 1) -> int:
    """Images per batch on one process: its share of the global `batch_size`, or of all `images` when fewer."""
    return -(-min(batch_size, images) // processes)  # ceil


def footprint(config: ModelConfig, images: int, precision: str) -> tuple[int, int]:
    """(bytes of the weights, in float32; bytes of the first layer's output for a batch of `images`, in
    bf16 under bf16 autocast, else float32): tensors that coexist in every forward pass."""
    with torch.device("meta"):  # shapes only, no memory: the model may be too large for any device
        model = AlexNet(config)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    first = model.features[:1]  # (B, 1, S, S) -> (B, 96, s, s)
    conv = first[0]
    assert isinstance(conv, nn.Conv2d)
    side = feature_side(first, config.image_size)
    element = (torch.bfloat16 if precision == "bf16" else torch.float32).itemsize
    return weights, images * conv.out_channels * side * side * element


def require_fits(
    config: ModelConfig,
    batch_key: str,
    batch_size: int,
    images: int,
    device: torch.device,
    precision: str,
    training: bool,
) -> None:
    """Stop before any work when the run cannot fit in the device's memory; never when it may.

    The bound counts only tensors that must coexist: the weights with the first layer's output
    for one batch, in any forward pass; and, to train, the weights with their gradients and
    Adam's two moments, at each optimizer step. `images` is the batch on this device:
    `batch_size` (the value of `batch_key`) or less, when the data holds fewer images or several
    processes share the batch.
    """
    weights, activation = footprint(config, images, precision)
    state = 4 * weights if training else weights
    have = capacity(device)
    if max(state, weights + activation) <= have:
        return
    if state >= weights + activation:
        needed, parts = (
            state,
            f"{size(weights)} of weights and as much again for each of their gradients and Adam's two moments",
        )
    else:
        needed, parts = (
            weights + activation,
            f"{size(weights)} of weights and {size(activation)} for the first "
            f"layer's output of a batch of {images} images",
        )
    raise PipelineError(
        f"model.image_size {config.image_size} with {batch_key} {batch_size} cannot fit on {device}, which has "
        f"{size(have)}: {'training' if training else 'evaluation'} needs at least {size(needed)} there, {parts}; "
        f"lower model.image_size{'' if state > have else f' or {batch_key}'}"
    )


@contextlib.contextmanager
def out_of_memory(stage: str, device: torch.device, image_size: int, batch_key: str, batch_size: int) -> Iterator[None]:
    """Running out of memory inside the block stops the stage with one line: the stage, the device and
    its memory, the sizes that did not fit, what the failed allocation asked for, and the fix.

    Covers CUDA's OutOfMemoryError, the CPU allocator's RuntimeError and Python's MemoryError.
    Outputs are written atomically, so what earlier epochs saved stays whole.
    """
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and CPU_FAILURE not in str(e):
            raise
        asked = requested(str(e))
        raise PipelineError(
            f"{stage} stage: out of memory on {device} ({size(capacity(device))}) with model.image_size "
            f"{image_size} and {batch_key} {batch_size}"
            f"{f': an allocation of {size(asked)} failed' if asked is not None else ''}; "
            f"lower {batch_key} or model.image_size and rerun"
        ) from None


def requested(message: str) -> int | None:
    """Bytes a failed allocation asked for, read from its error message; None where it does not say."""
    match = ASKED.search(message)
    if match is None:
        return None
    if match[1] is not None:
        return int(match[1])
    return round(float(match[2]) * UNITS[match[3]])


def size(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at 1 or more: '23.4 GiB'."""
    unit = next((u for u in ("TiB", "GiB", "MiB", "KiB") if n >= UNITS[u]), "bytes")
    return f"{n} bytes" if unit == "bytes" else f"{n / UNITS[unit]:.1f} {unit}"
