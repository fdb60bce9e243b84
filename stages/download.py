"""Stage download: fetch the four MNIST files into data/raw/, each verified by the SHA-256
listed in mnist.sha256.

Sources, in order: $MNIST_MIRROR (a folder or URL base) if set, then params data.mirrors.
Run: python stages/download.py (from the project root; dvc repro does this).
"""

import os
from pathlib import Path

from alexnet_mnist.cli import run_stage
from alexnet_mnist.download import MIRROR_ENV, download, read_checksums, sources
from alexnet_mnist.params import load_params

RAW = Path("data/raw")
CHECKSUMS = Path("mnist.sha256")


def main() -> None:
    (data,) = load_params("params.yaml", "data")
    download(RAW, read_checksums(CHECKSUMS), sources(os.environ.get(MIRROR_ENV), data.mirrors))


if __name__ == "__main__":
    run_stage(main)
