"""Saving and loading files: atomic writes (text, JSON, CSV, torch), torch.load that names the file, the split files.

Every output is written to a temp file beside the target, then renamed over it. torch is imported
only by the functions that need it, so the stages that write text and images (download, plot)
never load it.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from .errors import PipelineError

# Write failures a user fixes by making room, each with its fix; any other error propagates as it is.
FULL = {
    errno.ENOSPC: "free some space on its disk and rerun",
    errno.EDQUOT: "free some space within your disk quota and rerun",
    errno.EFBIG: "the file system or this process's file size limit (ulimit -f) allows no larger file; "
    "raise the limit or write to another file system, and rerun",
}

# The CSVs one stage writes and another reads (the plot stage, which never imports torch)
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")  # one row per epoch
CONFUSION_COLUMNS = ("actual", "predicted")  # one row per test image, in test-file order
PER_CLASS_COLUMNS = ("digit", "accuracy", "images")  # test accuracy per digit, and how many test images it has

SPLIT_KEYS = ("images", "labels", "mean", "std")  # a split file: (N, 1, 28, 28) float32, (N,) int64, floats
REMAKE_SPLIT = "rerun the prepare stage: dvc repro -f prepare"


class WriteError(PipelineError):
    """An output that could not be written for lack of space; the message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it to `path`, else delete it.

    A kill at any moment leaves either the old file or the new one, never a torn one
    (rename within one folder is atomic on POSIX). The file gets the permissions of a plain
    open(): 0666 less the umask. A disk, quota or file size limit running out raises a
    WriteError naming `path`, and the old file stays as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in FULL:
            raise WriteError(f"{path}: could not be written: {os.strerror(e.errno)}; {FULL[e.errno]}") from None
        raise


def _create_temp(path: Path) -> Path:
    """A new empty file `.<name>.<random>.tmp` beside `path`, with mode 0666 less the umask.

    Not tempfile.mkstemp: its files are 0600, which the rename would carry over to the output,
    unreadable to others sharing the project or its DVC cache.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
            return tmp
        except FileExistsError:  # another writer's temp file: draw another name
            continue


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """Rows of dicts as a CSV with a header line; floats keep full precision."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def save(path: str | Path, obj: Any) -> None:
    """torch.save `obj` to `path` atomically; lack of space raises a WriteError naming `path`."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = _Output(f)
        try:
            torch.save(obj, cast(IO[bytes], out))  # duck-typed: torch.save calls write and flush only
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

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.error = file, cast(OSError | None, None)

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def load(path: str | Path, what: str, fix: str, keys: Iterable[str] = ()) -> dict:
    """Load the dict saved at `path` (plain tensors and Python values only, no code), which must hold `keys`.

    `what` names the expected content and `fix` the command that remakes it, for errors.
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; {fix}") from None
    except Exception as e:  # noqa: BLE001 -- a torn or foreign file raises many types
        raise PipelineError(f"{path}: cannot be read as {what} ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: holds {type(obj).__name__}, not {what}; {fix}")
    missing = set(keys) - set(obj)
    if missing:
        raise PipelineError(f"{path}: lacks {', '.join(sorted(missing))}; {fix}")
    return obj


def save_split(path: str | Path, split: dict) -> None:
    """Write a split made by prepare.split: {'images', 'labels', 'mean', 'std'}."""
    save(path, {key: split[key] for key in SPLIT_KEYS})


def load_split(path: str | Path) -> dict:
    """A split saved by the prepare stage: {'images', 'labels', 'mean', 'std'}."""
    return load(path, "a prepared MNIST split", REMAKE_SPLIT, SPLIT_KEYS)
