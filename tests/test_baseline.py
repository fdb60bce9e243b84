"""The committed baseline: a fresh clone shows its metrics, and it is a run of the committed params."""

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, PATHS, ROOT


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of this repository's committed state: no DVC cache, no data, no model."""
    path = tmp_path_factory.mktemp("baseline") / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True)
    return path


def params_at(params: dict, dotted: str):
    value = params
    for key in dotted.split("."):
        value = value[key]
    return value


def test_dvc_metrics_show_prints_the_baseline_test_accuracy(clone):
    result = subprocess.run([str(BIN / "dvc"), "metrics", "show", "--json"], cwd=clone,
                            capture_output=True, text=True, check=True)
    shown = json.loads(result.stdout)[""]["data"]
    committed = json.loads((clone / PATHS["eval_metrics"]).read_text())
    assert shown[PATHS["eval_metrics"]]["data"]["accuracy"] == committed["accuracy"]
    assert 0.0 < committed["accuracy"] <= 1.0


def test_dvc_lock_records_the_committed_params(clone):
    """`dvc exp show` puts params.yaml beside the baseline's metrics; a default changed without a new
    baseline run would show metrics of other params. `make repro` refreshes the baseline."""
    params = yaml.safe_load((clone / "params.yaml").read_text())
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    for name, stage in lock["stages"].items():
        for key, value in stage["params"]["params.yaml"].items():
            assert value == params_at(params, key), f"dvc.lock stage {name}: {key}"


def test_the_baseline_history_holds_every_epoch(clone):
    epochs = yaml.safe_load((clone / "params.yaml").read_text())["train"]["epochs"]
    with open(clone / PATHS["history"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    summary = json.loads((clone / PATHS["train_metrics"]).read_text())
    assert summary["epochs"] == epochs
