"""Atomic file output: write to a temp file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import secrets
from pathlib import Path

from .errors import PipelineError

# Write failures a user fixes by making room, each with its fix; any other error propagates as it is.
FULL = {
    errno.ENOSPC: "free some space on its disk and rerun",
    errno.EDQUOT: "free some space within your disk quota and rerun",
    errno.EFBIG: "the file system or this process's file size limit (ulimit -f) allows no larger file; "
                 "raise the limit or write to another file system, and rerun",
}


class WriteError(PipelineError):
    """An output that could not be written for lack of space; the message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | Path):
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


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """Rows of dicts as a CSV with a header line; floats keep full precision."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
