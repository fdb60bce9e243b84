"""Turn parsed MNIST arrays into the cached splits the trainer wants: seeded hold-out, normalized float tensors."""

from __future__ import annotations

import numpy as np
import torch

from .errors import PipelineError
from .params import DataParams


def normalize(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float32, scaled to 0..1 then standardized."""
    x = torch.from_numpy(np.asarray(images, dtype=np.uint8).copy()).float().div_(255.0)
    return x.sub_(mean).div_(std).unsqueeze(1)


def split_indices(n: int, val_size: int, train_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into n training images, each sorted: a seeded permutation's
    first `val_size` entries are the validation images, the next `train_size` the training ones."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[val_size : val_size + train_size]), np.sort(order[:val_size])


def split(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    params: DataParams,
) -> dict[str, dict[str, torch.Tensor]]:
    """{'train', 'val', 'test'} -> {'images': (N, 1, 28, 28) float32, 'labels': (N,) int64, 'mean', 'std'}.

    The validation set is `params.val_size` images drawn from the training files by a
    permutation seeded with `params.seed`; `train_size`/`test_size` (None = all) trim the rest.
    """
    n = len(train_images)
    if params.val_size >= n:
        raise PipelineError(
            f"params.yaml: data.val_size: {params.val_size} leaves no training images "
            f"(the training files hold {n}); set it below {n}"
        )
    available = n - params.val_size
    train_size = available if params.train_size is None else params.train_size
    if train_size > available:
        raise PipelineError(
            f"params.yaml: data.train_size: {train_size} is more than the {available} images left after "
            f"holding out data.val_size={params.val_size}; set it to at most {available} or null"
        )
    test_size = len(test_images) if params.test_size is None else params.test_size
    if test_size > len(test_images):
        raise PipelineError(
            f"params.yaml: data.test_size: {test_size} is more than the {len(test_images)} test images; "
            f"set it to at most {len(test_images)} or null"
        )
    train_idx, val_idx = split_indices(n, params.val_size, train_size, params.seed)

    def subset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> dict:
        return {
            "images": normalize(images[idx], params.mean, params.std),
            "labels": torch.from_numpy(labels[idx].astype(np.int64)),
            "mean": params.mean,
            "std": params.std,
        }

    return {
        "train": subset(train_images, train_labels, train_idx),
        "val": subset(train_images, train_labels, val_idx),
        "test": subset(test_images, test_labels, np.arange(test_size)),
    }
