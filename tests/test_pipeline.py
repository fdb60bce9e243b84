"""End to end: the real dvc CLI on a temp git repo of this project, tiny params, made-up MNIST files."""

import json
import re

import pytest

from conftest import make_project, tiny_params, write_mnist

pytestmark = pytest.mark.slow

OUTPUTS = [
    "data/raw/train-images-idx3-ubyte", "data/raw/train-labels-idx1-ubyte",
    "data/raw/t10k-images-idx3-ubyte", "data/raw/t10k-labels-idx1-ubyte",
    "data/prepared/train.pt", "data/prepared/val.pt", "data/prepared/test.pt",
    "models/model.pt", "models/checkpoint.pt",
    "metrics/accuracy.csv", "metrics/train.json", "metrics/eval.json", "metrics/confusion.csv",
    "plots/accuracy.png", "plots/confusion.png",
]


README_KEEP = r"Experiment|Created|^accuracy|^loss|val_accuracy|seconds|^model\.|^train\.(epochs|lr|batch_size|seed)|data.train_size"


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """A project after one `dvc repro`, committed with its dvc.lock and metrics."""
    tmp = tmp_path_factory.mktemp("pipeline")
    checksums = write_mnist(tmp / "mirror")
    project = make_project(tmp / "project", tmp / "mirror", checksums, tiny_params())
    result = project.dvc("repro")
    project.first_repro = result.stdout
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline run")
    return project


def test_repro_runs_every_stage_and_writes_every_output(reproduced):
    assert ran(reproduced.first_repro) == ["download", "prepare", "train", "evaluate", "plot"]
    for path in OUTPUTS:
        assert (reproduced.path / path).is_file(), path
    history = (reproduced.path / "metrics/accuracy.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds" and len(history) == 2
    assert not any(p.name.endswith(".tmp") for p in reproduced.path.rglob("*"))


def test_second_repro_runs_nothing(reproduced):
    result = reproduced.dvc("repro")
    assert ran(result.stdout) == []
    assert reproduced.dvc("status").stdout.strip() == "Data and pipelines are up to date."


def test_metrics_show_holds_the_test_accuracy(reproduced):
    metrics = json.loads(reproduced.dvc("metrics", "show", "--json").stdout)
    (workspace,) = metrics.values()
    evaluation = workspace["data"]["metrics/eval.json"]["data"]
    assert 0 <= evaluation["accuracy"] <= 1 and evaluation["samples"] == 100
    assert set(evaluation["per_class_accuracy"]) == {str(c) for c in range(10)}
    assert evaluation["device"] == "cpu" and evaluation["threads"] >= 1 and evaluation["torch_version"]
    assert "val_accuracy" in workspace["data"]["metrics/train.json"]["data"]


def test_plot_styling_reruns_only_plot(reproduced):
    params = (reproduced.path / "params.yaml").read_text()
    try:
        (reproduced.path / "params.yaml").write_text(params.replace("dpi: 120", "dpi: 80"))
        assert ran(reproduced.dvc("repro").stdout) == ["plot"]
    finally:
        (reproduced.path / "params.yaml").write_text(params)
        reproduced.dvc("repro")


def test_experiments_rerun_from_train_and_compare(reproduced):
    a = reproduced.dvc("exp", "run", "-n", "exp-a", "-S", "train.epochs=2")
    assert ran(a.stdout) == ["train", "evaluate", "plot"]
    assert "resuming from models/checkpoint.pt: 1 of 2 epochs already done" in a.stdout
    b = reproduced.dvc("exp", "run", "-n", "exp-b", "-S", "train.lr=0.002")
    assert ran(b.stdout) == ["train", "evaluate", "plot"]

    shown = reproduced.dvc("exp", "show", "--no-pager").stdout
    assert "exp-a" in shown and "exp-b" in shown and "train.epochs" in shown and "accuracy" in shown
    compact = reproduced.dvc("exp", "show", "--no-pager", "--drop", ".*", "--keep", README_KEEP).stdout  # README's
    assert "exp-a" in compact and "train.epochs" in compact and "val_accuracy" in compact
    assert "per_class_accuracy" not in compact and "data.mirrors" not in compact
    rows = json.loads(reproduced.dvc("exp", "show", "--json").stdout)
    names = {e.get("name") for commit in rows for e in (commit.get("experiments") or [])}
    assert {"exp-a", "exp-b"} <= names

    # `dvc exp run` leaves its params in the workspace, so exp-b also has exp-a's 2 epochs
    assert json.loads(reproduced.dvc("params", "diff", "HEAD", "exp-a", "--json").stdout) == {
        "params.yaml": {"train.epochs": {"old": 1, "new": 2, "diff": 1}}}
    assert json.loads(reproduced.dvc("params", "diff", "exp-a", "exp-b", "--json").stdout) == {
        "params.yaml": {"train.lr": {"old": 0.001, "new": 0.002, "diff": 0.001}}}
    assert "accuracy" in reproduced.dvc("metrics", "diff", "exp-a", "exp-b").stdout

    reproduced.dvc("plots", "diff", "exp-a", "exp-b", "-o", "dvc_plots")
    html = (reproduced.path / "dvc_plots/index.html").read_text()
    assert "exp-a" in html and "exp-b" in html
    assert "accuracy.png" in html and "confusion" in html
