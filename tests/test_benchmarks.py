"""The speed benchmark: its FLOP count against a hand count from the layer shapes, the grouping of a
profiled step, its CPU labels, and (slow, real data) its --smoke run end to end.

The smoke run needs the real MNIST files (MNIST_MIRROR, as .ci/run sets it): the benchmark verifies
them against mnist.sha256. Its numbers are not checked there: speed is the benchmark's to measure.
"""

import dataclasses
import importlib.util
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from alexnet_mnist.model import AlexNet, ModelConfig
from alexnet_mnist.train import start, train_epoch
from conftest import ROOT, needs_real_mnist, train_params

_spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
train_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_speed)


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
    counts = train_speed.flop_counts(ModelConfig(image_size=227, dropout=0.5))
    # 96 filters of 11x11x1 at each of 55x55 output positions, 2 FLOPs per multiply-add
    assert counts["AlexNet.features.0"] == {"aten.convolution": 2 * 96 * 55 * 55 * 11 * 11 * 1,
                                            "aten.convolution_backward": 2 * 96 * 55 * 55 * 11 * 11 * 1}


@pytest.mark.parametrize("size", [67, 227])
def test_flop_count_matches_the_layer_shapes(size):
    counts = train_speed.flop_counts(ModelConfig(image_size=size, dropout=0.5))
    hand = hand_counts(size)
    for name, (forward, backward) in hand.items():
        ops = counts[name]
        assert ops.get("aten.convolution", 0) + ops.get("aten.addmm", 0) == forward, name
        assert ops.get("aten.convolution_backward", 0) + ops.get("aten.mm", 0) == backward, name
    assert sum(counts["Global"].values()) == sum(f + b for f, b in hand.values())
    assert set(counts["Global"]) == set(train_speed.FLOP_PARTS)  # every counted op belongs to a part of the step


def test_a_profiled_step_is_attributed_to_its_parts():
    from torch.profiler import ProfilerActivity, profile

    params = train_params(batch_size=4, device="cpu", precision="bf16")
    run = start(ModelConfig(image_size=67, dropout=0.5), params, torch.device("cpu"))
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    train_epoch(run, run.model, images[:4], labels[:4], params, "bf16")  # warm-up
    with train_speed.layer_labels(run.model), profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(run, run.model, images[4:], labels[4:], params, "bf16")
    seconds = train_speed.part_seconds(prof.events(), torch.device("cpu"))
    assert list(seconds) == train_speed.PARTS
    # every part has ops of its own (a renamed autograd node would leave its part empty)
    assert [part for part, s in seconds.items() if part != "other" and s <= 0] == []
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in run.model.modules())


def test_cpu_lines_name_the_instruction_set_caps(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    first, *notes = train_speed.cpu_lines("fp32", torch.device("cpu"))
    assert re.search(r"kernels: ATen \w+, oneDNN .*AVX2.*; ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=\S+, "
                     r"MKL_ENABLE_INSTRUCTIONS=unset\.$", first), first
    assert any("MKL_ENABLE_INSTRUCTIONS" in note for note in notes)  # fp32 matmuls are MKL's, not oneDNN's


@pytest.mark.slow
@needs_real_mnist
def test_smoke_run_reports_both_loops_their_ratio_mfu_profile_and_accuracy(tmp_path):
    report_path = tmp_path / "bench.md"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--smoke",
                          "--device", "cpu", "--output", str(report_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr
    report = report_path.read_text()
    assert out.stdout.rstrip().endswith(report.strip())  # after the download lines
    assert re.search(r"^CPU: .+; kernels: ATen \w+, oneDNN .+; ONEDNN_MAX_CPU_ISA=\S+, ATEN_CPU_CAPABILITY=\S+, "
                     r"MKL_ENABLE_INSTRUCTIONS=\S+\.$", report, re.M)
    assert re.search(r"^\| 67 \| seed \(fp32\) \| \d+\.\d \| \d+\.\d \| \d+ \|$", report, re.M)
    assert re.search(r"^\| 67 \| project \((bf16|fp32)\) \| \d+\.\d \| \d+\.\d \| \d+ \|$", report, re.M)
    assert re.search(r"^- 67x67, project: training \d+\.\d\dx the seed loop, evaluation \d+\.\d\dx", report, re.M)

    # MFU: one row per loop; the smoke runs one process each, so MFU is the row's own ratio
    model = dataclasses.replace(train_speed.settings()[1], image_size=67)
    per_image = sum(train_speed.flop_counts(model)["Global"].values())
    mfu = re.findall(r"^\| 67 \| (seed|project) \((?:bf16|fp32)\) \| (\d+\.\d{3}) \| (\d+\.\d) \| (\d+\.\d) \| "
                     r"(\d\.\d{3}) \|$", report, re.M)
    assert [row[0] for row in mfu] == ["seed", "project"]
    for _, gflop, train, peak, ratio in mfu:
        assert float(gflop) == pytest.approx(per_image / 1e9, abs=5e-4)
        assert float(ratio) == pytest.approx(float(train) / float(peak), abs=0.002 + 0.06 * float(ratio))

    # profile: one row per part of the step and one for all; the shares add up
    rows = re.findall(r"^\| ([a-zA-Z (),]+) \| (\d+\.\d) \| (\d+\.\d)% \| (.+) \|$", report, re.M)
    assert [row[0] for row in rows] == [*train_speed.PARTS, "all"]
    assert sum(float(row[2]) for row in rows[:-1]) == pytest.approx(100, abs=0.1 * len(rows))
    speeds = {row[0]: row[3] for row in rows}
    for part in ("conv forward", "conv backward", "linear forward", "linear backward", "all"):
        assert re.fullmatch(r"\d+\.\d\d \| \d+\.\d \| \d\.\d{3}", speeds[part]), part
    assert speeds["LRN"] == "- | - | -"

    # one row per epoch (the smoke trains one): each loop's mean and per-seed accuracy, and the gap
    rows = re.findall(r"^\| 1 \| (\d+\.\d\d)% \(\d+\.\d\d\) \| (\d+\.\d\d)% \(\d+\.\d\d\) \| ([+-]\d+\.\d\d) \|$",
                      report, re.M)
    assert len(rows) == 1
    seed, project, gap = map(float, rows[0])
    assert gap == pytest.approx(project - seed, abs=0.011)
