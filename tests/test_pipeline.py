"""End to end: the real dvc CLI on a temp git repo of this project, tiny params, made-up MNIST files."""

import csv
import itertools
import json
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import (
    EXP_SHOW_WIDTH,
    METRICS_WIDTH,
    PATHS,
    ROOT,
    Project,
    assert_fits,
    make_project,
    params_at,
    ran,
    tiny_params,
    write_mnist,
)

from alexnet_mnist.idx import MNIST_FILES

pytestmark = pytest.mark.slow

# every file the pipeline writes: the raw files, then each path dvc.yaml names (the checkpoint too)
OUTPUTS = [f"{PATHS['raw']}/{name}" for name in MNIST_FILES] + [
    path for key, path in PATHS.items() if key not in ("raw", "checksums")
]
DEFAULT_LR = tiny_params()["train"]["lr"]  # params.yaml's, which the test projects start from


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """A project after one `dvc repro`, committed with its dvc.lock and metrics."""
    return committed_run(tmp_path_factory.mktemp("pipeline"))


def committed_run(tmp: Path) -> Project:
    """A tiny project in `tmp` after one `dvc repro` (its output in .first_repro), committed with its results."""
    checksums = write_mnist(tmp / "mirror")
    project = make_project(tmp / "project", tmp / "mirror", checksums, tiny_params())
    project.first_repro = project.dvc("repro").stdout
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline run")
    return project


def test_repro_runs_every_stage_and_writes_every_output(reproduced):
    assert ran(reproduced.first_repro) == ["download", "prepare", "train", "evaluate", "export", "plot"]
    for path in OUTPUTS:
        assert (reproduced.path / path).is_file(), path
    history = (reproduced.path / PATHS["history"]).read_text().splitlines()
    assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds" and len(history) == 2
    assert not any(p.name.endswith(".tmp") for p in reproduced.path.rglob("*"))


def test_second_repro_runs_nothing(reproduced):
    result = reproduced.dvc("repro")
    assert ran(result.stdout) == []
    assert reproduced.dvc("status").stdout.strip() == "Data and pipelines are up to date."


def test_metrics_show_holds_the_numbers_people_compare_and_fits_a_terminal(reproduced):
    metrics = json.loads(reproduced.dvc("metrics", "show", "--json").stdout)
    (workspace,) = metrics.values()
    shown = {path: set(found["data"]) for path, found in workspace["data"].items()}
    assert shown == {
        PATHS["train_metrics"]: {"accuracy", "loss", "seconds", "images_per_second"},  # the last epoch's
        PATHS["val_metrics"]: {"accuracy", "loss"},  # the last epoch's
        PATHS["eval_metrics"]: {"accuracy", "loss"},  # the test split's
        PATHS["export_metrics"]: {"agreement"},
    }
    with open(reproduced.path / PATHS["confusion"], newline="") as f:
        rows = list(csv.DictReader(f))  # (actual, predicted) per test image
    accuracy = workspace["data"][PATHS["eval_metrics"]]["data"]["accuracy"]
    assert len(rows) == 100 and accuracy == round(sum(row["actual"] == row["predicted"] for row in rows) / 100, 6)
    with open(reproduced.path / PATHS["per_class"], newline="") as f:
        per_class = list(csv.DictReader(f))
    assert [int(row["digit"]) for row in per_class] == list(range(10))
    assert sum(int(row["images"]) for row in per_class) == 100
    run_info = json.loads((reproduced.path / PATHS["run_info"]).read_text())  # facts, not metrics
    assert run_info["train"]["device"] == run_info["evaluate"]["device"] == "cpu"
    assert run_info["train"]["epochs"] == 1 and run_info["evaluate"]["test_images"] == 100
    assert run_info["evaluate"]["threads"] >= 1 and run_info["evaluate"]["torch_version"]
    assert_fits(reproduced.dvc("metrics", "show", env={"COLUMNS": str(METRICS_WIDTH)}).stdout, METRICS_WIDTH)


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
    assert ran(a.stdout) == ["train", "evaluate", "export", "plot"]
    assert f"resuming from {PATHS['checkpoint']}: 1 of 2 epochs already done" in a.stdout
    b = reproduced.dvc("exp", "run", "-n", "exp-b", "-S", "train.lr=0.002")
    assert ran(b.stdout) == ["train", "evaluate", "export", "plot"]

    shown = reproduced.dvc("exp", "show", "--no-pager").stdout
    assert "exp-a" in shown and "exp-b" in shown and "train.epochs" in shown and "accuracy" in shown
    rows = json.loads(reproduced.dvc("exp", "show", "--json").stdout)
    names = {e.get("name") for commit in rows for e in (commit.get("experiments") or [])}
    assert {"exp-a", "exp-b"} <= names

    # `dvc exp run` leaves its params in the workspace, so exp-b also has exp-a's 2 epochs
    assert json.loads(reproduced.dvc("params", "diff", "HEAD", "exp-a", "--json").stdout) == {
        "params.yaml": {"train.epochs": {"old": 1, "new": 2, "diff": 1}}
    }
    assert json.loads(reproduced.dvc("params", "diff", "exp-a", "exp-b", "--json").stdout) == {
        "params.yaml": {"train.lr": {"old": DEFAULT_LR, "new": 0.002, "diff": pytest.approx(0.002 - DEFAULT_LR)}}
    }
    assert "accuracy" in reproduced.dvc("metrics", "diff", "exp-a", "exp-b").stdout

    reproduced.dvc("plots", "diff", "exp-a", "exp-b", "-o", "dvc_plots")
    html = (reproduced.path / "dvc_plots/index.html").read_text()
    assert "exp-a" in html and "exp-b" in html
    assert all(Path(PATHS[png]).name in html for png in ("curves_png", "confusion_png", "misclassified_png"))
    assert "confusion" in html


def test_two_queued_experiments_run_in_parallel_with_their_own_results(tmp_path):
    project = committed_run(tmp_path)
    project.dvc("exp", "run", "--queue", "-n", "q-lr", "-S", "train.lr=0.002")
    project.dvc("exp", "run", "--queue", "-n", "q-seed", "-S", "train.seed=5")
    project.dvc("queue", "start", "-j", "2")
    status = project.wait_for_queue()
    assert status.count("Success") == 2, status
    found = {
        name: (params["train"], metrics[PATHS["eval_metrics"]])
        for name, (params, metrics) in project.experiments().items()
    }
    assert found["q-lr"][0]["lr"] == 0.002 and found["q-lr"][0]["seed"] == 42
    assert found["q-seed"][0]["seed"] == 5 and found["q-seed"][0]["lr"] == DEFAULT_LR
    assert found["q-lr"][1] != found["q-seed"][1]  # each trained its own model


def readme_command(start: str) -> list[str]:
    """README.md's one command line that starts with `start`, split as the shell would (comment dropped)."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if line.strip().startswith(start)]
    assert len(lines) == 1, f"README.md has {len(lines)} lines starting {start!r}, expected 1"
    return shlex.split(lines[0], comments=True)


def set_values(command: list[str]) -> dict[str, list]:
    """Each `-S key=a,b` of a `dvc exp run` command: key -> [a, b], parsed as YAML as DVC does."""
    pairs = [command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-S"]
    return {key: [yaml.safe_load(value) for value in values.split(",")] for key, values in pairs}


def test_readme_sweep_table_and_reference_recipe_run_as_written(tmp_path):
    project = committed_run(tmp_path)

    sweep = readme_command("dvc exp run --queue")
    project.dvc(*sweep[1:])
    project.dvc(*readme_command("dvc queue start")[1:])
    status = project.wait_for_queue()
    grid = set_values(sweep)
    size = len(list(itertools.product(*grid.values())))
    assert size > 1 and status.count("Success") == size, status
    found = project.experiments()
    ran_grid = sorted(tuple(params_at(params, key) for key in grid) for params, _ in found.values())
    assert ran_grid == sorted(itertools.product(*grid.values()))
    assert all(PATHS["eval_metrics"] in metrics for _, metrics in found.values())

    # the README's table of the sweep fits a 120-column terminal whole: test accuracy and every param that
    # differs from the committed params.yaml (a -S value equal to it changes nothing, so shows in no column)
    table = project.dvc(*readme_command("dvc exp show")[1:], env={"COLUMNS": str(EXP_SHOW_WIDTH)}).stdout
    assert_fits(table, EXP_SHOW_WIDTH)
    committed = yaml.safe_load((project.path / "params.yaml").read_text())
    differ = [key for key, values in grid.items() if values != [params_at(committed, key)]]
    assert f"{PATHS['eval_metrics']}:accuracy" in table and differ and all(key in table for key in differ)
    assert all(name in table for name in found)

    reference = readme_command("dvc exp run -n reference-recipe")
    project.dvc(*reference[1:])
    params, metrics = project.experiments()["reference-recipe"]
    # the original tutorial's loop: Adam at a constant lr of 0.001, no augmentation
    assert {key: params["train"][key] for key in ("lr", "lr_decay", "shift", "rotate")} == {
        "lr": 0.001,
        "lr_decay": 1.0,
        "shift": 0.0,
        "rotate": 0.0,
    }
    assert set(metrics[PATHS["eval_metrics"]]) == {"accuracy", "loss"}
