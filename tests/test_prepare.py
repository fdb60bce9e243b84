"""The prepare step: split sizes and seeding, and clear errors for inconsistent or damaged raw files."""

import numpy as np
import pytest
import torch
from conftest import PATHS, fail_line, synthetic_mnist

from alexnet_mnist.errors import PipelineError
from alexnet_mnist.idx import TEST_IMAGES, TRAIN_LABELS, encode_idx, read_pair
from alexnet_mnist.params import DataParams
from alexnet_mnist.prepare import split
from alexnet_mnist.storage import load_split, save_split


def data_params(**changes) -> DataParams:
    base = dict(mirrors=(), val_size=20, train_size=None, test_size=None, seed=0, mean=0.1307, std=0.3081)
    return DataParams(**{**base, **changes})


def test_images_and_labels_of_different_counts_name_both_files(tmp_path):
    images, labels = synthetic_mnist(100, 0)
    (tmp_path / "images").write_bytes(encode_idx(images))
    (tmp_path / "labels").write_bytes(encode_idx(labels[:99]))
    with pytest.raises(PipelineError) as error:
        read_pair(tmp_path / "images", tmp_path / "labels")
    assert f"{tmp_path / 'images'} holds 100 images but {tmp_path / 'labels'} holds 99 labels" in str(error.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"val_size": 100}, "data.val_size: 100 leaves no training images (the training files hold 100)"),
        ({"train_size": 81}, "data.train_size: 81 is more than the 80 images left"),
        ({"test_size": 51}, "data.test_size: 51 is more than the 50 test images"),
    ],
)
def test_prepare_rejects_sizes_the_data_cannot_give(changes, message):
    images, labels = synthetic_mnist(100, 0)
    test_images, test_labels = synthetic_mnist(50, 1)
    with pytest.raises(PipelineError) as error:
        split(images, labels, test_images, test_labels, data_params(**changes))
    assert message in str(error.value)


def test_prepare_sizes_and_split_are_as_asked():
    images, labels = synthetic_mnist(100, 0)
    test_images, test_labels = synthetic_mnist(50, 1)
    splits = split(images, labels, test_images, test_labels, data_params(train_size=30, test_size=10))
    assert [len(splits[k]["labels"]) for k in ("train", "val", "test")] == [30, 20, 10]
    assert splits["train"]["images"].shape == (30, 1, 28, 28) and splits["train"]["images"].dtype == torch.float32
    again = split(images, labels, test_images, test_labels, data_params(train_size=30, test_size=10))
    assert torch.equal(splits["val"]["images"], again["val"]["images"])  # seeded


def test_a_split_round_trips_and_a_file_lacking_keys_names_them(tmp_path):
    images, labels = synthetic_mnist(100, 0)
    splits = split(images, labels, images[:10], labels[:10], data_params())
    save_split(tmp_path / "val.pt", splits["val"])
    loaded = load_split(tmp_path / "val.pt")
    assert torch.equal(loaded["images"], splits["val"]["images"]) and loaded["mean"] == 0.1307
    torch.save({"images": loaded["images"], "labels": loaded["labels"]}, tmp_path / "old.pt")
    with pytest.raises(PipelineError) as error:
        load_split(tmp_path / "old.pt")
    assert str(error.value) == f"{tmp_path / 'old.pt'}: lacks mean, std; rerun the prepare stage: dvc repro -f prepare"


@pytest.mark.slow
def test_prepare_stage_names_a_truncated_file_and_writes_nothing(project):
    assert project.stage("download").returncode == 0
    raw = project.path / PATHS["raw"] / TEST_IMAGES
    raw.write_bytes(raw.read_bytes()[:-100])
    line = fail_line(project.stage("prepare"))
    assert f"{PATHS['raw']}/{TEST_IMAGES}" in line and "truncated" in line
    assert not any((project.path / PATHS[split]).exists() for split in ("train_set", "val_set", "test_set"))


@pytest.mark.slow
def test_prepare_stage_names_a_wrong_magic_number(project):
    assert project.stage("download").returncode == 0
    (project.path / PATHS["raw"] / TRAIN_LABELS).write_bytes(encode_idx(np.zeros((5, 28, 28))))
    line = fail_line(project.stage("prepare"))
    assert "train-labels-idx1-ubyte: wrong magic number 0x00000803" in line
