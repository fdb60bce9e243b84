"""The plot stage writes both PNGs from the CSVs, without importing torch."""

import shutil
import subprocess

from conftest import BIN, ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_stage_writes_pngs_without_torch(tmp_path):
    (tmp_path / "metrics").mkdir()
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "metrics" / "accuracy.csv").write_text(
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n"
        "1,0.9,0.70,0.5,0.85,10.0\n2,0.3,0.90,0.2,0.93,9.5\n"
    )
    (tmp_path / "metrics" / "confusion.csv").write_text("actual,predicted\n0,0\n1,1\n2,1\n9,9\n")
    script = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__'); "
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'plot imported torch'"
    )
    result = subprocess.run([str(BIN / "python"), "-c", script, str(ROOT / "stages" / "plot.py")],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("accuracy.png", "confusion.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["accuracy.png", "confusion.png"]


def test_plot_stage_names_a_missing_csv(tmp_path):
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    result = subprocess.run([str(BIN / "python"), str(ROOT / "stages" / "plot.py")],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: metrics/accuracy.csv: not found" in result.stderr and "Traceback" not in result.stderr
