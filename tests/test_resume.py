"""Reproducible to the bit and resumable: identical runs, a killed run resumed, checkpoints and the run-cache."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, PATHS, assert_same_weights, history_without_seconds, make_project, saved_weights, \
    tiny_params, write_mnist

pytestmark = pytest.mark.slow


def start_repro(project) -> subprocess.Popen:
    """`dvc repro` in the background, in a session of its own, so that killing it kills the stage too."""
    return subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=project.path, env=project.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def first_history(proc: subprocess.Popen, history: Path) -> list[dict]:
    """The rows of the history CSV (without seconds) as soon as the running train stage has written it."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists():
            return history_without_seconds(history)
        time.sleep(0.05)
    raise AssertionError(f"no {history} while training ran")


def test_two_runs_give_identical_weights_and_metrics(tmp_path):
    checksums = write_mnist(tmp_path / "mirror")
    runs = []
    for name in ("a", "b"):
        project = make_project(tmp_path / name, tmp_path / "mirror", checksums, tiny_params(train={"epochs": 2}))
        project.dvc("repro")
        runs.append(project.path)
    a, b = runs
    assert_same_weights(saved_weights(a / PATHS["model"]), saved_weights(b / PATHS["model"]))
    assert (a / PATHS["eval_metrics"]).read_bytes() == (b / PATHS["eval_metrics"]).read_bytes()
    assert (a / PATHS["confusion"]).read_bytes() == (b / PATHS["confusion"]).read_bytes()
    assert history_without_seconds(a / PATHS["history"]) == history_without_seconds(b / PATHS["history"])
    recorded = json.loads((a / PATHS["eval_metrics"]).read_text())
    assert {"device", "precision", "torch_version", "threads"} <= set(recorded)


def test_history_shows_while_training_and_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    checksums = write_mnist(tmp_path / "mirror", n_train=600)
    params = tiny_params(data={"train_size": 512}, train={"epochs": 3})
    straight = make_project(tmp_path / "straight", tmp_path / "mirror", checksums, params)
    proc = start_repro(straight)
    during = first_history(proc, straight.path / PATHS["history"])
    assert proc.wait(timeout=600) == 0
    after = history_without_seconds(straight.path / PATHS["history"])
    assert [row["epoch"] for row in during] == ["1"], "the history was not written after epoch 1"
    assert [row["epoch"] for row in after] == ["1", "2", "3"] and after[0] == during[0]

    project = make_project(tmp_path / "killed", tmp_path / "mirror", checksums, params)
    proc = start_repro(project)
    checkpoint = project.path / PATHS["checkpoint"]
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), "training never saved a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the train stage under it, mid-epoch 2
    proc.wait()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert len(saved["history"]) == 1 and not (project.path / PATHS["model"]).exists()

    rerun = project.dvc("repro")
    assert f"resuming from {PATHS['checkpoint']}: 1 of 3 epochs already done" in rerun.stdout
    assert_same_weights(saved_weights(straight.path / PATHS["model"]), saved_weights(project.path / PATHS["model"]))
    # every epoch in the history, the one restored from the checkpoint too
    assert history_without_seconds(project.path / PATHS["history"]) == after

