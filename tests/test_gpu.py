"""The CUDA path: the LRN on the GPU, deterministic training, the train stage on CUDA and its resume, DDP over
NCCL, torch.compile, evaluation in bf16, and a CUDA-trained model used on a CPU-only machine. Skipped without CUDA;
each test leaves the process's deterministic settings as it found them."""

import json
import os
import subprocess

import pytest
import torch
from conftest import (
    BIN,
    PATHS,
    assert_same_weights,
    make_project,
    saved_weights,
    synthetic_mnist,
    tiny_params,
    train_params,
    write_mnist,
)
from PIL import Image
from torch import nn

from alexnet_mnist.device import make_deterministic, resolve_precision
from alexnet_mnist.lrn import GPU_BLOCK_ELEMENTS
from alexnet_mnist.model import LocalResponseNorm, ModelConfig
from alexnet_mnist.train import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("restore_determinism"),
]
CUDA = torch.device("cuda")


def on_cuda(train: dict | None = None, evaluate: dict | None = None) -> dict:
    """The tiny test params with train.device and evaluate.device cuda, deterministic kernels, and `train`,
    `evaluate` on top."""
    return tiny_params(
        train={"device": "cuda", "deterministic": True, **(train or {})},
        evaluate={"device": "cuda", **(evaluate or {})},
    )


def auto_precision() -> str:
    """What precision auto is on this GPU."""
    return resolve_precision("auto", CUDA)


def synthetic_split(n: int) -> dict:
    images, labels = synthetic_mnist(n, seed=1)
    return {"images": torch.from_numpy(images).float().div(255).unsqueeze(1), "labels": torch.from_numpy(labels).long()}


def test_lrn_matches_pytorch_on_cuda():
    x = (torch.randn(4, 96, 27, 27, device=CUDA, dtype=torch.float64) * 30).requires_grad_()
    y = x.detach().clone().requires_grad_()
    ours, ref = LocalResponseNorm(5)(x), nn.LocalResponseNorm(5)(y)
    grad = torch.randn_like(ref)
    ours.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(x.grad, y.grad)


def test_lrn_evaluates_a_big_batch_with_one_blocks_temporaries():
    x = torch.relu(torch.randn(1000, 96, 55, 55, device=CUDA, dtype=torch.bfloat16)).contiguous(
        memory_format=torch.channels_last
    )  # the first LRN's input for evaluate's batch at 227x227: 290 million values
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.inference_mode():
        out = LocalResponseNorm(5)(x)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    # the output, and float32 blocks of d, d^-beta and the padded squares (about 4 block sizes); the whole
    # batch at once would take 3 float32 copies of it, 3.5 GB
    assert extra <= out.numel() * out.element_size() + 4 * GPU_BLOCK_ELEMENTS * 4 + (1 << 24), extra
    with torch.inference_mode():
        torch.testing.assert_close(out[:8], LocalResponseNorm(5)(x[:8]), rtol=0, atol=0)


def test_deterministic_cuda_training_is_bitwise_repeatable():
    make_deterministic(CUDA)
    data = synthetic_split(256)
    params = train_params(epochs=1, batch_size=32, seed=3, device="cuda", precision="bf16", deterministic=True)
    runs = [fit(data, data, ModelConfig(image_size=227, dropout=0.5), params, CUDA, "bf16") for _ in range(2)]
    assert_same_weights(*(r.model.state_dict() for r in runs))


def test_compiled_training_on_cuda_compiles_once_and_learns():
    from torch._dynamo.utils import counters  # imports torch.compile's machinery: only where it runs

    torch._dynamo.reset()
    counters.clear()
    data = synthetic_split(200)  # batches of 64, 64, 64 and 8: the short one runs uncompiled
    params = train_params(epochs=2, batch_size=64, seed=0, device="cuda", precision="bf16", compile=True)
    run = fit(data, data, ModelConfig(image_size=67, dropout=0.5), params, CUDA, "bf16")
    assert counters["stats"]["unique_graphs"] == 1
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    """A tiny project after `dvc repro` with train.device and evaluate.device cuda (deterministic kernels)."""
    tmp = tmp_path_factory.mktemp("cuda")
    project = make_project(tmp / "project", tmp / "mirror", write_mnist(tmp / "mirror"), on_cuda())
    project.first_repro = project.dvc("repro").stdout
    return project


def test_train_stage_trains_on_cuda(cuda_run):
    assert f"device cuda, precision {auto_precision()}, 1 process(es)" in cuda_run.first_repro
    assert json.loads((cuda_run.path / PATHS["eval_metrics"]).read_text())["samples"] == 100


def test_cuda_trained_model_exports_and_predicts_on_a_cpu_only_machine(cuda_run, tmp_path):
    export = json.loads((cuda_run.path / PATHS["export_metrics"]).read_text())  # the export stage runs on the CPU
    assert export["prediction_agreement"] == 1.0
    digits = tmp_path / "digits"
    digits.mkdir()
    images, _ = synthetic_mnist(3, seed=5)
    for i, image in enumerate(images):
        Image.fromarray(image).save(digits / f"digit-{i}.png")
    env = {**cuda_run.env, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible: as on a CPU-only machine
    for model in (PATHS["model"], PATHS["onnx"]):
        command = [str(BIN / "alexnet-mnist"), "predict", str(digits), "--model", model]
        result = subprocess.run(command, cwd=cuda_run.path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 3, result.stdout + result.stderr


def test_evaluate_in_bf16_on_cuda_agrees_with_fp32_on_the_cpu(cuda_run):
    metrics = {}
    for device, precision in (("cuda", "bf16"), ("cpu", "fp32")):
        cuda_run.write_params(on_cuda(evaluate={"device": device, "precision": precision}))
        cuda_run.stage("evaluate", check=True)
        metrics[device] = json.loads((cuda_run.path / PATHS["eval_metrics"]).read_text())
    cuda_run.write_params(on_cuda())
    # bf16 rounds the logits to about 3 significant digits: the mean loss moves little, and only
    # near-ties can change their prediction
    assert metrics["cuda"]["loss"] == pytest.approx(metrics["cpu"]["loss"], rel=0.03, abs=0.01), metrics
    assert abs(metrics["cuda"]["accuracy"] - metrics["cpu"]["accuracy"]) <= 0.03, metrics


def test_raising_epochs_resumes_on_cuda_to_the_uninterrupted_weights(cuda_run, tmp_path):
    cuda_run.write_params(on_cuda(train={"epochs": 2}))
    assert "resuming from models/checkpoint.pt: 1 of 2 epochs already done" in cuda_run.dvc("repro", "train").stdout
    mirror = tmp_path / "mirror"
    straight = make_project(tmp_path / "straight", mirror, write_mnist(mirror), on_cuda(train={"epochs": 2}))
    straight.dvc("repro", "train")
    assert_same_weights(saved_weights(cuda_run.path / PATHS["model"]), saved_weights(straight.path / PATHS["model"]))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_processes_train_over_nccl(tmp_path):
    mirror = tmp_path / "mirror"
    project = make_project(tmp_path / "project", mirror, write_mnist(mirror), on_cuda(train={"nproc": 2}))
    out = project.dvc("repro", "train").stdout
    assert f"device cuda:0, precision {auto_precision()}, 2 process(es)" in out
    assert (project.path / PATHS["model"]).is_file() and os.path.getsize(project.path / PATHS["model"]) > 0
