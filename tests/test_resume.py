"""Reproducible to the bit and resumable: identical runs, a killed run resumed, checkpoints and the run-cache."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    BIN,
    PATHS,
    assert_same_weights,
    history_without_seconds,
    make_project,
    ran,
    saved_weights,
    tiny_params,
    write_mnist,
)

pytestmark = pytest.mark.slow


def start_repro(project) -> subprocess.Popen:
    """`dvc repro` in the background, in a session of its own, so that killing it kills the stage too."""
    return subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


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
    recorded = json.loads((a / PATHS["run_info"]).read_text())
    for stage in ("train", "evaluate"):
        assert {"device", "precision", "torch_version", "threads"} <= set(recorded[stage]), stage


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


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A project after one `dvc repro` (params A: 1 epoch), committed; what it wrote, by path."""
    tmp = tmp_path_factory.mktemp("resume")
    checksums = write_mnist(tmp / "mirror")
    project = make_project(tmp / "project", tmp / "mirror", checksums, tiny_params())
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "params A, trained")
    project.written = {
        path: (project.path / path).read_bytes()
        for path in (PATHS["model"], PATHS["checkpoint"], PATHS["history"], PATHS["train_metrics"])
    }
    return project


@pytest.fixture
def trained(trained_once):
    """The project as its one run left it: the committed workspace, its model and its checkpoint."""
    project = trained_once
    project.run("git", "checkout", "-q", "--", ".")
    project.dvc("checkout", "-f")
    (project.path / PATHS["checkpoint"]).write_bytes(project.written[PATHS["checkpoint"]])
    return project


def test_an_edit_the_train_stage_does_not_run_keeps_its_checkpoint(trained):
    plot_code = trained.path / "src/alexnet_mnist/plot.py"
    plot_code.write_text(plot_code.read_text() + "\n# an edit of code only the plot stage runs\n")
    assert ran(trained.dvc("repro").stdout) == ["plot"]
    more = trained.dvc("exp", "run", "-S", "train.epochs=2")
    assert f"resuming from {PATHS['checkpoint']}: 1 of 2 epochs already done" in more.stdout
    assert [row["epoch"] for row in history_without_seconds(trained.path / PATHS["history"])] == ["1", "2"]

    # an edit of code the train stage runs makes its checkpoint stale
    augment_code = trained.path / "src/alexnet_mnist/augment.py"
    augment_code.write_text(augment_code.read_text() + "\n# an edit of code the train stage runs\n")
    edited = trained.dvc("exp", "run")
    assert ran(edited.stdout)[0] == "train"
    assert f"{PATHS['checkpoint']} is from other params, code, data or more epochs: starting over" in edited.stdout


def test_earlier_params_are_restored_from_the_run_cache_not_retrained(trained):
    other = trained.dvc("exp", "run", "-S", "train.lr=0.002")
    assert ran(other.stdout)[0] == "train"
    assert (trained.path / PATHS["model"]).read_bytes() != trained.written[PATHS["model"]]
    checkpoint = (trained.path / PATHS["checkpoint"]).read_bytes()

    trained.run("git", "checkout", "-q", "--", "params.yaml")  # params A again
    back = trained.dvc("repro")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in back.stdout
    assert "train" not in ran(back.stdout)
    # the train script did not run: it saves a checkpoint every epoch, and it would retime every epoch
    assert (trained.path / PATHS["checkpoint"]).read_bytes() == checkpoint
    for path in (PATHS["model"], PATHS["history"], PATHS["train_metrics"]):
        assert (trained.path / path).read_bytes() == trained.written[path], path
