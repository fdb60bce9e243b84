"""The benchmarks: their FLOP count against a hand count from the layer shapes, the band-matrix LRN they
compare against, the grouping of a profiled step, their CPU labels, and (slow, real data) each script's
--smoke run end to end.

The smoke runs need the real MNIST files (MNIST_MIRROR, as .ci/run sets it): the benchmarks verify them
against mnist.sha256. Their speed numbers are not checked: speed is the benchmarks' to measure.
"""

import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, needs_real_mnist, train_params
from torch import nn

from alexnet_mnist.model import AlexNet, ModelConfig
from alexnet_mnist.train import start, train_epoch

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their shared module as `common`
import common
import profile_step


def hand_counts(size: int) -> dict[str, tuple[int, int]]:
    """Layer name -> (forward, backward) FLOPs per image from the layer shapes, 2 per multiply-add."""
    with torch.device("meta"):
        model = AlexNet(ModelConfig(image_size=size, dropout=0.5))
    counts, side = {}, size
    for i, layer in enumerate(model.features):
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v[0] if isinstance(v, tuple) else v for v in (layer.kernel_size, layer.stride, layer.padding))
            side = (side + 2 * p - k) // s + 1  # output side
        if isinstance(layer, nn.Conv2d):
            forward = 2 * layer.out_channels * side * side * k * k * layer.in_channels
            # backward: weight gradient (as many multiply-adds as the forward) and input gradient (as many
            # again), except for the first layer, whose input, the image, needs no gradient
            counts[f"AlexNet.features.{i}"] = (forward, forward if i == 0 else 2 * forward)
    for i, layer in enumerate(model.classifier):
        if isinstance(layer, nn.Linear):
            forward = 2 * layer.in_features * layer.out_features
            counts[f"AlexNet.classifier.{i}"] = (forward, 2 * forward)
    return counts


def test_flop_count_of_conv1_at_227_is_the_hand_count():
    counts = common.flop_counts(ModelConfig(image_size=227, dropout=0.5))
    # 96 filters of 11x11x1 at each of 55x55 output positions, 2 FLOPs per multiply-add
    assert counts["AlexNet.features.0"] == {
        "aten.convolution": 2 * 96 * 55 * 55 * 11 * 11 * 1,
        "aten.convolution_backward": 2 * 96 * 55 * 55 * 11 * 11 * 1,
    }


@pytest.mark.parametrize("size", [67, 227])
def test_flop_count_matches_the_layer_shapes(size):
    counts = common.flop_counts(ModelConfig(image_size=size, dropout=0.5))
    hand = hand_counts(size)
    for name, (forward, backward) in hand.items():
        ops = counts[name]
        assert ops.get("aten.convolution", 0) + ops.get("aten.addmm", 0) == forward, name
        assert ops.get("aten.convolution_backward", 0) + ops.get("aten.mm", 0) == backward, name
    assert sum(counts["Global"].values()) == sum(f + b for f, b in hand.values())
    assert set(counts["Global"]) == set(profile_step.FLOP_PARTS)  # every counted op belongs to a part of the step


def test_band_lrn_of_the_comparison_computes_what_the_project_computes():
    torch.manual_seed(0)
    model = AlexNet(ModelConfig(image_size=67, dropout=0.5)).eval()
    x = torch.randn(4, 1, 67, 67)
    with torch.no_grad():
        ours = model(x)
        band = common.with_band_lrn(model)(x)
    assert any(isinstance(m, common.BandLocalResponseNorm) for m in model.modules())
    torch.testing.assert_close(band, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lrn", ["band", "blocked"])
def test_a_profiled_step_is_attributed_to_its_parts(lrn):
    from torch.profiler import ProfilerActivity, profile

    params = train_params(batch_size=4, device="cpu", precision="bf16")
    run = start(ModelConfig(image_size=67, dropout=0.5), params, torch.device("cpu"))
    if lrn == "band":
        common.with_band_lrn(run.model)
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    train_epoch(run, run.model, images[:4], labels[:4], params, "bf16")  # warm-up
    with profile_step.layer_labels(run.model), profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(run, run.model, images[4:], labels[4:], params, "bf16")
    seconds = profile_step.part_seconds(prof.events(), torch.device("cpu"))
    assert list(seconds) == profile_step.PARTS
    # every part has ops of its own (a renamed autograd node would leave its part empty)
    assert [part for part, s in seconds.items() if part != "other" and s <= 0] == []
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in run.model.modules())


def test_peak_candidates_are_the_matmuls_and_the_models_convolutions():
    config, sides = ModelConfig(image_size=67, dropout=0.5), common.SMOKE_MATMUL_SIDES
    peaks = common.peak_candidates(torch.device("cpu"), "fp32", config, batch=2, sides=sides)
    assert list(peaks) == [f"matmul {n}x{n}" for n in sides] + [f"conv{i} forward" for i in range(1, 6)]
    assert all(rate > 1e8 for rate in peaks.values())  # FLOP/s: any CPU of this century does more


def test_cpu_lines_name_the_instruction_set_caps(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    first, *notes = common.cpu_lines("fp32", torch.device("cpu"))
    assert re.search(
        r"kernels: ATen \w+, oneDNN .*AVX2.*; ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=\S+, "
        r"MKL_ENABLE_INSTRUCTIONS=unset\.$",
        first,
    ), first
    assert any("MKL_ENABLE_INSTRUCTIONS" in note for note in notes)  # fp32 matmuls are MKL's, not oneDNN's


def smoke(script: str, tmp_path) -> str:
    """What `script --smoke` prints, after checking it exits 0 (and writes the same to --output, where it has one)."""
    args = [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--device", "cpu"]
    report_path = tmp_path / "report.md"
    if script != "accuracy.py":
        args += ["--output", str(report_path)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr
    if script != "accuracy.py":
        assert out.stdout.rstrip().endswith(report_path.read_text().strip())  # after the download lines
    return out.stdout


# train_speed.py's loops by default, in the order of its tables
LOOP_ROWS = ["project, default config", "project, no augmentation", "project, band LRN", "reference"]


@pytest.mark.slow
@needs_real_mnist
def test_speed_smoke_reports_each_loop_ratios_peaks_and_mfu(tmp_path):
    report = smoke("train_speed.py", tmp_path)
    assert re.search(
        r"^CPU: .+; kernels: ATen \w+, oneDNN .+; ONEDNN_MAX_CPU_ISA=\S+, ATEN_CPU_CAPABILITY=\S+, "
        r"MKL_ENABLE_INSTRUCTIONS=\S+\.$",
        report,
        re.M,
    )
    speed = re.findall(r"^\| 67 \| ([a-zA-Z, ]+) \((?:bf16|fp32)\) \| \d+\.\d \| \d+\.\d \| \d+ \|$", report, re.M)
    assert speed == LOOP_ROWS  # the default config as the train stage runs it first
    assert re.search(r"^\| 67 \| reference \(fp32\) \|", report, re.M)
    for ratio in ("project, default config / project, no augmentation", "project, no augmentation / reference"):
        assert re.search(rf"^- 67x67: {ratio}: training \d+\.\d\dx, evaluation \d+\.\d\dx$", report, re.M), ratio
    assert re.search(r"^- 67x67: project, no augmentation / project, band LRN: training \d+\.\d\dx", report, re.M)

    # the peak candidates per precision, and the best of them
    peaks = re.findall(r"^\| 67 \| (fp32|bf16) \| ((?:\d+\.\d \| ){8})(\d+\.\d) \|$", report, re.M)
    assert peaks and "fp32" in {precision for precision, _, _ in peaks}  # the reference loop's, at least
    for _, cells, best in peaks:
        assert float(best) == max(float(c) for c in cells.split(" | ") if c.strip())

    # MFU: one row per loop, agreeing with the columns beside it
    per_image = sum(common.flop_counts(ModelConfig(image_size=67, dropout=0.5))["Global"].values())
    mfu = re.findall(
        r"^\| 67 \| ([a-zA-Z, ]+) \((?:bf16|fp32)\) \| (\d+\.\d{3}) \| (\d+\.\d) \| (\d+\.\d) \| "
        r"(\d\.\d{3}) \|$",
        report,
        re.M,
    )
    assert [row[0] for row in mfu] == LOOP_ROWS
    for _, gflop, train, peak, ratio in mfu:
        assert float(gflop) == pytest.approx(per_image / 1e9, abs=5e-4)
        assert float(ratio) == pytest.approx(float(train) / float(peak), abs=0.002)


@pytest.mark.slow
@needs_real_mnist
def test_profile_smoke_shows_each_part_before_and_after(tmp_path):
    report = smoke("profile_step.py", tmp_path)
    rows = re.findall(
        r"^\| ([a-zA-Z (),]+) \| (\d+\.\d) \| (\d+\.\d)% \| (\d+\.\d) \| (\d+\.\d)% \| (.+) \|$", report, re.M
    )
    assert [row[0] for row in rows] == [*profile_step.PARTS, "all"]
    for share in (2, 4):  # each LRN's shares add up
        assert sum(float(row[share]) for row in rows[:-1]) == pytest.approx(100, abs=0.1 * len(rows))
    speeds = {row[0]: row[5] for row in rows}
    for part in ("conv forward", "conv backward", "linear forward", "linear backward", "all"):
        assert re.fullmatch(r"\d+\.\d\d \| \d+\.\d \| \d\.\d{3}", speeds[part]), part
    assert speeds["LRN"] == "- | - | -"


@pytest.mark.slow
@needs_real_mnist
def test_accuracy_smoke_gives_each_loop_and_the_gap(tmp_path):
    report = smoke("accuracy.py", tmp_path)
    rows = re.findall(
        r"^\| 1 \| (\d+\.\d\d)% \(\d+\.\d\d\) \| (\d+\.\d\d)% \(\d+\.\d\d\) \| ([+-]\d+\.\d\d) \|$", report, re.M
    )
    assert len(rows) == 1
    reference, project, gap = map(float, rows[0])
    assert gap == pytest.approx(project - reference, abs=0.011)


@pytest.mark.slow  # starts Python and torch
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what the GPU check says where there is no GPU")
def test_gpu_check_without_a_gpu_stops_in_one_line_before_any_work(tmp_path):
    report = tmp_path / "gpu-check.md"
    env = {**os.environ, "PYTHON": sys.executable}  # this environment: nothing to install
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(report)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: params.yaml: train.device: 'cuda' was asked for but PyTorch sees no CUDA device")
    ), out.stderr
    assert not report.exists()


def test_forward_flop_count_is_the_hand_count_of_the_forward():
    counts = common.flop_counts(ModelConfig(image_size=227, dropout=0.5), backward=False)
    assert sum(counts["Global"].values()) == sum(forward for forward, _ in hand_counts(227).values())


@pytest.mark.slow
@needs_real_mnist
def test_serve_load_brief_run_fails_no_request_and_keeps_its_memory(tmp_path):
    """16 clients for a few seconds on an untrained ONNX export at 67x67: every answer right, memory bounded."""
    out = tmp_path / "report.md"
    args = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--untrained", "67"]
    args += ["--clients", "16", "--seconds", "4", "--output", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = out.read_text()
    assert report.strip() in result.stdout
    assert "untrained-67.onnx (67x67)" in report
    (row,) = re.findall(
        r"^\| (\d+) \| (\d+) \| (\d+\.\d) \| (\d+\.\d) \| (\d+\.\d) \| (\d+), (\d+) \(([+-]\d+)\) \|$", report, re.M
    )
    requests, failed, growth = int(row[0]), int(row[1]), int(row[7])
    assert failed == 0 and requests >= 16
    assert growth <= 50  # MiB: the target of a 30 s run (docs/serve.md); a leak per request passes it
    assert float(row[3]) <= float(row[4])  # p50 <= p99
    floor = re.search(r"= (\d+\.\d) images/s at best; the server reached (\d+\.\d\d) of it", report)
    assert floor and float(floor[2]) == pytest.approx(float(row[2]) / float(floor[1]), abs=0.01)
    # the server's own account of the time: its three parts, each no longer than the whole at the median
    phases = dict(re.findall(r"^\| ([^|]+?) \| (-?\d+\.\d) \| -?\d+\.\d \|$", report, re.M))
    assert len(phases) == 4, report
    server_side = [float(v) for k, v in phases.items() if "(server)" in k]
    assert len(server_side) == 3 and all(0 <= v <= float(row[3]) for v in server_side)
    batch = re.search(r"Digits per forward pass, as requests saw them: mean (\d+\.\d), max (\d+)\.", report)
    assert batch and 1 <= float(batch[1]) <= int(batch[2]) <= 16
