"""The training loop: data kept on the device, seeded permutations, per-batch resize, resumable epochs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from . import distributed
from .augment import epoch_draws, random_affine
from .checkpoint import Run
from .device import autocast, identity
from .errors import PipelineError
from .evaluate import predict, progress_bar
from .model import AlexNet, ModelConfig, to_input
from .params import TrainParams
from .storage import HISTORY_COLUMNS

SYNC_EVERY = 50  # steps between host syncs, for the progress bar's loss and the NaN/inf check


class DivergedError(PipelineError):
    pass


class CompiledForOneBatch(nn.Module):
    """`network` under torch.compile (static shapes) for the batch size of its first call, and as it is for
    any other.

    When the batch size does not divide the images, each epoch ends with a shorter batch. Compiled,
    it would cost a second compile: by default of a graph for any batch size, which then serves
    every batch instead of the first one. Run as it is, it costs one uncompiled step per epoch.
    `backend` is torch.compile's.
    """

    def __init__(self, network: nn.Module, backend: str | Callable = "inductor"):
        super().__init__()
        self.network = network
        self.compiled = torch.compile(network, dynamic=False, backend=backend)
        self.batch: int | None = None  # images per call that the compiled graph is for

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            self.batch = len(x)
        return (self.compiled if len(x) == self.batch else self.network)(x)


def start(config: ModelConfig, train_params: TrainParams, device: torch.device) -> Run:
    """A fresh, seeded run: the same seed gives the same initial weights and batch order."""
    torch.manual_seed(train_params.seed)
    model = AlexNet(config).to(device).to(memory_format=torch.channels_last)
    # fused Adam: one kernel per step for all parameters, same update rule as the default
    optimizer = torch.optim.Adam(model.parameters(), lr=train_params.lr, fused=True)
    if distributed.world() > 1:  # same initial weights everywhere, but each process its own dropout
        torch.manual_seed(train_params.seed + distributed.rank())
    return Run(
        model,
        optimizer,
        torch.Generator().manual_seed(train_params.seed),
        torch.Generator().manual_seed(train_params.seed + 1),
    )


def epoch_lr(train_params: TrainParams, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based): lr * lr_decay^(epoch - 1). It depends on the
    epoch alone, not on the total, so raising train.epochs continues a run exactly."""
    return train_params.lr * train_params.lr_decay ** (epoch - 1)


def train_epoch(
    run: Run,
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_params: TrainParams,
    precision: str,
    progress: str | None = None,
) -> tuple[float, float]:
    """One pass over `images` in a seeded random order; returns (mean loss, accuracy).

    `network` is the module each step runs: `run.model` itself, or it wrapped in
    DistributedDataParallel and/or torch.compile (same weights, same optimizer).
    `progress` labels a progress bar in images/s; None shows none. With several processes, every
    process draws the same permutation (and augmentation) and takes every world-th image of each
    global batch of `batch_size`; scaling its summed loss by world/batch makes DDP's gradient
    average equal the one-process gradient of the batch.
    """
    model, optimizer = run.model, run.optimizer
    device = images.device
    batch_size, image_size = train_params.batch_size, model.config.image_size
    augmenting = train_params.shift > 0 or train_params.rotate > 0
    rank, world = distributed.rank(), distributed.world()
    for group in optimizer.param_groups:
        group["lr"] = epoch_lr(train_params, run.epoch + 1)
    model.train()
    order = torch.randperm(len(images), generator=run.shuffle).to(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss
    steps = math.ceil(len(images) / batch_size)
    # (N, 3): row k for the epoch's k-th image, on the device in one copy
    draws = epoch_draws(len(images), run.augment, device) if augmenting else None
    with progress_bar(len(images), progress) as bar:
        for step in range(steps):
            batch = order[step * batch_size : (step + 1) * batch_size]
            idx = batch[rank::world]  # this process's share of the global batch
            if draws is not None:  # (b, 1, 28, 28) -> (b, 1, S, S), rotated and shifted
                mine = draws[step * batch_size : (step + 1) * batch_size][rank::world]
                x = random_affine(images[idx], image_size, train_params.shift, train_params.rotate, mine)
            else:  # (b, 1, 28, 28) -> (b, 1, S, S)
                x = to_input(images[idx], image_size)
            y = labels[idx]
            with autocast(device, precision):
                logits = network(x).float()
            loss = F.cross_entropy(logits, y, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss * (world / len(batch))).backward()
            optimizer.step()
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loss_sum += loss
            correct += (logits.detach().argmax(1) == y).sum()
            bar.update(len(batch))
            if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps:
                if first_bad.item() >= 0:
                    raise DivergedError(
                        f"training diverged: the loss became NaN or infinite at epoch {run.epoch + 1}, "
                        f"step {first_bad.item() + 1} of {steps}; lower train.lr (now {train_params.lr:g})"
                    )
                seen = min((step + 1) * batch_size, len(images)) / world
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
    distributed.all_sum(loss_sum, correct)
    return loss_sum.item() / len(images), correct.item() / len(images)


def summarize_history(history: list[dict], images_per_epoch: int) -> tuple[dict, dict]:
    """(training, validation) metrics: the last epoch's accuracy and loss on each split, under the same
    names as the test split's, plus the training wall time and speed over all epochs."""
    last = history[-1]
    seconds = sum(row["seconds"] for row in history)
    training = {
        "accuracy": round(last["train_accuracy"], 6),
        "loss": round(last["train_loss"], 6),
        "seconds": round(seconds, 2),  # wall time of all epochs' training, validation excluded
        "images_per_second": round(images_per_epoch * len(history) / seconds, 1),
    }
    return training, {"accuracy": round(last["val_accuracy"], 6), "loss": round(last["val_loss"], 6)}


def validate(
    model: AlexNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    precision: str,
    progress: str | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) over all of `images`, each process evaluating its share.

    Each process takes its share of `batch_size` (the global batch) at a time, as in training: a
    forward pass without gradients needs less memory than a training step of the same batch, so
    validation fits wherever training does, and lowering train.batch_size helps both. (Not
    evaluate.batch_size, which belongs to the evaluate stage: changing it must not rerun training.)
    """
    rank, world = distributed.rank(), distributed.world()
    mine, mine_labels = images[rank::world], labels[rank::world]
    loss, predicted = predict(model, mine, mine_labels, -(-batch_size // world), precision, progress)
    device = images.device
    totals = torch.tensor(
        [loss * len(mine), (predicted == mine_labels.cpu()).sum().item()], dtype=torch.float64, device=device
    )
    distributed.all_sum(totals)
    return totals[0].item() / len(images), totals[1].item() / len(images)


def fit(
    train_set: dict,
    val_set: dict,
    config: ModelConfig,
    train_params: TrainParams,
    device: torch.device,
    precision: str,
    checkpoint: Path | None = None,
    inputs_digest: str = "",
    on_epoch: Callable[[Run], None] | None = None,
) -> Run:
    """Train for `train_params.epochs`, resuming from `checkpoint` when it has the same fingerprint.

    After each epoch the run is saved to `checkpoint` (atomically), so a killed run resumes
    from its last completed epoch and ends with exactly the weights of an uninterrupted one;
    then process 0 calls `on_epoch(run)`, e.g. to write the history so far.
    """
    main = distributed.is_main()
    world = distributed.world()
    if world > train_params.batch_size:
        raise PipelineError(
            f"params.yaml: train.batch_size: {train_params.batch_size} is the global batch and "
            f"must be at least the {world} processes; raise it or lower train.nproc"
        )
    run = start(config, train_params, device)
    devices = distributed.all_gather({"type": device.type, **identity(device)})  # every process's, by rank
    fingerprint = ckpt.fingerprint(config, train_params, devices, precision, inputs_digest)
    if checkpoint is not None:
        ckpt.resume(checkpoint, run, fingerprint, train_params.epochs)
    images = train_set["images"].to(device)
    labels = train_set["labels"].to(device)
    val_images, val_labels = val_set["images"].to(device), val_set["labels"].to(device)
    network: nn.Module = run.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None)
    if train_params.compile:
        network = CompiledForOneBatch(network)
    while run.epoch < train_params.epochs:
        epoch = run.epoch + 1
        label = f"epoch {epoch}/{train_params.epochs}"
        began = time.perf_counter()
        train_loss, train_accuracy = train_epoch(
            run, network, images, labels, train_params, precision, progress=label if main else None
        )
        seconds = time.perf_counter() - began
        val_loss, val_accuracy = validate(
            run.model,
            val_images,
            val_labels,
            train_params.batch_size,
            precision,
            progress=f"{label} validation" if main else None,
        )
        row = dict(
            zip(HISTORY_COLUMNS, (epoch, train_loss, train_accuracy, val_loss, val_accuracy, seconds), strict=True)
        )
        run.history.append(row)
        if main:
            print(
                f"{label}: train loss {train_loss:.4f} acc {train_accuracy:.4f} | "
                f"val loss {val_loss:.4f} acc {val_accuracy:.4f} | {seconds:.1f}s, "
                f"{len(images) / seconds:.0f} img/s",
                flush=True,
            )
        if checkpoint is not None:
            ckpt.save(checkpoint, run, fingerprint)  # every process: it gathers their RNG states
        if main and on_epoch is not None:
            on_epoch(run)
    return run
