"""The IDX file format of MNIST: parse with full validation, and write (for tests and mirrors)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import PipelineError

UBYTE = 0x08  # the only element type MNIST uses
MNIST_SIDE = 28  # pixels per side of an MNIST image, as stored and as the prepared splits keep it

# The standard names of the four MNIST files (uncompressed)
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


class IdxError(PipelineError):
    pass


def parse_idx(data: bytes, ndim: int, name: str) -> np.ndarray:
    """Parse an IDX byte string of unsigned bytes with `ndim` dimensions; `name` goes in errors."""
    if len(data) < 4 + 4 * ndim:
        raise IdxError(f"{name}: truncated header ({len(data)} bytes); delete it and rerun: dvc repro download")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise IdxError(
            f"{name}: wrong magic number 0x{int.from_bytes(data[:4], 'big'):08x}, expected "
            f"0x{(UBYTE << 8) | ndim:08x} (unsigned bytes, {ndim} dimensions); is this an MNIST file?"
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise IdxError(
            f"{name}: header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(body)}; the file is truncated or corrupted: delete it and rerun: dvc repro download"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_images(path: Path) -> np.ndarray:
    """(N, 28, 28) uint8 images from an idx3 file."""
    images = parse_idx(Path(path).read_bytes(), 3, str(path))
    if images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise IdxError(f"{path}: images are {images.shape[1]}x{images.shape[2]}, expected {MNIST_SIDE}x{MNIST_SIDE}")
    return images


def read_labels(path: Path) -> np.ndarray:
    """(N,) uint8 labels 0..9 from an idx1 file."""
    labels = parse_idx(Path(path).read_bytes(), 1, str(path))
    if labels.size and labels.max() > 9:
        raise IdxError(f"{path}: label {int(labels.max())} is out of range 0..9")
    return labels


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from an idx3 and an idx1 file that must hold the same number of items."""
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"the files do not belong together: delete them and rerun: dvc repro download"
        )
    return images, labels


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array (any number of dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
