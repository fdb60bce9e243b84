"""Saved PyTorch objects: atomic torch.save, and torch.load that names the file when it fails."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import PipelineError


def save(path: str | Path, obj) -> None:
    """torch.save `obj` to `path` atomically; lack of space raises atomic's WriteError naming `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = _Output(f)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None  # e.g. ENOSPC, which atomic_path turns into one line naming `path`


class _Output:
    """A file for torch.save that keeps the OSError of a failed write.

    torch.save reports a failed write as a RuntimeError without its cause ("unexpected pos ..."),
    yet the cause (no space left, file too large) is what the user must fix. A file object rather
    than a path also keeps the temp file's random name out of the archive, whose records torch
    names after the file it writes.
    """

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


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
