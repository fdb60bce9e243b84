"""Saved PyTorch objects: atomic torch.save, and torch.load that names the file when it fails."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import PipelineError


def save(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path, what: str, fix: str) -> dict:
    """Load the dict saved at `path` (plain tensors and Python values only, no code).

    `what` names the expected content and `fix` the command that remakes it, for errors.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; {fix}") from None
    except Exception as e:  # a torn or foreign file raises many types
        raise PipelineError(f"{path}: cannot be read as {what} ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: holds {type(obj).__name__}, not {what}; {fix}")
    return obj
