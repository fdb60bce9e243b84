"""The training loop: data kept on the device, seeded permutations, per-batch resize, resumable epochs."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint as ckpt
from . import storage
from .device import autocast
from .errors import PipelineError
from .evaluate import predict
from .model import AlexNet, ModelConfig, to_input
from .params import ModelParams, TrainParams

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
VAL_BATCH_SIZE = 1000  # images per validation forward pass (memory only; results do not depend on it)
SYNC_EVERY = 50  # steps between host syncs, for the progress bar's loss and the NaN/inf check


class DivergedError(PipelineError):
    pass


@dataclass
class Run:
    """A training run in progress: what a checkpoint saves and a resume restores."""

    model: AlexNet
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # draws each epoch's permutation; lives on the CPU on every device
    history: list[dict] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        return len(self.history)

    def state(self, identity: str) -> dict:
        device = next(self.model.parameters()).device
        return {
            "fingerprint": identity,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "rng_shuffle": self.shuffle.get_state(),
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], next(self.model.parameters()).device)
        self.shuffle.set_state(state["rng_shuffle"])


def start(model_params: ModelParams, train_params: TrainParams, device: torch.device) -> Run:
    """A fresh, seeded run: the same seed gives the same initial weights and batch order."""
    torch.manual_seed(train_params.seed)
    config = ModelConfig(image_size=model_params.image_size, dropout=model_params.dropout)
    model = AlexNet(config).to(device, memory_format=torch.channels_last)
    # fused Adam: one kernel per step for all parameters, same update rule as the default
    optimizer = torch.optim.Adam(model.parameters(), lr=train_params.lr, fused=True)
    return Run(model, optimizer, torch.Generator().manual_seed(train_params.seed))


def train_epoch(run: Run, step_fn, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                precision: str, bar: tqdm) -> tuple[float, float]:
    """One pass over `images` in a seeded random order; returns (mean loss, accuracy)."""
    model, optimizer = run.model, run.optimizer
    device = images.device
    image_size = model.config.image_size
    model.train()
    order = torch.randperm(len(images), generator=run.shuffle).to(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss
    steps = math.ceil(len(images) / batch_size)
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        x, y = to_input(images[idx], image_size), labels[idx]  # (B, 1, 28, 28) -> (B, 1, S, S)
        with autocast(device, precision):
            logits = step_fn(x).float()
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        bar.update(len(idx))
        if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps:
            if first_bad.item() >= 0:
                raise DivergedError(
                    f"training diverged: the loss became NaN or infinite at epoch {run.epoch + 1}, "
                    f"step {first_bad.item() + 1} of {steps}; lower train.lr (now {optimizer.param_groups[0]['lr']:g})"
                )
            bar.set_postfix(loss=f"{loss_sum.item() / min((step + 1) * batch_size, len(images)):.4f}")
    return loss_sum.item() / len(images), correct.item() / len(images)


def fit(
    train_set: dict,
    val_set: dict,
    model_params: ModelParams,
    train_params: TrainParams,
    device: torch.device,
    precision: str,
    checkpoint: Path | None = None,
    inputs_digest: str = "",
) -> Run:
    """Train for `train_params.epochs`, resuming from `checkpoint` when it has the same fingerprint.

    After each epoch the run is saved to `checkpoint` (atomically), so a killed run resumes
    from its last completed epoch and ends with exactly the weights of an uninterrupted one.
    """
    run = start(model_params, train_params, device)
    identity = ckpt.fingerprint(model_params, train_params, device.type, precision, inputs_digest)
    if checkpoint is not None and checkpoint.is_file():
        state = storage.load(checkpoint, "a training checkpoint", f"delete {checkpoint} to start over")
        done = len(state.get("history", []))
        if state.get("fingerprint") == identity and done <= train_params.epochs:
            run.restore(state)
            print(f"resuming from {checkpoint}: {done} of {train_params.epochs} epochs already done")
        else:
            print(f"{checkpoint} is from other params or more epochs: starting over")
    images = train_set["images"].to(device)
    labels = train_set["labels"].to(device)
    val_images, val_labels = val_set["images"].to(device), val_set["labels"].to(device)
    step_fn = torch.compile(run.model) if train_params.compile else run.model
    while run.epoch < train_params.epochs:
        epoch = run.epoch + 1
        with tqdm(total=len(images), desc=f"epoch {epoch}/{train_params.epochs}", unit="img",
                  unit_scale=True, leave=False, mininterval=1.0) as bar:
            began = time.perf_counter()
            train_loss, train_accuracy = train_epoch(run, step_fn, images, labels, train_params.batch_size,
                                                     precision, bar)
            seconds = time.perf_counter() - began
        val_loss, predicted = predict(run.model, val_images, val_labels, model_params.image_size,
                                      VAL_BATCH_SIZE, precision)
        val_accuracy = (predicted == val_labels.cpu()).float().mean().item()
        row = dict(zip(HISTORY_COLUMNS, (epoch, train_loss, train_accuracy, val_loss, val_accuracy, seconds)))
        run.history.append(row)
        print(f"epoch {epoch}/{train_params.epochs}: train loss {train_loss:.4f} acc {train_accuracy:.4f} | "
              f"val loss {val_loss:.4f} acc {val_accuracy:.4f} | {seconds:.1f}s, "
              f"{len(images) / seconds:.0f} img/s", flush=True)
        if checkpoint is not None:
            storage.save(checkpoint, run.state(identity))
    return run
