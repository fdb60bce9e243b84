"""params.yaml loading: the real file loads; unknown keys, wrong types and bad ranges are named."""

import pytest
import yaml

from alexnet_mnist.params import ParamsError, load_params
from conftest import ROOT, deep_update


def write(tmp_path, changes=None, text=None):
    path = tmp_path / "params.yaml"
    if text is None:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        text = yaml.safe_dump(deep_update(params, changes or {}))
    path.write_text(text)
    return path


def test_project_params_load_with_the_seed_defaults():
    data, model, train, evaluate = load_params(ROOT / "params.yaml", "data", "model", "train", "evaluate")
    assert (data.val_size, data.train_size, data.test_size, data.mean, data.std) == (5000, None, None, 0.1307, 0.3081)
    assert (model.image_size, model.dropout) == (227, 0.5)
    assert (train.epochs, train.batch_size, train.lr, train.seed, train.device) == (10, 64, 0.001, 42, "auto")
    assert evaluate.batch_size == 1000
    assert len(data.mirrors) == 2 and all(m.startswith("http") for m in data.mirrors)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"train": {"epoch": 3}}, "train.epoch: unknown key"),
        ({"train": {"epochs": "ten"}}, "train.epochs: must be an integer, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: must be an integer"),
        ({"train": {"epochs": True}}, "train.epochs: must be an integer"),
        ({"train": {"epochs": 0}}, "train.epochs: must be a positive integer, got 0"),
        ({"train": {"batch_size": -1}}, "train.batch_size: must be a positive integer"),
        ({"train": {"lr": 0}}, "train.lr: must be positive"),
        ({"train": {"device": "tpu"}}, "train.device: 'tpu' is not one of auto, cpu, cuda"),
        ({"train": {"precision": "fp16"}}, "train.precision: 'fp16' is not one of"),
        ({"model": {"image_size": 66}}, "model.image_size: 66 is too small for AlexNet: the minimum is 67"),
        ({"model": {"dropout": 1.0}}, "model.dropout: must be in [0, 1)"),
        ({"data": {"mirrors": "http://x/"}}, "data.mirrors: must be a list"),
        ({"data": {"train_size": 0}}, "data.train_size: must be null (all) or at least 1"),
        ({"data": {"std": 0}}, "data.std: must be positive"),
        ({"extra": {"a": 1}}, "unknown section 'extra'"),
    ],
)
def test_bad_params_are_rejected_naming_the_key(tmp_path, changes, message):
    with pytest.raises(ParamsError) as error:
        load_params(write(tmp_path, changes), "train")
    assert message in str(error.value)


def test_a_missing_key_is_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["train"]["seed"]
    with pytest.raises(ParamsError, match=r"train\.seed: missing key"):
        load_params(write(tmp_path, text=yaml.safe_dump(params)), "train")


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, text="train: [epochs: 1\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: malformed YAML"):
        load_params(path, "train")


def test_null_sizes_mean_all_and_ints_are_accepted_as_floats(tmp_path):
    (data,) = load_params(write(tmp_path, {"data": {"train_size": None, "mean": 0}}), "data")
    assert data.train_size is None and data.mean == 0.0 and isinstance(data.mean, float)
