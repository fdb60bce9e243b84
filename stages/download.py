"""Stage download: fetch the four MNIST files into data/raw/, each verified by SHA-256.

Sources, in order: $MNIST_MIRROR (a folder or URL base) if set, then params data.mirrors.
Run: python stages/download.py (from the project root; dvc repro does this).
"""

import os
from pathlib import Path

from alexnet_mnist.cli import run_stage
from alexnet_mnist.download import MIRROR_ENV, download, sources
from alexnet_mnist.params import load_params

RAW = Path("data/raw")


def main() -> None:
    (data,) = load_params("params.yaml", "data")
    download(RAW, data.sha256, sources(os.environ.get(MIRROR_ENV), data.mirrors))


if __name__ == "__main__":
    run_stage(main)
