"""Per-epoch training checkpoints: the fingerprint that decides when one may be reused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from .params import ModelParams, TrainParams


def file_digest(*paths: Path) -> str:
    """SHA-256 over the contents of `paths`, in order."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(model: ModelParams, train: TrainParams, device: str, precision: str, inputs_digest: str,
                world: int = 1) -> str:
    """Everything a run's result depends on except the number of epochs.

    Two runs with equal fingerprints follow the same trajectory epoch by epoch (nothing,
    e.g. no learning-rate schedule, depends on the total), so a checkpoint taken after
    epoch k of one is exactly epoch k of the other.
    """
    identity = {
        "model": dataclasses.asdict(model),
        "train": {k: v for k, v in dataclasses.asdict(train).items() if k != "epochs"},
        "device": device,
        "precision": precision,
        "inputs": inputs_digest,
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "processes": world,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
