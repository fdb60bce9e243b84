"""Training and evaluation speed of this project's loop against the seed's, on one machine, in one run.

The seed's loop: torchvision's MNIST dataset with per-sample Resize + ToTensor + Normalize in a
DataLoader, fp32, default memory layout, PyTorch's nn.LocalResponseNorm, loss.item() every step,
and (here) no final Softmax, so both loops train the same network. The project's loop: the
train stage's code (tensors on the device, per-batch resize, channels_last, bf16 where native,
the exact LRN, fused Adam, no per-step host sync).

Beside images/s, each loop's model FLOPs utilization (MFU): its training FLOP/s (the network's
FLOPs per image, counted from the layer shapes, times images/s) over the FLOP/s of a large matrix
product in the same precision, timed in the same process; and where a project training step
spends its time, by layer and part (torch.profiler), with each part's FLOP/s against that peak.

Each measurement runs in a fresh process, so peak memory is its own. Usage, from the repo root:
    MNIST_MIRROR=../shared/data/mnist python benchmarks/train_speed.py                 # full run
    MNIST_MIRROR=../shared/data/mnist python benchmarks/train_speed.py --no-accuracy   # speed, MFU, profile only
    MNIST_MIRROR=../shared/data/mnist python benchmarks/train_speed.py --smoke         # checks that it runs
It prints a Markdown report (also written to --output when given). The report names the CPU
kernels' instruction sets and the environment variables that cap them (ISA_ENV), so a run as an
AVX2-only CPU would do it is labelled as such:
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/train_speed.py --precision fp32 --no-accuracy
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST_TRAIN_IMAGES = 60_000  # images in MNIST's training files, validation hold-out included


def settings():
    """(data, model, train, evaluate) sections of params.yaml: normalization, split, network and optimizer as the pipeline has them."""
    from alexnet_mnist.model import ModelConfig
    from alexnet_mnist.params import DataParams, EvaluateParams, TrainParams, load_params

    return load_params(ROOT / "params.yaml", data=DataParams, model=ModelConfig, train=TrainParams,
                       evaluate=EvaluateParams)


# ---------------------------------------------------------------- data, shared by both loops

def raw_folder(scratch: Path) -> Path:
    """A torchvision-style root (root/MNIST/raw/<uncompressed files>) with the verified MNIST files."""
    from alexnet_mnist.download import MIRROR_ENV, download, read_checksums, sources

    raw = scratch / "MNIST" / "raw"
    existing = ROOT / "data" / "raw"
    mirror = str(existing) if existing.is_dir() else os.environ.get(MIRROR_ENV)
    download(raw, read_checksums(ROOT / "mnist.sha256"), sources(mirror, []))
    return scratch


def indices(data, train_size: int):
    """The training images' indices, drawn as the prepare stage draws them (data.val_size, data.seed)."""
    from alexnet_mnist.prepare import split_indices

    train_idx, _ = split_indices(MNIST_TRAIN_IMAGES, data.val_size, train_size, data.seed)
    return train_idx


def project_tensors(root: Path, data, train_idx, test: bool):
    """The prepare stage's cached form: normalized (N, 1, 28, 28) float32 and int64 labels."""
    import torch

    from alexnet_mnist.idx import read_images, read_labels
    from alexnet_mnist.prepare import normalize

    prefix = "t10k" if test else "train"
    images = read_images(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte")
    labels = read_labels(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte")
    if train_idx is not None:
        images, labels = images[train_idx], labels[train_idx]
    return {"images": normalize(images, data.mean, data.std), "labels": torch.from_numpy(labels.astype("int64"))}


def seed_loader(root: Path, data, size: int, train_idx, test: bool, batch_size: int, seed: int):
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import MNIST

    transform = T.Compose([T.Resize(size), T.ToTensor(), T.Normalize((data.mean,), (data.std,))])
    dataset = MNIST(str(root), train=not test, download=False, transform=transform)
    if train_idx is not None:
        dataset = Subset(dataset, train_idx.tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=not test,
                      generator=torch.Generator().manual_seed(seed))


def seed_model(config, device):
    """The same AlexNet with torch.nn's own LocalResponseNorm and Dropout, as the seed builds it."""
    from torch import nn

    from alexnet_mnist.model import AlexNet, Dropout, LocalResponseNorm

    model = AlexNet(config)
    for seq in (model.features, model.classifier):
        for i, layer in enumerate(seq):
            if isinstance(layer, LocalResponseNorm):
                seq[i] = nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
            elif isinstance(layer, Dropout):
                seq[i] = nn.Dropout(layer.p)
    return model.to(device)


# ---------------------------------------------------------------- FLOPs and the machine's peak

# counted op -> the part of a training step it belongs to (see PROFILE_PARTS); in the torch.nn network
# these are all the counted ops: the LRN (avg_pool3d), pooling, ReLU, dropout, loss and Adam count none
FLOP_PARTS = {"aten.convolution": "conv forward", "aten.convolution_backward": "conv backward",
              "aten.addmm": "linear forward", "aten.mm": "linear backward"}


def flop_counts(config) -> dict[str, dict[str, int]]:
    """FLOPs of one training step per image: module name ('Global' for all) -> op -> FLOPs.

    torch.utils.flop_counter's count of one forward and backward pass of the network at batch 1
    (all counted ops scale with the batch): 2 FLOPs per multiply-add of the convolutions and
    fully connected layers, and of the backward only the gradients autograd computes (none for
    the input image). Counted on the torch.nn network on the meta device (shapes only, no
    arithmetic); the project's LRN, a matrix product with a 0/1 band matrix, would add FLOPs that
    are an implementation's, not the network's.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = seed_model(config, torch.device("meta"))
        x = torch.zeros(1, 1, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return {module: {str(op): n for op, n in ops.items()} for module, ops in counter.get_flop_counts().items()}


GEMM_SECONDS = 0.5  # per timed repetition of the peak GEMM: long enough that one call's jitter is small


def gemm_flops_per_s(device, precision: str, n: int) -> float:
    """The FLOP/s of torch.mm on two n x n matrices in `precision` on `device`, with this process's threads.

    The fastest of 3 repetitions of about GEMM_SECONDS each, after a warm-up call: the matrix
    multiply the framework reaches at its best on this device, the denominator of MFU.
    """
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = []
    for calls in (1, None, None, None):  # a warm-up call that also sizes the repetitions, then 3 timed
        calls = calls or max(1, round(GEMM_SECONDS / times[0]))
        sync(device)
        began = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        sync(device)
        times.append((time.perf_counter() - began) / calls)
    return 2 * n**3 / min(times[1:])


# ---------------------------------------------------------------- where a project step spends its time

# profiler event -> part of the step; an event's ops inherit its part. Events: each layer's forward (a
# scope named "forward <class>" by layer_labels), autograd's backward nodes, Adam's own scopes, and the
# loop's input ops; the rest of the loop is "other"
PROFILE_PARTS = {
    "forward Conv2d": "conv forward",
    "ConvolutionBackward0": "conv backward",  # input and weight gradients in one op
    "forward Linear": "linear forward",
    "AddmmBackward0": "linear backward", "MmBackward0": "linear backward", "TBackward0": "linear backward",
    "forward LocalResponseNorm": "LRN", "_LocalResponseNormBackward": "LRN",
    "forward MaxPool2d": "pooling", "MaxPool2DWithIndicesBackward0": "pooling",
    "forward ReLU": "ReLU", "ReluBackward0": "ReLU", "ThresholdBackward0": "ReLU",
    "forward Dropout": "dropout", "MulBackward0": "dropout",  # (and the loss's scalar scaling, tiny)
    "ToCopyBackward0": "dtype casts",
    "aten::cross_entropy_loss": "loss", "LogSoftmaxBackward0": "loss", "NllLossBackward0": "loss",
    "Optimizer.step#Adam.step": "optimizer", "Optimizer.zero_grad#Adam.zero_grad": "optimizer",
    "torch::autograd::AccumulateGrad": "optimizer",
    "aten::index": "input (gather, resize)", "aten::upsample_bilinear2d": "input (gather, resize)",
}
# every copy to another dtype, with its subtree: autocast's bf16 copies of weights and activations,
# the LRN's float32 copies, the dropout mask's conversion
CASTS = ("aten::to", "aten::_to_copy")
PARTS = ["conv forward", "conv backward", "linear forward", "linear backward", "LRN", "pooling", "ReLU",
         "dropout", "dtype casts", "loss", "optimizer", "input (gather, resize)", "other"]
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


@contextlib.contextmanager
def layer_labels(model):
    """While open, each leaf layer's forward runs in a profiler scope "forward <class>", so its ops group by layer."""
    from torch.autograd.profiler import record_function

    scopes = []

    def enter(module, args):
        scopes.append(record_function(f"forward {type(module).__name__}"))
        scopes[-1].__enter__()

    def leave(module, args, output):
        scopes.pop().__exit__(None, None, None)

    handles = []
    for module in model.modules():
        if not any(module.children()):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def part_seconds(events, device) -> dict[str, float]:
    """Part of the step (PARTS) -> seconds: each event's self time, CPU time on the CPU, kernel time on CUDA."""
    from torch.autograd import DeviceType

    seconds = dict.fromkeys(PARTS, 0.0)

    def attribute(event, part):
        name = event.name.removeprefix(BACKWARD_PREFIX)
        part = "dtype casts" if name in CASTS else PROFILE_PARTS.get(name, part)
        own = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        seconds[part] += own / 1e6  # microseconds
        for child in event.cpu_children:
            attribute(child, part)

    for event in events:
        if event.cpu_parent is None and event.device_type == DeviceType.CPU:  # kernels count within their op
            attribute(event, "other")
    return seconds


# ---------------------------------------------------------------- one measurement per process

def peak_memory_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def job_settings(job: dict):
    """(data params, model config, train params, evaluate batch) of `job`: params.yaml's, with what the benchmark varies."""
    data, model, train, evaluate = settings()
    config = dataclasses.replace(model, image_size=job["size"])
    # one process, constant lr and no augmentation: the seed's loop has neither
    train = dataclasses.replace(train, epochs=job.get("epochs", 1), seed=job.get("seed", 0), device=job["device"],
                                precision=job.get("precision", "auto"), compile=job.get("compile", False), nproc=1,
                                lr_decay=1.0, shift=0.0, rotate=0.0)
    return data, config, train, evaluate.batch_size


def measure(job: dict) -> dict:
    """Run one job ({'loop', 'what', 'size', ...}) in this process; return its numbers."""
    import torch

    from alexnet_mnist import device as dev
    from alexnet_mnist.evaluate import predict

    if job["loop"] == "project":
        dev.tune_cpu()  # as the train and evaluate stages do
    device = dev.resolve_device(job["device"])
    root = Path(job["root"])
    data, config, params, eval_batch = job_settings(job)
    size, batch, seed = config.image_size, params.batch_size, params.seed
    torch.manual_seed(seed)
    train_idx = indices(data, job["train_size"])
    result = {}

    if job["loop"] == "seed":
        model = seed_model(config, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        criterion = torch.nn.CrossEntropyLoss()

        def train_steps(loader, steps=None):
            model.train()
            for step, (images, labels) in enumerate(loader):
                if steps is not None and step == steps:
                    break
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad()
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                loss.item()  # the seed's running-loss bookkeeping: a host sync every step

        def evaluate(test_loader):
            model.eval()
            correct = total = 0
            with torch.no_grad():
                for images, labels in test_loader:
                    out = model(images.to(device))
                    correct += (out.argmax(1).cpu() == labels).sum().item()
                    total += len(labels)
            return correct / total

        if job["what"] == "speed":
            loader = seed_loader(root, data, size, train_idx, False, batch, seed)
            train_steps(loader, job["warmup"])
            sync(device)
            began = time.perf_counter()
            train_steps(loader, job["steps"])
            sync(device)
            result["train_images_per_s"] = job["steps"] * batch / (time.perf_counter() - began)
            test_loader = seed_loader(root, data, size, None, True, eval_batch, 0)
            first = next(iter(test_loader))  # warm-up batch
            model.eval()
            with torch.no_grad():
                model(first[0].to(device))
            sync(device)
            began, seen = time.perf_counter(), 0
            with torch.no_grad():
                for images, _ in test_loader:
                    model(images.to(device))
                    seen += len(images)
                    if seen >= job["eval_images"]:
                        break
            sync(device)
            result["eval_images_per_s"] = seen / (time.perf_counter() - began)
            result["peak_memory_mb"] = peak_memory_mb(device)  # before the GEMM's matrices
            result["gemm_flops_per_s"] = gemm_flops_per_s(device, "fp32", job["gemm_size"])
        else:
            loader = seed_loader(root, data, size, train_idx, False, batch, seed)
            test_loader = seed_loader(root, data, size, None, True, eval_batch, 0)
            result["test_accuracy"] = []  # after each epoch
            for _ in range(params.epochs):
                train_steps(loader)
                result["test_accuracy"].append(evaluate(test_loader))
    else:
        from alexnet_mnist.train import fit, start, train_epoch

        precision = dev.resolve_precision(params.precision, device)
        result["precision"] = precision
        train_set = project_tensors(root, data, train_idx, test=False)
        test = project_tensors(root, data, None, test=True)
        if job["what"] == "speed":
            run = start(config, params, device)
            step_fn = torch.compile(run.model) if params.compile else run.model
            images, labels = train_set["images"].to(device), train_set["labels"].to(device)
            n_warm, n_time = job["warmup"] * batch, job["steps"] * batch
            train_epoch(run, step_fn, images[:n_warm], labels[:n_warm], params, precision)
            sync(device)
            began = time.perf_counter()
            train_epoch(run, step_fn, images[n_warm : n_warm + n_time], labels[n_warm : n_warm + n_time],
                        params, precision)
            sync(device)
            result["train_images_per_s"] = n_time / (time.perf_counter() - began)
            n_eval = job["eval_images"]
            test_images = test["images"][: eval_batch + n_eval].to(device)
            test_labels = test["labels"][: eval_batch + n_eval].to(device)
            predict(run.model, test_images[:eval_batch], test_labels[:eval_batch], eval_batch, precision)  # warm-up
            sync(device)
            began = time.perf_counter()
            predict(run.model, test_images[eval_batch:], test_labels[eval_batch:], eval_batch, precision)
            sync(device)
            result["eval_images_per_s"] = n_eval / (time.perf_counter() - began)
            result["peak_memory_mb"] = peak_memory_mb(device)  # before the GEMM's matrices
            result["gemm_flops_per_s"] = gemm_flops_per_s(device, precision, job["gemm_size"])
        elif job["what"] == "profile":
            from torch.profiler import ProfilerActivity, profile

            run = start(config, params, device)
            images, labels = train_set["images"].to(device), train_set["labels"].to(device)
            n_warm, n_profile = job["warmup"] * batch, job["steps"] * batch
            train_epoch(run, run.model, images[:n_warm], labels[:n_warm], params, precision)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            sync(device)
            with layer_labels(run.model), profile(activities=activities) as prof:
                began = time.perf_counter()
                train_epoch(run, run.model, images[n_warm : n_warm + n_profile],
                            labels[n_warm : n_warm + n_profile], params, precision)
                sync(device)
                result["wall_seconds"] = time.perf_counter() - began
            result["part_seconds"] = part_seconds(prof.events(), device)
        else:
            # the test images as fit's validation set: its validation accuracy after each epoch is the
            # test accuracy after each epoch (evaluation draws no random numbers, so training is unchanged)
            run = fit(train_set, test, config, params, device, precision)
            result["test_accuracy"] = [row["val_accuracy"] for row in run.history]
    result.setdefault("peak_memory_mb", peak_memory_mb(device))
    return result


def spawn(job: dict) -> dict:
    """Run `job` in a fresh Python process; return its result."""
    out = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark job {job} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the report

# caps on the instruction set of the CPU kernels: oneDNN's (convolutions, bf16 matrix products), ATen's
# own (elementwise, pooling, resize), MKL's (fp32 matrix products: fully connected layers, the fp32 peak)
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def onednn_isa() -> str:
    """The instruction set oneDNN runs on in a process of this environment, as its verbose mode reports it."""
    code = ("import torch; x = torch.randn(2, 16, 32, 32).to(memory_format=torch.channels_last); "
            "torch.nn.functional.conv2d(x, torch.randn(16, 16, 3, 3).to(memory_format=torch.channels_last))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"})
    found = [line.split(",isa:", 1)[1] for line in out.stdout.splitlines() if ",isa:" in line]
    return found[0].strip() if found else "not reported"


def cpu_lines(project_precision: str, device) -> list[str]:
    """What the CPU offers and which of it the kernels may use, with a note where a cap and the precision disagree."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    fields = [line.split(":", 1) for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if ":" in line]
    first = {}  # the first CPU's fields: all cores of one machine report the same
    for key, value in fields:
        first.setdefault(key.strip(), value.strip())
    flags = set(first.get("flags", "").split())

    def has(flag: str) -> str:
        return ("yes" if flag in flags else "no") if flags else "not reported"

    name = first.get("model name") or platform.processor() or platform.machine()
    model = f" (family {first['cpu family']}, model {first['model']})" if "cpu family" in first and "model" in first else ""
    caps = ", ".join(f"{key}={os.environ.get(key, 'unset')}" for key in ISA_ENV)
    lines = [f"CPU: {name}{model}; hardware flags (/proc/cpuinfo): AVX512-BF16 {has('avx512_bf16')}, "
             f"AMX {has('amx_tile')}; kernels: ATen {torch.backends.cpu.get_cpu_capability()}, "
             f"oneDNN {onednn_isa()}; {caps}."]
    capped = [key for key in ISA_ENV if os.environ.get(key)]
    if capped and device.type == "cpu" and project_precision == "bf16":
        lines.append("Note: the instruction sets are capped but the project loop ran bf16, which a CPU without "
                     "native bf16 does not (train.precision auto picks fp32 there); add --precision fp32 for its path.")
    if os.environ.get("ONEDNN_MAX_CPU_ISA") and not os.environ.get("MKL_ENABLE_INSTRUCTIONS") \
            and torch.backends.mkl.is_available():
        lines.append("Note: fp32 matrix products (fully connected layers, the fp32 peak GEMM) run in MKL, which "
                     "ONEDNN_MAX_CPU_ISA does not cap; set MKL_ENABLE_INSTRUCTIONS as well.")
    return lines


def mfu_row(size: int, label: str, runs: list[dict], per_image: float) -> str:
    """Markdown row: GFLOP per image, training GFLOP/s and peak GEMM GFLOP/s (medians), MFU (median of each process's)."""
    train = statistics.median(run["train_images_per_s"] for run in runs) * per_image
    peak = statistics.median(run["gemm_flops_per_s"] for run in runs)
    mfu = statistics.median(run["train_images_per_s"] * per_image / run["gemm_flops_per_s"] for run in runs)
    return f"| {size} | {label} | {per_image / 1e9:.3f} | {train / 1e9:.1f} | {peak / 1e9:.1f} | {mfu:.3f} |"


def profile_rows(part_seconds: dict, steps: int, part_flops: dict, peak: float) -> list[str]:
    """Markdown rows, one per part of the step and one for all: ms per step, share, and where it has FLOPs, GFLOP/s and fraction of `peak`."""
    total = sum(part_seconds.values())

    def row(name, seconds, flops):  # flops per step
        rate = flops * steps / seconds if flops and seconds else None
        speed = f"{flops / 1e9:.2f} | {rate / 1e9:.1f} | {rate / peak:.3f}" if rate else "- | - | -"
        return f"| {name} | {seconds / steps * 1e3:.1f} | {100 * seconds / total:.1f}% | {speed} |"

    return [row(part, part_seconds[part], part_flops.get(part, 0)) for part in PARTS] + \
           [row("all", total, sum(part_flops.values()))]


def accuracy_rows(accuracy: dict, epochs: int) -> list[str]:
    """Markdown rows, one per epoch: each loop's mean test accuracy over seeds (%), each seed's, and the gap."""
    rows = []
    for epoch in range(epochs):
        cells, means = [], []
        for loop in ("seed", "project"):
            each = [100 * per_epoch[epoch] for per_epoch in accuracy[loop]]
            means.append(statistics.mean(each))
            cells.append(f"{means[-1]:.2f}% ({', '.join(f'{a:.2f}' for a in each)})")
        rows.append(f"| {epoch + 1} | {cells[0]} | {cells[1]} | {means[1] - means[0]:+.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sizes", default="227,67", help="image sizes to time, comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (of train.batch_size) per process")
    parser.add_argument("--rounds", type=int, default=3,
                        help="fresh processes per loop and size, seed and project alternating; the median counts")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps before timing (the allocator settles within about 5 steps)")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images timed for evaluation")
    parser.add_argument("--gemm-size", type=int, default=4096,
                        help="side of the square matrices whose product measures the peak FLOP/s of MFU")
    parser.add_argument("--profile-steps", type=int, default=3,
                        help="project training steps profiled per size after the warm-up; 0: no profile")
    parser.add_argument("--quick-size", type=int, default=67, help="image size of the accuracy comparison")
    parser.add_argument("--train-size", type=int,
                        help="training images, accuracy comparison (default: all but params.yaml's data.val_size)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the accuracy comparison")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the accuracy comparison; '' skips it")
    parser.add_argument("--no-accuracy", action="store_true",
                        help="speed only: skip the accuracy comparison (most of a full run's time)")
    parser.add_argument("--compile", action="store_true", help="also time the project loop under torch.compile")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="the project loop's train.precision (the seed loop is always fp32)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks that everything runs")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return
    if args.smoke:
        args.sizes, args.steps, args.rounds, args.warmup, args.eval_images = "67", 2, 1, 1, 1000
        args.gemm_size, args.profile_steps = 1024, 2
        args.train_size, args.epochs = 256, 1
        args.seeds = "0" if args.seeds else ""
    seeds = [] if args.no_accuracy else [int(seed) for seed in args.seeds.split(",") if seed.strip()]

    from alexnet_mnist.device import describe, resolve_device, resolve_precision

    data, model, train, evaluate = settings()
    batch = train.batch_size
    all_train = MNIST_TRAIN_IMAGES - data.val_size  # training images of the default config
    args.train_size = args.train_size or all_train
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)  # the project loop's
    scratch = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    root = str(raw_folder(scratch))
    needed = (args.warmup + max(args.steps, args.profile_steps)) * batch  # training images the timed steps use
    common = {"device": args.device, "root": root, "train_size": max(args.train_size, needed),
              "precision": args.precision}
    lines = [
        "| image size | loop | train images/s | eval images/s | peak memory (MiB) |",
        "|---:|---|---:|---:|---:|",
    ]
    mfu_lines = [
        "| image size | loop | GFLOP per image | train GFLOP/s | peak GEMM GFLOP/s | MFU |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    speedups, profiles = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        loops = ["seed", "project"] + (["project+compile"] if args.compile else [])
        counts = flop_counts(dataclasses.replace(model, image_size=size))["Global"]
        per_image = sum(counts.values())  # FLOPs of one training step per image
        runs = {loop: [] for loop in loops}
        for _ in range(args.rounds):  # alternate the loops, so drifts of machine speed hit both alike
            for loop in loops:
                job = {**common, "loop": loop.split("+")[0], "what": "speed", "size": size, "steps": args.steps,
                       "warmup": args.warmup, "eval_images": args.eval_images, "compile": loop.endswith("compile"),
                       "gemm_size": args.gemm_size}
                runs[loop].append(spawn(job))
                print(f"{size} {loop}: {runs[loop][-1]}", file=sys.stderr, flush=True)
        found = {}
        for loop in loops:
            found[loop] = r = {key: statistics.median(run[key] for run in runs[loop])
                               for key in ("train_images_per_s", "eval_images_per_s", "peak_memory_mb",
                                           "gemm_flops_per_s")}
            label = loop + (f" ({runs[loop][0]['precision']})" if "precision" in runs[loop][0] else " (fp32)")
            lines.append(f"| {size} | {label} | {r['train_images_per_s']:.1f} | {r['eval_images_per_s']:.1f} | "
                         f"{r['peak_memory_mb']:.0f} |")
            mfu_lines.append(mfu_row(size, label, runs[loop], per_image))
        epoch = all_train / found["project"]["train_images_per_s"]  # seconds per default-config epoch
        speedups.append(f"- {size}x{size}: one {all_train:,}-image epoch of the project's loop at this rate: {epoch:.1f} s")
        for loop in loops[1:]:
            speedups.append(
                f"- {size}x{size}, {loop}: training {found[loop]['train_images_per_s'] / found['seed']['train_images_per_s']:.2f}x "
                f"the seed loop, evaluation {found[loop]['eval_images_per_s'] / found['seed']['eval_images_per_s']:.2f}x"
            )
        if args.profile_steps:
            job = {**common, "loop": "project", "what": "profile", "size": size, "steps": args.profile_steps,
                   "warmup": args.warmup}
            prof = spawn(job)
            print(f"{size} profile: {prof}", file=sys.stderr, flush=True)
            part_flops = {}  # FLOPs per step
            for op, n in counts.items():
                part_flops[FLOP_PARTS[op]] = part_flops.get(FLOP_PARTS[op], 0) + n * batch
            peak = found["project"]["gemm_flops_per_s"]
            profiles += [
                "",
                f"{size}x{size}, project ({precision}): {args.profile_steps} profiled steps took "
                f"{prof['wall_seconds'] / args.profile_steps * 1e3:.1f} ms each (wall, profiler on); peak GEMM "
                f"{peak / 1e9:.1f} GFLOP/s (the median above).",
                "",
                "| part of the step | ms per step | share | GFLOP per step | GFLOP/s | of peak |",
                "|---|---:|---:|---:|---:|---:|",
                *profile_rows(prof["part_seconds"], args.profile_steps, part_flops, peak),
            ]
    accuracy = {"seed": [], "project": []}  # per loop, per seed: test accuracy after each epoch
    for seed in seeds:
        for loop in accuracy:
            job = {**common, "loop": loop, "what": "accuracy", "size": args.quick_size, "seed": seed,
                   "epochs": args.epochs, "train_size": args.train_size}
            accuracy[loop].append(spawn(job)["test_accuracy"])
            print(f"accuracy {loop} seed {seed}: {accuracy[loop][-1]}", file=sys.stderr, flush=True)
    info = describe(device, "")
    caps = [f"{key}={os.environ[key]}" for key in ISA_ENV if os.environ.get(key)]
    report = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"device {info['device_name']}; torch {info['torch_version']}, {info['threads']} threads.",
        *cpu_lines(precision, device),
        f"Command: `{' '.join([*caps, 'python', 'benchmarks/train_speed.py', *sys.argv[1:]])}`",
        f"Timing: in each of {args.rounds} fresh processes per loop and size (seed and project alternating), "
        f"{args.warmup} warm-up steps then {args.steps} timed training steps of batch {batch}, and "
        f"evaluation of {args.eval_images} test images in batches of {evaluate.batch_size} after one warm-up batch; "
        f"the table gives the median over processes.",
        "",
        *lines,
        "",
        "Speed-up of the project's loop:",
        *speedups,
        "",
        "Model FLOPs utilization (MFU): training FLOP/s over the peak FLOP/s of the same device, precision and "
        "threads. Training FLOPs per image: the convolutions' and fully connected layers' multiply-adds (2 FLOPs "
        "each) of one forward and backward pass, counted by torch.utils.flop_counter from the layer shapes. "
        f"Peak: the fastest of 3 repetitions of a {args.gemm_size}x{args.gemm_size} matrix product (torch.mm) in "
        "the loop's precision, timed in each process after its loop. MFU is each process's ratio, median over "
        "processes.",
        "",
        *mfu_lines,
    ]
    if profiles:
        report += [
            "",
            "Where a training step of the project loop spends its time (torch.profiler, in a fresh process after "
            f"{args.warmup} warm-up steps): each op's own time, {'kernel time on the GPU' if device.type == 'cuda' else 'on the training thread (the intra-op threads work within it)'}, "
            "summed by the layer or step part it runs for; every copy to another dtype (autocast's bf16 copies, "
            "the LRN's float32 ones) counts as dtype casts. GFLOP/s where the part has counted FLOPs, and its "
            "fraction of the peak GEMM.",
            *profiles,
        ]
    if seeds:
        report += [
            "",
            f"Test accuracy after the same training ({args.train_size} images, {args.epochs} epochs, "
            f"{args.quick_size}x{args.quick_size}, seeds {','.join(map(str, seeds))}), all 10,000 test images; the "
            "last epoch's row is the result, earlier rows show how it got there (mean over seeds, and each seed's):",
            "",
            f"| after epoch | seed loop (fp32) | project loop ({precision}) | difference (points) |",
            "|---:|---|---|---:|",
            *accuracy_rows(accuracy, args.epochs),
        ]
    report = "\n".join(report)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
