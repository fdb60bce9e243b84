"""Where a training step of the project's loop spends its time, by layer and part (torch.profiler), with the
LRN it replaced (band) and its own (blocked) side by side, and each part's FLOP/s against the peak.

Each profile runs in a fresh process after warm-up steps. From the repo root:
    MNIST_MIRROR=../shared/data/mnist python benchmarks/profile_step.py [--sizes 227,67] [--output report.md]
    python benchmarks/profile_step.py --smoke     # checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from common import (
    MATMUL_SIDES,
    SMOKE_MATMUL_SIDES,
    flop_counts,
    mnist_splits,
    peak_candidates,
    raw_folder,
    spawn,
    timed,
    train_settings,
    with_band_lrn,
)

# profiler event -> part of the step; an event's ops inherit its part. Events: each layer's forward (a
# scope "forward <class>" that layer_labels opens), autograd's backward nodes, Adam's own scopes, and
# the loop's input ops; the rest of the loop is "other"
PROFILE_PARTS = {
    "forward Conv2d": "conv forward",
    "ConvolutionBackward0": "conv backward",  # input and weight gradients in one op
    "forward Linear": "linear forward",
    "AddmmBackward0": "linear backward",
    "MmBackward0": "linear backward",
    "TBackward0": "linear backward",
    "forward LocalResponseNorm": "LRN",
    "_LocalResponseNormBackward": "LRN",
    "forward BandLocalResponseNorm": "LRN",
    "_BandLRNBackward": "LRN",
    "forward MaxPool2d": "pooling",
    "MaxPool2DWithIndicesBackward0": "pooling",
    "forward ReLU": "ReLU",
    "ReluBackward0": "ReLU",
    "ThresholdBackward0": "ReLU",
    "forward Dropout": "dropout",
    "MulBackward0": "dropout",  # (and the loss's scalar scaling, tiny)
    "ToCopyBackward0": "dtype casts",
    "aten::cross_entropy_loss": "loss",
    "LogSoftmaxBackward0": "loss",
    "NllLossBackward0": "loss",
    "Optimizer.step#Adam.step": "optimizer",
    "Optimizer.zero_grad#Adam.zero_grad": "optimizer",
    "torch::autograd::AccumulateGrad": "optimizer",
    "aten::index": "input (gather, resize)",
    "aten::upsample_bilinear2d": "input (gather, resize)",
}
# every copy to another dtype, with its subtree: autocast's bf16 copies of weights and activations and
# the float32 copies of their gradients, the dropout mask's conversion
CASTS = ("aten::to", "aten::_to_copy")
PARTS = [
    "conv forward",
    "conv backward",
    "linear forward",
    "linear backward",
    "LRN",
    "pooling",
    "ReLU",
    "dropout",
    "dtype casts",
    "loss",
    "optimizer",
    "input (gather, resize)",
    "other",
]
# counted op -> its part; every op flop_counts counts is one of these
FLOP_PARTS = {
    "aten.convolution": "conv forward",
    "aten.convolution_backward": "conv backward",
    "aten.addmm": "linear forward",
    "aten.mm": "linear backward",
}
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
LRNS = {"band": "band LRN (before)", "blocked": "blocked LRN (after)"}


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


def measure(job: dict) -> dict:
    """Profile `job['steps']` project training steps after `job['warmup']` in this process."""
    from torch.profiler import ProfilerActivity, profile

    from alexnet_mnist import device as dev
    from alexnet_mnist.train import start, train_epoch

    dev.tune_cpu()
    device = dev.resolve_device(job["device"])
    precision = dev.resolve_precision(job["precision"], device)
    config, params = train_settings(job["size"], device=job["device"], precision=precision)
    dev.choose_kernels(device, params.deterministic)  # as the train stage does
    n_warm, n_profile = job["warmup"] * params.batch_size, job["steps"] * params.batch_size
    train = mnist_splits(Path(job["root"]), train_size=n_warm + n_profile)["train"]
    images, labels = train["images"].to(device), train["labels"].to(device)
    run = start(config, params, device)
    if job["lrn"] == "band":
        with_band_lrn(run.model)
    train_epoch(run, run.model, images[:n_warm], labels[:n_warm], params, precision)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with layer_labels(run.model), profile(activities=activities) as prof:
        wall = timed(lambda: train_epoch(run, run.model, images[n_warm:], labels[n_warm:], params, precision), device)
    peaks = peak_candidates(device, precision, config, params.batch_size, tuple(job["matmul_sides"]))
    return {
        "precision": precision,
        "wall_seconds": wall,
        "part_seconds": part_seconds(prof.events(), device),
        "peak": max(peaks.values()),
    }


def table(size: int, steps: int, profiles: dict[str, dict]) -> list[str]:
    """Markdown: per part, ms per step and share of each LRN's step; GFLOP/s and fraction of the peak of the last."""
    counts = flop_counts(train_settings(size)[0])["Global"]
    batch = train_settings(size)[1].batch_size
    flops = {}  # per step
    for op, n in counts.items():
        flops[FLOP_PARTS[op]] = flops.get(FLOP_PARTS[op], 0) + n * batch
    last = profiles[list(profiles)[-1]]
    header = " | ".join(f"{LRNS[lrn]}: ms | share" for lrn in profiles)
    rows = [
        f"| part of the step | {header} | GFLOP per step | GFLOP/s | of peak |",
        "|---|" + "---:|---:|" * len(profiles) + "---:|---:|---:|",
    ]
    totals = {lrn: sum(p["part_seconds"].values()) for lrn, p in profiles.items()}
    for part in [*PARTS, "all"]:
        cells = []
        for lrn, p in profiles.items():
            seconds = totals[lrn] if part == "all" else p["part_seconds"][part]
            cells.append(f"{seconds / steps * 1e3:.1f} | {100 * seconds / totals[lrn]:.1f}%")
        n = sum(flops.values()) if part == "all" else flops.get(part, 0)
        seconds = totals[list(profiles)[-1]] if part == "all" else last["part_seconds"][part]
        rate = n * steps / seconds if n and seconds else 0
        speed = f"{n / 1e9:.2f} | {rate / 1e9:.1f} | {rate / last['peak']:.3f}" if rate else "- | - | -"
        rows.append(f"| {part} | {' | '.join(cells)} | {speed} |")
    walls = ", ".join(f"{LRNS[lrn]} {p['wall_seconds'] / steps * 1e3:.1f} ms" for lrn, p in profiles.items())
    return [
        f"{size}x{size}, {last['precision']}: wall time per step under the profiler: {walls}; the peak (best "
        f"candidate, timed after the profile): {last['peak'] / 1e9:.1f} GFLOP/s.",
        "",
        *rows,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sizes", default="227,67", help="image sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=3, help="profiled training steps per process")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks that everything runs")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return
    if args.smoke:
        args.sizes, args.steps, args.warmup = "67", 2, 1
    root = str(raw_folder(Path(tempfile.mkdtemp(prefix="mnist-bench-"))))
    lines = [
        f"Command: `python benchmarks/profile_step.py {' '.join(sys.argv[1:])}`. Each part: its ops' own "
        "time (CPU time of the training thread on the CPU, kernel time on a GPU), summed by the layer or step "
        "part they run for; every copy to another dtype counts as dtype casts.",
        "",
    ]
    for size in (int(s) for s in args.sizes.split(",")):
        profiles = {}
        for lrn in LRNS:
            job = {
                "size": size,
                "lrn": lrn,
                "device": args.device,
                "precision": args.precision,
                "root": root,
                "steps": args.steps,
                "warmup": args.warmup,
                "matmul_sides": SMOKE_MATMUL_SIDES if args.smoke else MATMUL_SIDES,
            }
            profiles[lrn] = spawn(Path(__file__), job)
            print(f"{size} {lrn}: {profiles[lrn]}", file=sys.stderr, flush=True)
        lines += table(size, args.steps, profiles)
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
