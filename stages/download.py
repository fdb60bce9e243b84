"""Stage download: fetch the four MNIST files into the raw-data folder, each verified by the SHA-256
listed in the checksums file.

Sources, in order: $MNIST_MIRROR (a folder or URL base) if set, then params data.mirrors.
Run by dvc repro with the paths in dvc.yaml; `python stages/download.py --help` lists them.
"""

import os

from alexnet_mnist.cli import run_stage, stage_paths
from alexnet_mnist.download import MIRROR_ENV, download, read_checksums, sources
from alexnet_mnist.params import DataParams, load_params


def main() -> None:
    paths = stage_paths(__doc__, "checksums", "raw")
    (data,) = load_params("params.yaml", data=DataParams)
    download(paths.raw, read_checksums(paths.checksums), sources(os.environ.get(MIRROR_ENV), data.mirrors))


if __name__ == "__main__":
    run_stage(main)
