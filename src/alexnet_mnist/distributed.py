"""Multi-process training through torchrun: launching, process-group set-up, and sums across ranks.

With one process nothing here starts a process group, and every helper is a no-op.
Several machines: set torchrun's own environment on each (PET_NNODES, PET_NODE_RANK,
PET_RDZV_ENDPOINT, PET_RDZV_BACKEND=c10d); see the README.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist

from .errors import PipelineError


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def launch(nproc: int, script: str, args: list[str]) -> int:
    """Run `script` with `args` under torchrun with `nproc` processes on this machine; its exit status.

    One machine: `--standalone` (a free local port, so parallel experiments don't collide).
    Several: torchrun reads the PET_* variables the user set.
    """
    single_node = not os.environ.get("PET_NNODES")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        *(["--standalone"] if single_node else []),
        script,
        *args,
    ]
    print(f"starting {nproc} processes: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command).returncode


def setup(device: torch.device) -> torch.device:
    """Join the process group when started by torchrun; return this process's device."""
    if not under_torchrun():
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise PipelineError(
                f"train.nproc: process {local_rank} has no GPU of its own: this machine has "
                f"{torch.cuda.device_count()}; set train.nproc to at most that"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def all_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor in place across all processes."""
    if dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_gather(obj: object) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[object] = [None] * world()
    dist.all_gather_object(gathered, obj)
    return gathered
