"""params.yaml loading: the real file loads; unknown keys, wrong types and bad ranges are named."""

import pytest
import yaml
from conftest import ROOT, deep_update

from alexnet_mnist.model import ModelConfig
from alexnet_mnist.params import DataParams, EvaluateParams, ParamsError, PlotParams, TrainParams, load_params

ALL = dict(data=DataParams, model=ModelConfig, train=TrainParams, evaluate=EvaluateParams, plot=PlotParams)


def write(tmp_path, changes=None, text=None):
    path = tmp_path / "params.yaml"
    if text is None:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        text = yaml.safe_dump(deep_update(params, changes or {}))
    path.write_text(text)
    return path


def test_project_params_load_with_the_seed_defaults():
    data, model, train, evaluate, _ = load_params(ROOT / "params.yaml", **ALL)
    assert (data.val_size, data.train_size, data.test_size, data.mean, data.std) == (5000, None, None, 0.1307, 0.3081)
    assert (model.image_size, model.dropout) == (227, 0.5)
    assert (train.epochs, train.batch_size, train.lr, train.seed, train.device) == (10, 64, 0.0005, 42, "auto")
    assert (train.lr_decay, train.shift, train.rotate) == (0.75, 2.0, 10.0)  # the sweep's choice (BENCHMARKS.md)
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
        ({"train": {"lr_decay": 0}}, "train.lr_decay: must be in (0, 1], got 0.0"),
        ({"train": {"lr_decay": 1.5}}, "train.lr_decay: must be in (0, 1], got 1.5"),
        ({"train": {"lr_decay": "fast"}}, "train.lr_decay: must be a number"),
        ({"train": {"shift": -1}}, "train.shift: must be in [0, 8], got -1.0"),
        ({"train": {"shift": 9}}, "train.shift: must be in [0, 8], got 9.0"),
        ({"train": {"rotate": 46}}, "train.rotate: must be in [0, 45], got 46.0"),
    ],
)
def test_bad_params_are_rejected_naming_the_key(tmp_path, changes, message):
    with pytest.raises(ParamsError) as error:
        load_params(write(tmp_path, changes), **ALL)
    assert str(error.value).startswith(f"{tmp_path / 'params.yaml'}: ")
    assert message in str(error.value)


def test_only_the_sections_asked_for_are_built(tmp_path):
    path = write(tmp_path, {"model": {"image_size": 10}})
    (plot,) = load_params(path, plot=PlotParams)  # the plot stage: a bad model section is the train stage's error
    assert plot.dpi == 120
    with pytest.raises(ParamsError, match=r"model\.image_size: 10 is too small"):
        load_params(path, model=ModelConfig)


def test_a_missing_key_is_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["train"]["seed"]
    with pytest.raises(ParamsError, match=r"train\.seed: missing key"):
        load_params(write(tmp_path, text=yaml.safe_dump(params)), train=TrainParams)


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, text="train: [epochs: 1\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: malformed YAML"):
        load_params(path, train=TrainParams)


def test_null_sizes_mean_all_and_ints_are_accepted_as_floats(tmp_path):
    (data,) = load_params(write(tmp_path, {"data": {"train_size": None, "mean": 0}}), data=DataParams)
    assert data.train_size is None and data.mean == 0.0 and isinstance(data.mean, float)
