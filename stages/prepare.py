"""Stage prepare: parse the raw MNIST IDX files, hold out a seeded validation split, normalize, and
cache float tensors at 28x28 for the train, validation and test splits.

Run by dvc repro with the paths in dvc.yaml; `python stages/prepare.py --help` lists them.
"""

from alexnet_mnist import storage
from alexnet_mnist.cli import run_stage, stage_paths
from alexnet_mnist.idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_pair
from alexnet_mnist.params import DataParams, load_params
from alexnet_mnist.prepare import split


def main() -> None:
    paths = stage_paths(__doc__, "raw", "train", "val", "test")
    (data,) = load_params("params.yaml", data=DataParams)
    splits = split(
        *read_pair(paths.raw / TRAIN_IMAGES, paths.raw / TRAIN_LABELS),
        *read_pair(paths.raw / TEST_IMAGES, paths.raw / TEST_LABELS),
        data,
    )
    for name, tensors in splits.items():
        storage.save_split(getattr(paths, name), tensors)
        print(f"{getattr(paths, name)}: {len(tensors['labels'])} images")


if __name__ == "__main__":
    run_stage(main)
