"""The export stage through the real dvc CLI: models/model.onnx, checked against torch, and its metric;
a tampered ONNX file fails the check in one line."""

import json
import runpy
import shutil
import sys

import numpy as np
import pytest
from conftest import BIN, PATHS, ROOT, make_project, stage_command, tiny_params, write_mnist
from PIL import Image

from alexnet_mnist import onnx_export
from alexnet_mnist.errors import PipelineError
from alexnet_mnist.model_file import load_model
from alexnet_mnist.storage import load_split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project after one `dvc repro`; the tests below leave its files as they found them."""
    tmp = tmp_path_factory.mktemp("export")
    checksums = write_mnist(tmp / "mirror")
    project = make_project(tmp / "project", tmp / "mirror", checksums, tiny_params())
    project.dvc("repro")
    return project


def test_repro_exports_a_checked_onnx_model_that_predict_runs(project, tmp_path):
    onnx = project.path / PATHS["onnx"]
    assert onnx.is_file() and not list(onnx.parent.glob(".*.tmp"))
    shown = json.loads(project.dvc("metrics", "show", "--json").stdout)[""]["data"]
    assert shown[PATHS["export_metrics"]]["data"] == {"agreement": 1.0}  # written once every logit was in tolerance
    assert "Data and pipelines are up to date." in project.dvc("status").stdout

    # predict in the project: the default model (dvc.yaml's), and the ONNX export, give the same digits
    folder = tmp_path / "digits"
    folder.mkdir()
    test = load_split(project.path / PATHS["test_set"])
    for i in range(3):
        pixels = (test["images"][i, 0].numpy() * test["std"] + test["mean"]) * 255
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    outputs = [
        project.run(str(BIN / "alexnet-mnist"), "predict", str(folder), "--json", *model)
        for model in ([], ["--model", PATHS["onnx"]])
    ]
    default, exported = ([json.loads(line) for line in o.stdout.splitlines()] for o in outputs)
    assert len(default) == 3 and [o["digit"] for o in default] == [o["digit"] for o in exported]


def test_a_tampered_onnx_file_fails_the_check_in_one_line(project, tmp_path):
    import onnx
    from onnx import numpy_helper

    path = tmp_path / "model.onnx"
    shutil.copy(project.path / PATHS["onnx"], path)
    model, _, _ = load_model(project.path / PATHS["model"])
    images = load_split(project.path / PATHS["test_set"])["images"]
    onnx_export.check(path, onnx_export.compare(path, model, images))  # as exported: passes

    graph = onnx.load(path)
    bias = next(t for t in graph.graph.initializer if numpy_helper.to_array(t).shape == (10,))  # the logits' bias
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.01), bias.name))
    onnx.save(graph, path)
    comparison = onnx_export.compare(path, model, images)
    with pytest.raises(PipelineError) as failed:
        onnx_export.check(path, comparison)
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"{path}: onnxruntime's logits differ from torch's by up to 0.01")
    assert f"over the tolerance {onnx_export.TOLERANCE:g}" in message


def test_a_failing_check_fails_the_stage_in_one_line_and_keeps_the_old_file(project, monkeypatch, capsys):
    onnx, metrics = (project.path / PATHS[k] for k in ("onnx", "export_metrics"))
    exported, measured = onnx.read_bytes(), metrics.read_text()
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no difference passes
    monkeypatch.chdir(project.path)
    monkeypatch.setattr(sys, "argv", stage_command("export")[1:])  # the stage's own arguments, as dvc passes them
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(ROOT / "stages" / "export.py"), run_name="__main__")
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {PATHS['onnx']}: onnxruntime's logits differ"), err
    assert onnx.read_bytes() == exported and metrics.read_text() == measured
    assert not list(onnx.parent.glob(".*.tmp"))
