"""The plot stage writes its three PNGs from the CSVs and the raw test images, without importing torch."""

import shutil
import subprocess

import pandas as pd
import pytest
from conftest import PATHS, ROOT, fail_line, stage_command, synthetic_mnist, write_mnist

from alexnet_mnist.params import PlotParams, load_params
from alexnet_mnist.plot import misclassified_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNGS = ("curves_png", "confusion_png", "misclassified_png")
HISTORY = (
    "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n1,0.9,0.70,0.5,0.85,10.0\n2,0.3,0.90,0.2,0.93,9.5\n"
)
CONFUSION = "actual,predicted\n0,0\n1,1\n2,1\n9,9\n"


def plot_inputs(folder, history=HISTORY, confusion=CONFUSION):
    """The plot stage's script and inputs in `folder`: params.yaml, both CSVs and the raw MNIST files."""
    shutil.copytree(ROOT / "stages", folder / "stages")
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for key, text in (("history", history), ("confusion", confusion)):
        (folder / PATHS[key]).parent.mkdir(parents=True, exist_ok=True)
        (folder / PATHS[key]).write_text(text)
    write_mnist(folder / PATHS["raw"], n_test=10, gz=False)


def run_plot(folder, script=None) -> subprocess.CompletedProcess:
    command = stage_command("plot")
    if script:  # run the stage inside `script` (python -c), with the stage's own arguments
        command = [command[0], "-c", script, *command[1:]]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True)


def test_plot_stage_writes_pngs_without_torch(tmp_path):
    plot_inputs(tmp_path)
    script = (
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'plot imported torch'"
    )
    result = run_plot(tmp_path, script)
    assert result.returncode == 0, result.stderr
    for key in PNGS:
        data = (tmp_path / PATHS[key]).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, key
    written = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "plots").iterdir())
    assert written == sorted(PATHS[key] for key in PNGS)


@pytest.mark.parametrize("key, text", [("history", None), ("confusion", ""), ("history", "epoch,val_accuracy\n")])
def test_plot_stage_names_a_missing_or_empty_csv_and_writes_no_plot(tmp_path, key, text):
    plot_inputs(tmp_path)
    if text is None:
        (tmp_path / PATHS[key]).unlink()
    else:
        (tmp_path / PATHS[key]).write_text(text)
    line = fail_line(run_plot(tmp_path))
    assert line.startswith(f"error: {PATHS[key]}: ")
    assert not (tmp_path / "plots").exists()


def test_the_gallery_shows_the_first_misclassified_digits_with_both_labels():
    images, _ = synthetic_mnist(60, seed=0)
    actual = [i % 10 for i in range(60)]
    predicted = [(a + 1) % 10 if i % 3 == 0 else a for i, a in enumerate(actual)]  # every third is wrong
    confusion = pd.DataFrame({"actual": actual, "predicted": predicted})
    (params,) = load_params(ROOT / "params.yaml", plot=PlotParams)
    fig = misclassified_figure(images, confusion, params, count=12)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == [f"{actual[i]} as {predicted[i]}" for i in range(0, 36, 3)]
    assert "the first 12 of 20" in fig.get_suptitle()
    assert (fig.axes[0].images[0].get_array() == images[0]).all()
