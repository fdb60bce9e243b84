"""The speed benchmark runs end to end (its --smoke settings) and writes the report it prints.

Needs the real MNIST files (MNIST_MIRROR, as .ci/run sets it): the benchmark verifies them
against mnist.sha256. Its numbers are not checked here: speed is the benchmark's to measure.
"""

import re
import subprocess
import sys

import pytest

from conftest import ROOT, needs_real_mnist

pytestmark = [pytest.mark.slow, needs_real_mnist]


def test_smoke_run_reports_both_loops_their_ratio_and_accuracy(tmp_path):
    report_path = tmp_path / "bench.md"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--smoke",
                          "--device", "cpu", "--output", str(report_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    report = report_path.read_text()
    assert out.stdout.rstrip().endswith(report.strip())  # after the download lines
    assert re.search(r"^\| 67 \| seed \(fp32\) \| \d+\.\d \| \d+\.\d \| \d+ \|$", report, re.M)
    assert re.search(r"^\| 67 \| project \((bf16|fp32)\) \| \d+\.\d \| \d+\.\d \| \d+ \|$", report, re.M)
    assert re.search(r"^- 67x67, project: training \d+\.\d\dx the seed loop, evaluation \d+\.\d\dx", report, re.M)
    # one row per epoch (the smoke trains one): each loop's mean and per-seed accuracy, and the gap
    rows = re.findall(r"^\| 1 \| (\d+\.\d\d)% \(\d+\.\d\d\) \| (\d+\.\d\d)% \(\d+\.\d\d\) \| ([+-]\d+\.\d\d) \|$",
                      report, re.M)
    assert len(rows) == 1
    seed, project, gap = map(float, rows[0])
    assert gap == pytest.approx(project - seed, abs=0.011)
