"""What the benchmarks share: the params, the real MNIST splits, one timing helper, FLOP counts, the
peak FLOP/s candidates, the band-matrix LRN they compare against, and the report's machine lines.

Imported by the scripts beside it (run from the repo root); nothing here runs on import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def settings():
    """(data, model, train, evaluate) sections of params.yaml, as the pipeline has them."""
    from alexnet_mnist.model import ModelConfig
    from alexnet_mnist.params import DataParams, EvaluateParams, TrainParams, load_params

    return load_params(
        ROOT / "params.yaml", data=DataParams, model=ModelConfig, train=TrainParams, evaluate=EvaluateParams
    )


def train_settings(size: int, **changes):
    """(model config at `size`, train params with `changes`) for one process, constant lr, no augmentation:
    the reference loop has neither, and a timing must not depend on the epoch."""
    _, model, train, _ = settings()
    changes = {"epochs": 1, "seed": 0, "nproc": 1, "lr_decay": 1.0, "shift": 0.0, "rotate": 0.0, **changes}
    return dataclasses.replace(model, image_size=size), dataclasses.replace(train, **changes)


# ---------------------------------------------------------------- data


def raw_folder(scratch: Path) -> Path:
    """`scratch`, holding the verified MNIST files as torchvision's MNIST reads them (MNIST/raw/<name>)."""
    from alexnet_mnist.download import MIRROR_ENV, download, read_checksums, sources

    existing = ROOT / "data" / "raw"
    mirror = str(existing) if existing.is_dir() else os.environ.get(MIRROR_ENV)
    download(scratch / "MNIST" / "raw", read_checksums(ROOT / "mnist.sha256"), sources(mirror, []))
    return scratch


def mnist_splits(root: Path, train_size: int | None = None) -> dict:
    """The prepare stage's splits of the files under `root` ({'train', 'val', 'test'}), params.yaml's
    data section with `train_size` training images (None: all but the validation hold-out)."""
    from alexnet_mnist.idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_pair
    from alexnet_mnist.prepare import split

    raw = Path(root) / "MNIST" / "raw"
    data = dataclasses.replace(settings()[0], train_size=train_size, test_size=None)
    return split(
        *read_pair(raw / TRAIN_IMAGES, raw / TRAIN_LABELS), *read_pair(raw / TEST_IMAGES, raw / TEST_LABELS), data
    )


# ---------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds that `fn()` takes, the device's queued work included."""
    sync(device)
    began = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - began


def best_seconds(fn, device: torch.device, repeats: int = 3, target: float = 0.3) -> float:
    """Seconds per call of `fn`: the fastest of `repeats` timings of about `target` seconds each,
    after a warm-up call that also sizes them."""
    calls = max(1, round(target / timed(fn, device)))
    return min(timed(lambda: [fn() for _ in range(calls)], device) / calls for _ in range(repeats))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def spawn(script: Path, job: dict) -> dict:
    """Run `job` through `script --job` in a fresh Python process (its own peak memory); its result."""
    out = subprocess.run([sys.executable, str(script), "--job", json.dumps(job)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark job {job} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the server, and the browser for pages

# Headless Chromium as the project runs it (as root, no network): the plots page's test, the served page's
# tests and its screenshot
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network, but for the servers of the tests
]


@contextlib.contextmanager
def serve(model: Path | None) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, process) of this environment's `alexnet-mnist serve --model MODEL` (None: its default model) on a
    free port of 127.0.0.1, once it has loaded the model; stopped with SIGINT (Ctrl-C) on exit."""
    command = [str(Path(sys.executable).parent / "alexnet-mnist"), "serve", "--port", "0"]
    command += ["--model", str(model)] if model else []
    # started as from a terminal, where Ctrl-C reaches it: a shell script's `cmd &` makes its children
    # ignore SIGINT, and the server would then stop on it without the exit status 130 of an interrupt
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = server.stdout.readline()  # "serving MODEL on URL (Ctrl-C stops)", once the model is loaded
        if " on http://" not in line:
            raise RuntimeError(f"{' '.join(command)} did not start: {line}{server.communicate(timeout=60)[1]}")
        yield line.split(" on ", 1)[1].split()[0], server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` now, in MiB (Linux: /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def server_timing(header: str) -> dict[str, float]:
    """A Server-Timing header as `serve` writes it ("prepare;dur=0.81, wait;dur=12.5, model;dur=80.2;desc=\"batch
    of 9\"") -> {"prepare": 0.81, "wait": 12.5, "model": 80.2, "batch": 9.0}: milliseconds, and the batch size."""
    found = {}
    for metric in header.split(","):
        name, *fields = (part.strip() for part in metric.split(";"))
        for field in fields:
            key, _, value = field.partition("=")
            if key == "dur":
                found[name] = float(value)
            elif key == "desc" and value.strip('"').startswith("batch of "):
                found["batch"] = float(value.strip('"').removeprefix("batch of "))
    return found


# ---------------------------------------------------------------- FLOPs and the peak


def reference_model(config) -> nn.Module:
    """The network as the original tutorial builds it: the project's AlexNet with torch.nn's own LRN and dropout."""
    from alexnet_mnist.lrn import LocalResponseNorm
    from alexnet_mnist.model import AlexNet, Dropout

    return swap_layers(
        AlexNet(config),
        {
            LocalResponseNorm: lambda m: nn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k),
            Dropout: lambda m: nn.Dropout(m.p),
        },
    )


def swap_layers(model: nn.Module, makers: dict) -> nn.Module:
    """`model` with each layer of a type in `makers` replaced by `makers[type](layer)`, in place."""
    for seq in (model.features, model.classifier):
        for i, layer in enumerate(seq):
            if type(layer) in makers:
                seq[i] = makers[type(layer)](layer)
    return model


def flop_counts(config, backward: bool = True) -> dict[str, dict[str, int]]:
    """FLOPs of one training step per image (of one forward pass without `backward`): module name ('Global'
    for all) -> op -> FLOPs.

    torch.utils.flop_counter's count of one forward and backward pass at batch 1 (every counted
    op scales with the batch): 2 FLOPs per multiply-add of the convolutions and fully connected
    layers; of the backward only the gradients autograd computes (none for the input image). On the
    meta device (shapes only); LRN, pooling, ReLU, dropout, loss and Adam count none.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = reference_model(config)
        x = torch.zeros(1, 1, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter:
        logits = model(x)
        if backward:
            logits.sum().backward()
    return {module: {str(op): n for op, n in ops.items()} for module, ops in counter.get_flop_counts().items()}


MATMUL_SIDES = (2048, 4096, 6144)
SMOKE_MATMUL_SIDES = (256, 512, 1024)  # --smoke: the same report in a fraction of a second (6144 takes ~4 s a call)


def peak_candidates(
    device: torch.device, precision: str, config, batch: int, sides: tuple[int, ...] = MATMUL_SIDES
) -> dict[str, float]:
    """Kernel -> FLOP/s, each timed here in `precision`: square matrix products of `sides`, and
    each convolution of the model at `config`'s size forward on a batch of `batch` (channels-last,
    as the project runs them). The best of them is the peak that MFU divides by."""
    from alexnet_mnist.model import AlexNet, feature_side

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    found = {}
    for n in sides:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=dtype)
        found[f"matmul {n}x{n}"] = 2 * n**3 / best_seconds(partial(torch.mm, a, b, out=out), device)
        del a, b, out
    model = AlexNet(config).to(device, memory_format=torch.channels_last)
    for i, conv in enumerate(model.features):
        if isinstance(conv, nn.Conv2d):
            side = feature_side(model.features[:i], config.image_size)
            x = torch.randn(batch, conv.in_channels, side, side, device=device, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            w = conv.weight.detach().to(dtype)
            out_side = feature_side(model.features[: i + 1], config.image_size)
            flops = 2 * batch * conv.out_channels * out_side**2 * conv.in_channels * w.shape[2] * w.shape[3]
            run = partial(torch.nn.functional.conv2d, x, w, None, conv.stride, conv.padding)
            with torch.inference_mode():
                found[f"conv{len(found) - len(sides) + 1} forward"] = flops / best_seconds(run, device)
    return found


# ---------------------------------------------------------------- the band-matrix LRN, the "before" of the comparison


class BandLocalResponseNorm(nn.Module):
    """The project's LRN until it moved to lrn.py: the window sum as one float32 matrix product with a
    (C, C) 0/1 band matrix (O(C^2) per pixel), whole-tensor copies to and from float32. Same math."""

    def __init__(self, size: int, alpha: float, beta: float, k: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return _BandLRN.apply(x, self.size, self.alpha, self.beta, self.k)


def _band(channels: int, size: int, dtype, device) -> torch.Tensor:
    c = torch.arange(channels, device=device)
    offset = c[:, None] - c[None, :]
    return ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).to(dtype)


class _BandLRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        a = x.permute(0, 2, 3, 1).to(torch.promote_types(x.dtype, torch.float32))
        d = torch.matmul(a * a, _band(x.shape[1], size, a.dtype, x.device)).mul_(alpha / size).add_(k)
        scale = d.log().mul_(-beta).exp_()
        ctx.save_for_backward(x, scale, d)
        ctx.constants = (size, alpha, beta)
        return (a * scale).to(x.dtype).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        x, scale, d = ctx.saved_tensors
        size, alpha, beta = ctx.constants
        a, g = x.permute(0, 2, 3, 1).to(scale.dtype), grad.permute(0, 2, 3, 1).to(scale.dtype)
        inner = torch.matmul((g * a).mul_(scale).div_(d), _band(x.shape[1], size, d.dtype, x.device).t())
        da = torch.addcmul(g * scale, a, inner, value=-2.0 * alpha * beta / size)
        return da.to(x.dtype).permute(0, 3, 1, 2), None, None, None, None


def with_band_lrn(model: nn.Module) -> nn.Module:
    from alexnet_mnist.lrn import LocalResponseNorm

    return swap_layers(model, {LocalResponseNorm: lambda m: BandLocalResponseNorm(m.size, m.alpha, m.beta, m.k)})


# ---------------------------------------------------------------- the machine, for the report

# caps on the instruction set of the CPU kernels: oneDNN's (convolutions, bf16 matrix products), ATen's
# own (elementwise, pooling, resize), MKL's (fp32 matrix products: fully connected layers)
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def onednn_isa() -> str:
    """The instruction set oneDNN runs on in a process of this environment, as its verbose mode reports it."""
    code = (
        "import torch; x = torch.randn(2, 16, 32, 32).to(memory_format=torch.channels_last); "
        "torch.nn.functional.conv2d(x, torch.randn(16, 16, 3, 3).to(memory_format=torch.channels_last))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "ONEDNN_VERBOSE": "1"}
    )
    found = [line.split(",isa:", 1)[1] for line in out.stdout.splitlines() if ",isa:" in line]
    return found[0].strip() if found else "not reported"


def cpu_lines(precision: str, device: torch.device) -> list[str]:
    """What the CPU offers and which of it the kernels may use, with a note where a cap and the precision disagree."""
    from alexnet_mnist.device import cpu_flags, cpu_name

    flags = cpu_flags()

    def has(flag: str) -> str:
        return ("yes" if flag in flags else "no") if flags else "not reported"

    caps = ", ".join(f"{key}={os.environ.get(key, 'unset')}" for key in ISA_ENV)
    lines = [
        f"CPU: {cpu_name() or platform.machine()}; hardware flags (/proc/cpuinfo): AVX512-BF16 "
        f"{has('avx512_bf16')}, AMX {has('amx_tile')}; kernels: ATen {torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN {onednn_isa()}; {caps}."
    ]
    if any(os.environ.get(key) for key in ISA_ENV) and device.type == "cpu" and precision == "bf16":
        lines.append(
            "Note: the instruction sets are capped but the project loop ran bf16, which a CPU without "
            "native bf16 does not (precision auto picks fp32 there); add --precision fp32 for its path."
        )
    if (
        os.environ.get("ONEDNN_MAX_CPU_ISA")
        and not os.environ.get("MKL_ENABLE_INSTRUCTIONS")
        and torch.backends.mkl.is_available()
    ):
        lines.append(
            "Note: fp32 matrix products (fully connected layers, the fp32 matmul candidates) run in MKL, "
            "which ONEDNN_MAX_CPU_ISA does not cap; set MKL_ENABLE_INSTRUCTIONS as well."
        )
    return lines
