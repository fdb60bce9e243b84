"""Bad params and bad files stop each stage with one clear line, and nothing half-written."""

import re

import pytest
import torch
from conftest import PATHS, fail_line, make_project, tiny_params, write_mnist

from alexnet_mnist import memory
from alexnet_mnist.model import ModelConfig

pytestmark = pytest.mark.slow


def test_params_errors_stop_stages_with_one_line(project):
    params = (project.path / "params.yaml").read_text()
    (project.path / "params.yaml").write_text(params.replace("epochs: 1", "epochs: -2"))
    assert "train.epochs: must be a positive integer, got -2" in fail_line(project.stage("train"))
    (project.path / "params.yaml").write_text(params + "\n  bogus: [\n")
    assert "params.yaml: malformed YAML" in fail_line(project.stage("plot"))


def test_train_and_evaluate_stage_errors(project):
    assert project.stage("download").returncode == 0 and project.stage("prepare").returncode == 0
    params = (project.path / "params.yaml").read_text()

    # Evaluate before any model exists
    assert f"{PATHS['model']}: not found; rerun the train stage" in fail_line(project.stage("evaluate"))

    # Diverging loss: inputs divided by std 1e-40 overflow to inf; no model is written
    project.write_params(tiny_params(data={"std": 1e-40}))
    assert project.stage("prepare").returncode == 0
    line = fail_line(project.stage("train"))
    assert "NaN or infinite at epoch 1, step 1 of" in line and "lower train.lr" in line
    assert not (project.path / PATHS["model"]).exists()

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
    model = project.path / PATHS["model"]
    model.write_bytes(model.read_bytes()[:1000])
    line = fail_line(project.stage("evaluate"))
    assert f"{PATHS['model']}: cannot be read as an AlexNet model file" in line
    assert not (project.path / PATHS["eval_metrics"]).exists()


def test_a_full_disk_stops_a_stage_with_one_line_naming_the_file_and_keeps_the_old_one(project):
    """Writes beyond RLIMIT_FSIZE fail (EFBIG) as on a full disk (ENOSPC), through the same code path."""
    for stage in ("download", "prepare", "train", "evaluate"):
        assert project.stage(stage).returncode == 0, stage
    model, checkpoint, metrics, confusion = (
        project.path / PATHS[k] for k in ("model", "checkpoint", "eval_metrics", "confusion")
    )
    trained = model.read_bytes()
    for path in (model, metrics, confusion):
        path.write_bytes(b"old")
    checkpoint.unlink()  # so that the train stage trains again

    # after the epoch, the train stage writes its checkpoint, larger than 1 MB
    line = fail_line(project.stage("train", limits={"RLIMIT_FSIZE": 1_000_000}))
    assert line == (
        f"error: {PATHS['checkpoint']}: could not be written: File too large; the file system or this "
        f"process's file size limit (ulimit -f) allows no larger file; raise the limit or write to "
        f"another file system, and rerun"
    )
    assert model.read_bytes() == b"old" and not checkpoint.exists()

    # the evaluate stage's confusion CSV (100 rows) is larger than 100 bytes
    model.write_bytes(trained)
    line = fail_line(project.stage("evaluate", limits={"RLIMIT_FSIZE": 100}))
    assert line.startswith(f"error: {PATHS['confusion']}: could not be written: File too large; ")
    assert metrics.read_bytes() == confusion.read_bytes() == b"old"
    assert not list(project.path.rglob("*.tmp"))

    # DVC copying the model into its cache: dvc fails naming the file, the workspace's model stays whole,
    # and a commit once there is room completes
    result = project.dvc("commit", "-f", "train", check=False, limits={"RLIMIT_FSIZE": 1_000_000})
    assert result.returncode != 0 and f"File too large: '{model}'" in result.stderr
    assert model.read_bytes() == trained
    project.dvc("commit", "-f", "train")
    assert "changed" not in project.dvc("status", "train").stdout


def test_an_image_size_too_large_for_the_device_stops_training_before_any_work(project):
    assert project.stage("download").returncode == 0 and project.stage("prepare").returncode == 0
    project.write_params(tiny_params(model={"image_size": 100_000}))
    line = fail_line(project.stage("train"))
    assert line.startswith("error: model.image_size 100000 with train.batch_size 32 cannot fit on cpu, which has ")
    assert line.endswith(
        "37.2 TiB of weights and as much again for each of their gradients and Adam's two moments; "
        "lower model.image_size"
    )
    assert not (project.path / "models").exists()


def test_dvc_exp_run_with_an_image_size_too_large_ends_with_the_stage_error(project):
    result = project.dvc("exp", "run", "-S", "model.image_size=100000", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: model.image_size 100000 with train.batch_size 32 cannot")


# The train stage under an address-space limit, with a batch whose weights and first layer's output alone
# need more than twice that limit yet fit in the machine's memory: the check before training lets it
# start, and an allocation fails early in the first step (never using more than the limit).
ADDRESS_SPACE = 8 * 2**30  # bytes: above what python, torch and the stage's set-up reserve (VmPeak 3.9 GiB)
BIG = {"model": {"image_size": 640}, "train": {"batch_size": 2048, "precision": "fp32"}, "data": {"train_size": 2048}}


def test_running_out_of_memory_while_training_stops_with_one_line(tmp_path):
    config = ModelConfig(image_size=BIG["model"]["image_size"], dropout=0.5)
    weights, activation = memory.footprint(config, BIG["train"]["batch_size"], "fp32")
    assert weights + activation > 2 * ADDRESS_SPACE  # so the run cannot fit under the limit
    if max(4 * weights, weights + activation) > memory.capacity(torch.device("cpu")):
        pytest.skip("this machine's memory is too small: the check before training rejects the run")
    checksums = write_mnist(tmp_path / "mirror", n_train=2200)
    project = make_project(tmp_path / "project", tmp_path / "mirror", checksums, tiny_params(**BIG))
    assert project.stage("download").returncode == 0 and project.stage("prepare").returncode == 0
    line = fail_line(project.stage("train", limits={"RLIMIT_AS": ADDRESS_SPACE}))
    assert line.startswith("error: train stage: out of memory on cpu (")
    assert re.search(
        r"\) with model.image_size 640 and train.batch_size 2048: an allocation of [\d.]+ [GM]iB "
        r"failed; lower train.batch_size or model.image_size and rerun$",
        line,
    )
    assert not (project.path / "models").exists()


def test_running_out_of_memory_under_torchrun_stops_each_process_with_one_line(tmp_path):
    """Each process's share of the batch alone overflows its address space; torchrun adds its own report."""
    config = ModelConfig(image_size=BIG["model"]["image_size"], dropout=0.5)
    weights, activation = memory.footprint(config, BIG["train"]["batch_size"] // 2, "fp32")
    assert weights + activation > ADDRESS_SPACE
    if max(4 * weights, weights + activation) > memory.capacity(torch.device("cpu")):
        pytest.skip("this machine's memory is too small: the check before training rejects the run")
    checksums = write_mnist(tmp_path / "mirror", n_train=2200)
    params = tiny_params(**BIG)
    params["train"]["nproc"] = 2
    project = make_project(tmp_path / "project", tmp_path / "mirror", checksums, params)
    assert project.stage("download").returncode == 0 and project.stage("prepare").returncode == 0
    result = project.stage("train", limits={"RLIMIT_AS": ADDRESS_SPACE})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert 1 <= len(errors) <= 2  # torchrun may stop one process before it reports
    assert all(line.startswith("error: train stage: out of memory on cpu (") for line in errors), errors
    assert not (project.path / "models").exists()
