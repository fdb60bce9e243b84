"""Bad params and bad files stop each stage with one clear line, and nothing half-written."""

import pytest
import torch

from conftest import PATHS, fail_line, tiny_params

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

    # Diverging loss: inputs scaled by 1e30 overflow to inf; no model is written
    project.write_params(tiny_params(data={"std": 1e-30}))
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
    model, checkpoint, metrics, confusion = (project.path / PATHS[k] for k in
                                             ("model", "checkpoint", "eval_metrics", "confusion"))
    trained = model.read_bytes()
    for path in (model, metrics, confusion):
        path.write_bytes(b"old")
    checkpoint.unlink()  # so that the train stage trains again

    # after the epoch, the train stage writes its checkpoint, larger than 1 MB
    line = fail_line(project.stage("train", limits={"RLIMIT_FSIZE": 1_000_000}))
    assert line == (f"error: {PATHS['checkpoint']}: could not be written: File too large; the file system or this "
                    f"process's file size limit (ulimit -f) allows no larger file; raise the limit or write to "
                    f"another file system, and rerun")
    assert model.read_bytes() == b"old" and not checkpoint.exists()

    # the evaluate stage's confusion CSV (100 rows) is larger than 100 bytes
    model.write_bytes(trained)
    line = fail_line(project.stage("evaluate", limits={"RLIMIT_FSIZE": 100}))
    assert line.startswith(f"error: {PATHS['confusion']}: could not be written: File too large; ")
    assert metrics.read_bytes() == confusion.read_bytes() == b"old"
    assert not list(project.path.rglob("*.tmp"))
