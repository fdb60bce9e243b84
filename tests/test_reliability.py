"""Reproducibility, resume after a kill, bad input at every stage, atomic outputs, queued experiments."""

import csv
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from alexnet_mnist.atomic import atomic_path, write_text
from alexnet_mnist.device import resolve_device
from alexnet_mnist.errors import PipelineError
from alexnet_mnist.idx import encode_idx
from alexnet_mnist.params import DataParams
from alexnet_mnist.prepare import split
from conftest import BIN, assert_same_weights, make_project, synthetic_mnist, tiny_params, write_mnist


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def history_without_seconds(path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def fail_line(result) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- reproducibility and resume

@pytest.mark.slow
def test_two_runs_give_identical_weights_and_metrics(tmp_path):
    checksums = write_mnist(tmp_path / "mirror")
    runs = []
    for name in ("a", "b"):
        project = make_project(tmp_path / name, tmp_path / "mirror", checksums, tiny_params(train={"epochs": 2}))
        project.dvc("repro")
        runs.append(project.path)
    a, b = runs
    assert_same_weights(weights(a / "models/model.pt"), weights(b / "models/model.pt"))
    assert (a / "metrics/eval.json").read_bytes() == (b / "metrics/eval.json").read_bytes()
    assert (a / "metrics/confusion.csv").read_bytes() == (b / "metrics/confusion.csv").read_bytes()
    assert history_without_seconds(a / "metrics/accuracy.csv") == history_without_seconds(b / "metrics/accuracy.csv")
    recorded = json.loads((a / "metrics/eval.json").read_text())
    assert {"device", "precision", "torch_version", "threads"} <= set(recorded)


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path):
    checksums = write_mnist(tmp_path / "mirror", n_train=600)
    params = tiny_params(data={"train_size": 512}, train={"epochs": 3})
    straight = make_project(tmp_path / "straight", tmp_path / "mirror", checksums, params)
    straight.dvc("repro")

    project = make_project(tmp_path / "killed", tmp_path / "mirror", checksums, params)
    proc = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=project.path, env=project.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = project.path / "models/checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), "training never saved a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the train stage under it, mid-epoch 2
    proc.wait()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert len(saved["history"]) == 1 and not (project.path / "models/model.pt").exists()

    rerun = project.dvc("repro")
    assert "resuming from models/checkpoint.pt: 1 of 3 epochs already done" in rerun.stdout
    assert_same_weights(weights(straight.path / "models/model.pt"), weights(project.path / "models/model.pt"))
    assert history_without_seconds(straight.path / "metrics/accuracy.csv") == \
        history_without_seconds(project.path / "metrics/accuracy.csv")


# ---------------------------------------------------------------- bad input, stage by stage

def data_params(**changes) -> DataParams:
    base = dict(mirrors=(), val_size=20, train_size=None, test_size=None, seed=0, mean=0.1307, std=0.3081)
    return DataParams(**{**base, **changes})


@pytest.mark.parametrize("changes, n_labels, message", [
    ({}, 99, "holds 100 images but data/raw/train-labels-idx1-ubyte holds 99 labels"),
    ({"val_size": 100}, 100, "data.val_size: 100 leaves no training images (the training files hold 100)"),
    ({"train_size": 81}, 100, "data.train_size: 81 is more than the 80 images left"),
    ({"test_size": 51}, 100, "data.test_size: 51 is more than the 50 test images"),
])
def test_prepare_rejects_inconsistent_data_and_sizes(changes, n_labels, message):
    images, labels = synthetic_mnist(100, 0)
    test_images, test_labels = synthetic_mnist(50, 1)
    with pytest.raises(PipelineError) as error:
        split(images, labels[:n_labels], test_images, test_labels, data_params(**changes))
    assert message in str(error.value)


def test_prepare_sizes_and_split_are_as_asked():
    images, labels = synthetic_mnist(100, 0)
    test_images, test_labels = synthetic_mnist(50, 1)
    splits = split(images, labels, test_images, test_labels, data_params(train_size=30, test_size=10))
    assert [len(splits[k]["labels"]) for k in ("train", "val", "test")] == [30, 20, 10]
    assert splits["train"]["images"].shape == (30, 1, 28, 28) and splits["train"]["images"].dtype == torch.float32
    again = split(images, labels, test_images, test_labels, data_params(train_size=30, test_size=10))
    assert torch.equal(splits["val"]["images"], again["val"]["images"])  # seeded


@pytest.mark.slow
def test_prepare_stage_names_a_truncated_file_and_writes_nothing(project):
    assert project.stage("download").returncode == 0
    raw = project.path / "data/raw/t10k-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-100])
    line = fail_line(project.stage("prepare"))
    assert "data/raw/t10k-images-idx3-ubyte" in line and "truncated" in line
    assert not (project.path / "data/prepared").exists()


@pytest.mark.slow
def test_prepare_stage_names_a_wrong_magic_number(project):
    assert project.stage("download").returncode == 0
    (project.path / "data/raw/train-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros((5, 28, 28))))
    line = fail_line(project.stage("prepare"))
    assert "train-labels-idx1-ubyte: wrong magic number 0x00000803" in line


@pytest.mark.slow
def test_params_errors_stop_stages_with_one_line(project):
    params = (project.path / "params.yaml").read_text()
    (project.path / "params.yaml").write_text(params.replace("epochs: 1", "epochs: -2"))
    assert "train.epochs: must be a positive integer, got -2" in fail_line(project.stage("train"))
    (project.path / "params.yaml").write_text(params + "\n  bogus: [\n")
    assert "params.yaml: malformed YAML" in fail_line(project.stage("plot"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_an_error_not_a_fallback():
    with pytest.raises(PipelineError, match="train.device: 'cuda' was asked for but PyTorch sees no CUDA"):
        resolve_device("cuda", "train.device")


@pytest.mark.slow
def test_train_and_evaluate_stage_errors(project):
    assert project.stage("download").returncode == 0 and project.stage("prepare").returncode == 0
    params = (project.path / "params.yaml").read_text()

    # Evaluate before any model exists
    assert "models/model.pt: not found; rerun the train stage" in fail_line(project.stage("evaluate"))

    # Diverging loss: inputs scaled by 1e30 overflow to inf; no model is written
    project.write_params(tiny_params(data={"std": 1e-30}))
    assert project.stage("prepare").returncode == 0
    line = fail_line(project.stage("train"))
    assert "NaN or infinite at epoch 1, step 1 of" in line and "lower train.lr" in line
    assert not (project.path / "models/model.pt").exists()

    # cuda asked for on a machine without it
    if not torch.cuda.is_available():
        project.write_params(tiny_params(train={"device": "cuda"}))
        assert "train.device: 'cuda' was asked for" in fail_line(project.stage("train"))

    # A model whose normalization does not match the test data
    (project.path / "params.yaml").write_text(params)
    assert project.stage("prepare").returncode == 0 and project.stage("train").returncode == 0
    project.write_params(tiny_params(data={"mean": 0.5}))
    assert project.stage("prepare").returncode == 0
    assert "was trained on images normalized with mean 0.1307" in fail_line(project.stage("evaluate"))

    # A corrupted (truncated) model file
    (project.path / "params.yaml").write_text(params)
    assert project.stage("prepare").returncode == 0
    model = project.path / "models/model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    line = fail_line(project.stage("evaluate"))
    assert "models/model.pt: cannot be read as an AlexNet model file" in line
    assert not (project.path / "metrics/eval.json").exists()


# ---------------------------------------------------------------- atomic outputs

def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_kill_at_any_moment_leaves_old_or_new(tmp_path):
    """A writer killed at random moments while it replaces a 20 MB file: never a torn file."""
    target = tmp_path / "big.bin"
    old, new = b"a" * 20_000_000, b"b" * 20_000_000
    target.write_bytes(old)
    script = (
        "import sys; from alexnet_mnist.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        for _ in range(20): f.write(b'b' * 1_000_000); f.flush()\n"
    )
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        proc = subprocess.Popen([str(BIN / "python"), "-c", script, str(target)])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert target.read_bytes() in (old, new)


# ---------------------------------------------------------------- concurrency

@pytest.mark.slow
def test_two_queued_experiments_run_in_parallel_with_their_own_results(tmp_path):
    checksums = write_mnist(tmp_path / "mirror")
    project = make_project(tmp_path / "p", tmp_path / "mirror", checksums, tiny_params())
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline")
    project.dvc("exp", "run", "--queue", "-n", "q-lr", "-S", "train.lr=0.002")
    project.dvc("exp", "run", "--queue", "-n", "q-seed", "-S", "train.seed=5")
    project.dvc("queue", "start", "-j", "2")
    deadline = time.time() + 600
    while time.time() < deadline:
        status = project.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    rows = json.loads(project.dvc("exp", "show", "--json").stdout)
    found = {}
    for commit in rows:
        for exp in commit.get("experiments") or []:
            (revision,) = exp["revs"]
            data = revision["data"]
            found[exp["name"]] = (data["params"]["params.yaml"]["data"]["train"],
                                  data["metrics"]["metrics/eval.json"]["data"])
    assert found["q-lr"][0]["lr"] == 0.002 and found["q-lr"][0]["seed"] == 42
    assert found["q-seed"][0]["seed"] == 5 and found["q-seed"][0]["lr"] == 0.001
    assert found["q-lr"][1]["samples"] == found["q-seed"][1]["samples"] == 100
    assert found["q-lr"][1] != found["q-seed"][1]  # each trained its own model
