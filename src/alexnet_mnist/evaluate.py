"""Evaluation: batched inference with loss and predictions, the summaries and confusion rows built from them,
and the images/s progress bar that training uses too."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .device import autocast
from .errors import PipelineError
from .model import AlexNet, to_input


def progress_bar(images: int, label: str | None) -> tqdm:
    """A progress bar over `images` images, in images/s, labelled `label`; None shows none."""
    return tqdm(
        total=images, desc=label, unit="img", unit_scale=True, leave=False, mininterval=1.0, disable=label is None
    )


def check_normalization(model_path: str | Path, normalization: dict, split_path: str | Path, split: dict) -> None:
    """Stop unless the model at `model_path` was trained on images normalized as the split at `split_path` is."""
    if (split["mean"], split["std"]) != (normalization["mean"], normalization["std"]):
        raise PipelineError(
            f"{model_path} was trained on images normalized with mean {normalization['mean']}, std "
            f"{normalization['std']}, but {split_path} uses mean {split['mean']}, std {split['std']}; "
            f"rerun the pipeline so both match: dvc repro"
        )


@torch.inference_mode()
def predict(
    model: AlexNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    precision: str,
    progress: str | None = None,
) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy, predicted classes on the CPU) of `model` over `images`.

    `images`/`labels` may live on any device; each batch is moved to the model's device,
    resized there to the model's input size, and its statistics stay there until the end (no
    per-batch host sync). `progress` labels a progress bar in images/s; None shows none.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    predictions = []
    with progress_bar(len(images), progress) as bar:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            y = labels[start : start + batch_size].to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(to_input(x, model.config.image_size)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            predictions.append(logits.argmax(1))
            bar.update(len(x))
    model.train(was_training)
    predicted = torch.cat(predictions).cpu() if predictions else torch.empty(0, dtype=torch.long)
    return loss_sum.item() / max(len(images), 1), predicted


def summarize(loss: float, predicted: torch.Tensor, labels: torch.Tensor) -> dict:
    """The test metrics: accuracy (fraction) and mean loss."""
    return {"accuracy": round((predicted == labels.cpu()).float().mean().item(), 6), "loss": round(loss, 6)}


def per_class_rows(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[dict]:
    """{'digit', 'accuracy' (fraction, None where the class has no image), 'images'} per class."""
    labels = labels.cpu()
    correct = predicted == labels
    rows = []
    for c in range(num_classes):
        mask = labels == c
        accuracy = round(correct[mask].float().mean().item(), 6) if mask.any() else None
        rows.append({"digit": c, "accuracy": accuracy, "images": int(mask.sum())})
    return rows


def confusion_rows(labels: torch.Tensor, predicted: torch.Tensor) -> list[dict]:
    """{'actual', 'predicted'} per image, in the images' order (row i is image i)."""
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(labels, predicted, strict=True)]
