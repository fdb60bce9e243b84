"""Several processes through torchrun (gloo on CPU): one set of outputs, the accuracy of one process."""

import json

import pytest
from conftest import PATHS, make_project, tiny_params, write_mnist

pytestmark = pytest.mark.slow

VAL_ACCURACY_TOLERANCE = 0.05  # absolute: 2 processes vs 1, same data, seed and global batch
# a low, decaying lr: both runs settle, so the comparison is not of two points on a noisy curve
SETTINGS = dict(data={"train_size": 512, "val_size": 128}, train={"epochs": 4, "lr": 0.0003, "lr_decay": 0.5})


def val_metrics(project) -> dict:
    return json.loads((project.path / PATHS["val_metrics"]).read_text())


def test_two_processes_match_one_through_dvc_repro(tmp_path):
    checksums = write_mnist(tmp_path / "mirror", n_train=700)
    single = make_project(tmp_path / "single", tmp_path / "mirror", checksums, tiny_params(**SETTINGS))
    single.dvc("repro")
    params = tiny_params(**SETTINGS)
    params["train"]["nproc"] = 2
    multi = make_project(tmp_path / "multi", tmp_path / "mirror", checksums, params)
    result = multi.dvc("repro")

    assert "starting 2 processes" in result.stdout
    assert result.stdout.count("epoch 1/4: train loss") == 1  # one process reports
    one, two = val_metrics(single), val_metrics(multi)
    processes = [json.loads((p.path / PATHS["run_info"]).read_text())["train"]["processes"] for p in (single, multi)]
    assert processes == [1, 2]
    print(f"val accuracy: 1 process {one['accuracy']}, 2 processes {two['accuracy']}")
    assert one["accuracy"] > 0.5  # it learned: the comparison means something
    assert abs(two["accuracy"] - one["accuracy"]) <= VAL_ACCURACY_TOLERANCE
    assert sorted((multi.path / "models").iterdir()) == sorted(
        multi.path / PATHS[k] for k in ("checkpoint", "model", "onnx")
    )
    assert not any(p.name.endswith(".tmp") for p in multi.path.rglob("*"))

    # raising epochs resumes with two processes too
    more = multi.dvc("exp", "run", "-S", "train.epochs=5")
    assert f"resuming from {PATHS['checkpoint']}: 4 of 5 epochs already done" in more.stdout


def test_a_failing_process_fails_the_stage_and_writes_nothing(tmp_path):
    checksums = write_mnist(tmp_path / "mirror")
    params = tiny_params(data={"std": 1e-40})  # inputs overflow to inf: every step's loss is NaN
    params["train"]["nproc"] = 2
    project = make_project(tmp_path / "p", tmp_path / "mirror", checksums, params)
    result = project.dvc("repro", check=False)
    assert result.returncode != 0
    assert "NaN or infinite at epoch 1, step 1 of" in result.stderr + result.stdout
    assert not (project.path / PATHS["model"]).exists()
    assert not (project.path / PATHS["train_metrics"]).exists()
