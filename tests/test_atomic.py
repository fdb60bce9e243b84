"""Atomic outputs: a failed or killed write leaves the old file, never a torn one or a temp file."""

import os
import stat
import subprocess
import time

import pytest
import torch
from conftest import BIN, set_limits

from alexnet_mnist import storage
from alexnet_mnist.storage import atomic_path, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_kill_at_any_moment_leaves_old_or_new(tmp_path):
    """A writer killed at random moments while it replaces a 20 MB file: never a torn file."""
    target = tmp_path / "big.bin"
    old, new = b"a" * 20_000_000, b"b" * 20_000_000
    target.write_bytes(old)
    script = (
        "import sys; from alexnet_mnist.storage import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        for _ in range(20): f.write(b'b' * 1_000_000); f.flush()\n"
    )
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        proc = subprocess.Popen([str(BIN / "python"), "-c", script, str(target)])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert target.read_bytes() in (old, new)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_permissions_of_a_plain_open(tmp_path, umask, mode):
    """0666 less the umask, as open() gives, so teammates sharing the project or its cache can read them."""
    old = os.umask(umask)
    try:
        write_text(tmp_path / "out.json", "{}")
        storage.save(tmp_path / "out.pt", {"x": torch.zeros(3)})
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"out.json": mode, "out.pt": mode, "plain": mode}


LIMIT = 100_000  # bytes a child may write per file: beyond it, writes fail (EFBIG) as on a full disk (ENOSPC)
WRITE = f"""
import sys, torch
from alexnet_mnist import storage
kind, path = sys.argv[1:]
try:
    if kind == "text":
        storage.write_text(path, "x" * 2 * {LIMIT})
    elif kind == "csv":
        storage.write_csv(path, [{{"a": i}} for i in range({LIMIT})], ("a",))
    else:
        storage.save(path, {{"weights": torch.zeros({LIMIT})}})
except storage.WriteError as e:
    print(e)
"""


@pytest.mark.parametrize("kind", ["text", "csv", "torch"])
def test_a_write_beyond_the_space_left_keeps_the_old_file_and_names_it(tmp_path, kind):
    target = tmp_path / "out"
    write_text(target, "old")
    result = subprocess.run(
        [str(BIN / "python"), "-c", WRITE, kind, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: set_limits({"RLIMIT_FSIZE": LIMIT}),
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == f"{target}: could not be written: File too large; the file system or this "
        "process's file size limit (ulimit -f) allows no larger file; raise the "
        "limit or write to another file system, and rerun"
    )
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]
