"""Per-epoch training checkpoints: the run they hold, what they are keyed to (the fingerprint), saving, and resuming."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import distributed, storage
from .params import TrainParams

if TYPE_CHECKING:
    from .model import AlexNet, ModelConfig


@dataclass
class Run:
    """A training run in progress: what a checkpoint saves and a resume restores."""

    model: AlexNet
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # draws each epoch's permutation; lives on the CPU on every device
    augment: torch.Generator  # draws the augmentation's rotations and shifts; CPU too
    history: list[dict] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        return len(self.history)


def file_digest(*paths: Path) -> str:
    """SHA-256 over the contents of `paths`, in order."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def code_digest(script: Path) -> str:
    """SHA-256 of `script` and of every module of this package imported so far.

    Called by the train stage once it has imported what it runs, this covers exactly the code
    deps that dvc.yaml lists for the stage (tests/test_dvc_yaml.py keeps the two equal), so
    editing the plot or download code leaves a checkpoint usable.
    """
    package = __name__.rpartition(".")[0]
    modules = sorted(
        Path(file)
        for name, m in list(sys.modules.items())
        if (name == package or name.startswith(package + ".")) and (file := getattr(m, "__file__", None))
    )
    return file_digest(Path(script), *modules)


def fingerprint(
    config: ModelConfig, train: TrainParams, devices: list[dict], precision: str, inputs_digest: str
) -> str:
    """Everything a run's result depends on except the number of epochs.

    `devices` holds each process's `device.identity` by rank: the device type and model, and on CUDA
    the CUDA and cuDNN versions, since kernels and their rounding differ between them. Two runs
    with equal fingerprints follow the same trajectory epoch by epoch (nothing, the learning-rate
    decay included, depends on the total), so a checkpoint taken after epoch k of one is exactly
    epoch k of the other (on CUDA, with train.deterministic: docs/checkpoints.md).
    """
    parts = {
        "model": dataclasses.asdict(config),
        "train": {k: v for k, v in dataclasses.asdict(train).items() if k != "epochs"},
        "devices": devices,
        "precision": precision,
        "inputs": inputs_digest,
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def save(path: Path, run: Run, fingerprint: str) -> None:
    """Save `run` with its `fingerprint` to `path` (atomically). Collective: every process calls it,
    since it gathers each one's dropout RNG state; process 0 writes."""
    device = next(run.model.parameters()).device
    rng = distributed.all_gather(
        {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device).cpu() if device.type == "cuda" else None,
        }
    )
    if distributed.is_main():
        storage.save(
            path,
            {
                "fingerprint": fingerprint,
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "history": run.history,
                "rng": rng,  # one per process, by rank
                "rng_shuffle": run.shuffle.get_state(),
                "rng_augment": run.augment.get_state(),
            },
        )


def resume(path: Path, run: Run, fingerprint: str, epochs: int) -> bool:
    """Restore `run` from the checkpoint at `path` if it has this `fingerprint` and at most `epochs`
    epochs; whether it did. Says on process 0 what it did with an existing checkpoint."""
    if not path.is_file():
        return False
    state = storage.load(path, "a training checkpoint", f"delete {path} to start over")
    done = len(state.get("history", []))
    if state.get("fingerprint") != fingerprint or done > epochs:
        if distributed.is_main():
            print(f"{path} is from other params, code, data or more epochs: starting over")
        return False
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.history = list(state["history"])
    rng = state["rng"][distributed.rank()]
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], next(run.model.parameters()).device)
    run.shuffle.set_state(state["rng_shuffle"])
    run.augment.set_state(state["rng_augment"])
    if distributed.is_main():
        print(f"resuming from {path}: {done} of {epochs} epochs already done")
    return True
