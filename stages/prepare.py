"""Stage prepare: parse data/raw/ IDX files, hold out a seeded validation split, normalize, and
cache float tensors at 28x28 in data/prepared/{train,val,test}.pt.

Run: python stages/prepare.py (from the project root; dvc repro does this).
"""

from pathlib import Path

from alexnet_mnist import storage
from alexnet_mnist.cli import run_stage
from alexnet_mnist.idx import read_images, read_labels
from alexnet_mnist.params import load_params
from alexnet_mnist.prepare import split

RAW = Path("data/raw")
PREPARED = Path("data/prepared")


def main() -> None:
    (data,) = load_params("params.yaml", "data")
    splits = split(
        read_images(RAW / "train-images-idx3-ubyte"),
        read_labels(RAW / "train-labels-idx1-ubyte"),
        read_images(RAW / "t10k-images-idx3-ubyte"),
        read_labels(RAW / "t10k-labels-idx1-ubyte"),
        data,
    )
    for name, tensors in splits.items():
        storage.save(PREPARED / f"{name}.pt", tensors)
        print(f"{PREPARED / name}.pt: {len(tensors['labels'])} images")


if __name__ == "__main__":
    run_stage(main)
