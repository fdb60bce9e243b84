"""The committed baseline: a fresh clone shows its metrics, and it is a run of the committed params."""

import csv
import json
import subprocess
from itertools import pairwise

import pytest
import yaml
from conftest import METRICS_WIDTH, PATHS, ROOT, Project, assert_fits, params_at

pytestmark = pytest.mark.slow  # clones this repository


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Project:
    """A fresh clone of this repository's committed state: no DVC cache, no data, no model."""
    tmp = tmp_path_factory.mktemp("baseline")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp / "clone")], check=True)
    return Project(tmp / "clone", tmp / "no-mirror")  # nothing to download from: nothing here may run


def test_dvc_metrics_show_prints_the_baseline_test_accuracy(clone):
    shown = json.loads(clone.dvc("metrics", "show", "--json").stdout)[""]["data"]
    committed = json.loads((clone.path / PATHS["eval_metrics"]).read_text())
    assert shown[PATHS["eval_metrics"]]["data"]["accuracy"] == committed["accuracy"]
    with open(clone.path / PATHS["confusion"], newline="") as f:
        rows = list(csv.DictReader(f))  # (actual, predicted) per test image, committed with the metrics
    assert committed["accuracy"] == round(sum(row["actual"] == row["predicted"] for row in rows) / len(rows), 6)


def test_dvc_lock_records_every_stage(clone):
    lock = yaml.safe_load((clone.path / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(yaml.safe_load((clone.path / "dvc.yaml").read_text())["stages"])


def test_dvc_lock_records_the_committed_params(clone):
    """`dvc exp show` puts params.yaml beside the baseline's metrics; a default changed without a new
    baseline run would show metrics of other params. `make repro` refreshes the baseline."""
    params = yaml.safe_load((clone.path / "params.yaml").read_text())
    lock = yaml.safe_load((clone.path / "dvc.lock").read_text())
    for name, stage in lock["stages"].items():
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():  # export has no params
            assert value == params_at(params, key), f"dvc.lock stage {name}: {key}"


def test_the_baseline_history_holds_every_epoch(clone):
    epochs = yaml.safe_load((clone.path / "params.yaml").read_text())["train"]["epochs"]
    with open(clone.path / PATHS["history"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))


def test_dvc_metrics_show_fits_a_terminal(clone):
    assert_fits(clone.dvc("metrics", "show", env={"COLUMNS": str(METRICS_WIDTH)}).stdout, METRICS_WIDTH)


# What the default config must give (BENCHMARKS.md, "The committed baseline"): a model worth having,
# and a validation curve that has settled by the last epochs.
TARGET_TEST_ACCURACY = 0.994
LAST_EPOCHS_SPREAD = 0.002  # the last three epochs' validation accuracies lie within this of each other
ROUNDING = 1e-9  # float subtraction's error: 0.9944 - 0.9924 is 0.0020000000000000018, within 0.002
LARGEST_DROP = 0.005  # after epoch 3, no epoch's validation accuracy falls more than this below the one before


def test_the_baseline_reaches_the_target_and_its_curve_settles(clone):
    assert json.loads((clone.path / PATHS["eval_metrics"]).read_text())["accuracy"] >= TARGET_TEST_ACCURACY
    with open(clone.path / PATHS["history"], newline="") as f:
        val = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    assert max(val[-3:]) - min(val[-3:]) <= LAST_EPOCHS_SPREAD + ROUNDING, val
    assert all(before - after <= LARGEST_DROP + ROUNDING for before, after in pairwise(val[2:])), val
