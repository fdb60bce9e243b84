"""Figures of a run: loss and accuracy per epoch, the test confusion matrix, misclassified digits.

Never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import PipelineError
from .params import PlotParams
from .storage import atomic_path


def read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The CSV at `path`, which must have `columns` and at least one row."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run the stage that writes it first (dvc repro)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not a readable CSV ({e}); rerun dvc repro -f") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise PipelineError(f"{path}: needs columns {', '.join(columns)} and at least one row; rerun dvc repro -f")
    return frame


def curves_figure(history: pd.DataFrame, params: PlotParams) -> Figure:
    """Loss (left) and accuracy in % (right) per epoch, train and validation."""
    fig = Figure(figsize=(params.width, params.height), dpi=params.dpi)
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    for ax, key, scale, label in (
        (loss_ax, "loss", 1, "cross-entropy loss"),
        (accuracy_ax, "accuracy", 100, "accuracy (%)"),
    ):
        ax.plot(history["epoch"], scale * history[f"train_{key}"], marker="o", label="train")
        ax.plot(history["epoch"], scale * history[f"val_{key}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(history["epoch"])
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("AlexNet on MNIST: loss and accuracy per epoch")
    fig.tight_layout()
    return fig


def confusion_figure(confusion: pd.DataFrame, params: PlotParams, num_classes: int = 10) -> Figure:
    """Counts of (actual, predicted) test labels as a heat map, with the counts written in."""
    counts = (
        pd.crosstab(confusion["actual"], confusion["predicted"])
        .reindex(index=range(num_classes), columns=range(num_classes), fill_value=0)
        .to_numpy()
    )
    fig = Figure(figsize=(params.height + 1, params.height), dpi=params.dpi)
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="test images")
    threshold = counts.max() / 2 if counts.size else 0
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if n > threshold else "black")
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("actual digit")
    ax.set_title(f"Test confusion matrix ({counts.sum()} images)")
    fig.tight_layout()
    return fig


def misclassified_figure(images: np.ndarray, confusion: pd.DataFrame, params: PlotParams, count: int = 40) -> Figure:
    """The first `count` misclassified test digits, each titled with its true and predicted label.

    `confusion` holds (actual, predicted) per test image in test-file order, so row i is image i.
    """
    actual, predicted = confusion["actual"].to_numpy(), confusion["predicted"].to_numpy()
    wrong = np.flatnonzero(actual != predicted)[:count]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))  # ceil
    fig = Figure(figsize=(params.width, 0.85 * rows + 0.6), dpi=params.dpi)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):  # the grid's last row may have empty cells
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{actual[i]} as {predicted[i]}", fontsize=8)
    total = int((actual != predicted).sum())
    fig.suptitle(
        f"Misclassified test digits: the first {len(wrong)} of {total} (true as predicted)"
        if total
        else f"No misclassified digits among {len(confusion)} test images",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
