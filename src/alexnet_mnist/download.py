"""Fetch the four MNIST files from a list of sources, verifying each by the SHA-256 of its content."""

from __future__ import annotations

import gzip
import hashlib
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from .errors import PipelineError
from .idx import MNIST_FILES
from .storage import atomic_path

MIRROR_ENV = "MNIST_MIRROR"
TIMEOUT = 30  # seconds without data before a URL source is given up
CHUNK = 1 << 16  # bytes read at a time


class DownloadError(PipelineError):
    pass


class SupportsRead(Protocol):  # an open file or an HTTP response
    def read(self, size: int, /) -> bytes: ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checksums(path: Path) -> dict[str, str]:
    """name -> SHA-256 from a `sha256sum`-format file (`<hex digest>  <name>` per line)."""
    checksums = {}
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise DownloadError(f"{path}: not found; it lists the SHA-256 of each MNIST file") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name.strip():
            raise DownloadError(f"{path}, line {number}: {line!r} is not '<64 hex digits>  <file name>'")
        checksums[name.strip()] = digest
    if sorted(checksums) != sorted(MNIST_FILES):
        raise DownloadError(
            f"{path}: must list exactly {', '.join(MNIST_FILES)}; lists {', '.join(checksums) or 'none'}"
        )
    return checksums


def sources(env_mirror: str | None, mirrors: Iterable[str]) -> list[str]:
    """The sources to try, in order: `env_mirror` (a folder or URL base) first, then `mirrors`."""
    found = []
    if env_mirror:
        if "://" not in env_mirror and not Path(env_mirror).is_dir():
            raise DownloadError(
                f"{MIRROR_ENV}={env_mirror}: no such directory; point it at the folder that holds "
                f"the four MNIST files (.gz or uncompressed), or unset it to use data.mirrors"
            )
        found.append(env_mirror)
    found.extend(mirrors)
    return found


def _read_all(stream: SupportsRead, total: int | None, desc: str) -> bytes:
    """Read a binary stream to the end, showing a progress bar in bytes."""
    parts = []
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        while chunk := stream.read(CHUNK):
            parts.append(chunk)
            bar.update(len(chunk))
    return b"".join(parts)


def _fetch(source: str, filename: str) -> bytes:
    """The raw bytes of `filename` in a folder or under a URL base; raises OSError when absent."""
    if "://" not in source:
        path = Path(source) / filename
        with open(path, "rb") as f:
            return _read_all(f, path.stat().st_size, filename)
    url = source.rstrip("/") + "/" + filename
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        length = response.headers.get("Content-Length")
        return _read_all(response, int(length) if length else None, filename)


def _try_source(source: str, name: str, expected: str) -> tuple[bytes | None, str]:
    """Try `name`.gz then `name` at `source`: (verified content, '') or (None, why it failed)."""
    reasons = []
    for filename, compressed in ((name + ".gz", True), (name, False)):
        try:
            data = _fetch(source, filename)
        except urllib.error.HTTPError as e:
            reasons.append(f"{filename}: HTTP {e.code} {e.reason}")
            continue
        except (OSError, ValueError) as e:  # URLError is an OSError
            reasons.append(f"{filename}: {getattr(e, 'reason', None) or e}")
            continue
        if compressed:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as e:
                reasons.append(f"{filename}: not a valid gzip file ({e})")
                continue
        digest = sha256(data)
        if digest == expected:
            return data, ""
        reasons.append(f"{filename}: SHA-256 {digest[:12]}... does not match the expected {expected[:12]}...")
    return None, "; ".join(reasons)


def download(
    out_dir: Path,
    checksums: dict[str, str],
    source_list: list[str],
) -> list[Path]:
    """Put each file of `checksums` (name -> SHA-256 of its uncompressed content) in `out_dir`.

    Each file is tried at every source in order; a file failing verification is discarded.
    Files land by atomic rename, so `out_dir` never holds a partial file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, expected in checksums.items():
        target = out_dir / name
        if target.is_file() and sha256(target.read_bytes()) == expected:
            written.append(target)
            continue
        failures = []
        for source in source_list:
            data, why = _try_source(source, name, expected)
            if data is not None:
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
                print(f"{name}: verified, from {source}")
                written.append(target)
                break
            failures.append(f"  {source}: {why}")
        else:
            tried = "\n".join(failures) or "  (no sources: data.mirrors is empty and MNIST_MIRROR is unset)"
            raise DownloadError(
                f"could not get {name} from any source:\n{tried}\n"
                f"To run offline, point {MIRROR_ENV} at a folder holding the MNIST files, e.g. "
                f"{MIRROR_ENV}=/path/to/mnist dvc repro"
            )
    return written
