"""Atomic outputs: a failed or killed write leaves the old file, never a torn one or a temp file."""

import subprocess
import time

import pytest

from alexnet_mnist.atomic import atomic_path, write_text
from conftest import BIN


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_kill_at_any_moment_leaves_old_or_new(tmp_path):
    """A writer killed at random moments while it replaces a 20 MB file: never a torn file."""
    target = tmp_path / "big.bin"
    old, new = b"a" * 20_000_000, b"b" * 20_000_000
    target.write_bytes(old)
    script = (
        "import sys; from alexnet_mnist.atomic import atomic_path\n"
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

