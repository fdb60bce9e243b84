"""Training and evaluation speed of the default config as the train stage runs it (augmentation on), of the
project's loop without augmentation, with the band-matrix LRN it replaced (before and after), and of the
reference loop, with each loop's MFU against the best of several dense kernels timed in the same process.
BENCHMARKS.md says what each loop is and holds the results.

Each measurement runs in a fresh process, so its peak memory is its own. From the repo root:
    MNIST_MIRROR=../shared/data/mnist python benchmarks/train_speed.py [--output report.md]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/train_speed.py --precision fp32        # the path of a CPU without AVX512
    python benchmarks/train_speed.py --smoke                       # checks that it runs
It prints a Markdown report, also written to --output when given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from common import (
    ISA_ENV,
    MATMUL_SIDES,
    SMOKE_MATMUL_SIDES,
    cpu_lines,
    flop_counts,
    mnist_splits,
    peak_candidates,
    peak_memory_mb,
    raw_folder,
    settings,
    spawn,
    timed,
    train_settings,
    with_band_lrn,
)

# loop -> its label in the report. default: params.yaml's train section as the train stage runs it (its
# augmentation, its progress bar); the others without augmentation, as the reference loop has none: "project,
# band LRN" is the project's loop with the LRN it replaced; compiled: train.compile true; deterministic:
# train.deterministic true (deterministic CUDA kernels)
LOOPS = {
    "default": "project, default config",
    "reference": "reference",
    "band": "project, band LRN",
    "project": "project, no augmentation",
    "compile": "project, compiled",
    "deterministic": "project, deterministic",
}


def measure(job: dict) -> dict:
    """Run one speed job ({'loop', 'size', 'steps', 'warmup', ...}) in this process; its numbers."""
    from alexnet_mnist import device as dev

    device = dev.resolve_device(job["device"])
    project = job["loop"] != "reference"
    precision = dev.resolve_precision(job["precision"], device) if project else "fp32"
    defaults = settings()[2]
    augmentation = {"shift": defaults.shift, "rotate": defaults.rotate} if job["loop"] == "default" else {}
    config, params = train_settings(
        job["size"],
        device=job["device"],
        precision=precision,
        compile=job["loop"] == "compile",
        deterministic=job["loop"] == "deterministic",
        **augmentation,
    )
    dev.choose_kernels(device, params.deterministic)  # as the train stage does
    torch.manual_seed(params.seed)
    batch, n_warm, n_time = params.batch_size, job["warmup"] * params.batch_size, job["steps"] * params.batch_size
    eval_batch = settings()[3].batch_size
    if project:
        train, evaluation = project_loop(job, config, params, device, precision, n_warm, n_time, eval_batch)
    else:
        train, evaluation = reference_loop(job, config, params, device, n_warm // batch, n_time // batch, eval_batch)
    memory = peak_memory_mb(device)  # before the peak candidates' matrices
    peaks = peak_candidates(device, precision, config, batch, tuple(job["matmul_sides"]))
    return {
        "precision": precision,
        "train_images_per_s": n_time / train,
        "eval_images_per_s": evaluation,
        "peak_memory_mb": memory,
        "peaks": peaks,
    }


def project_loop(job, config, params, device, precision, n_warm, n_time, eval_batch) -> tuple[float, float]:
    """(seconds of n_time training images after n_warm untimed ones, evaluation images/s) of the train stage's code."""
    from alexnet_mnist import device as dev
    from alexnet_mnist.evaluate import predict
    from alexnet_mnist.train import start, train_epoch

    dev.tune_cpu()  # as the train and evaluate stages do
    splits = mnist_splits(Path(job["root"]), train_size=n_warm + n_time)
    run = start(config, params, device)
    if job["loop"] == "band":
        with_band_lrn(run.model)
    network = torch.compile(run.model) if params.compile else run.model
    images, labels = splits["train"]["images"].to(device), splits["train"]["labels"].to(device)
    bar = "timed steps" if job["loop"] == "default" else None  # the stage shows one; its updates cost
    train_epoch(run, network, images[:n_warm], labels[:n_warm], params, precision)
    seconds = timed(lambda: train_epoch(run, network, images[n_warm:], labels[n_warm:], params, precision, bar), device)
    test = {key: splits["test"][key][: eval_batch + job["eval_images"]].to(device) for key in ("images", "labels")}
    predict(run.model, test["images"][:eval_batch], test["labels"][:eval_batch], eval_batch, precision)  # warm-up
    evaluation = timed(
        lambda: predict(run.model, test["images"][eval_batch:], test["labels"][eval_batch:], eval_batch, precision),
        device,
    )
    return seconds, job["eval_images"] / evaluation


def reference_loop(job, config, params, device, warmup, steps, eval_batch) -> tuple[float, float]:
    """The same two numbers for the reference loop."""
    from reference_loop import ReferenceLoop, loader

    root, data = Path(job["root"]), settings()[0]
    loop = ReferenceLoop(config, params.lr, device)
    batches = loader(
        root, data, config.image_size, (warmup + steps) * params.batch_size, False, params.batch_size, params.seed
    )
    loop.train(batches, warmup)
    seconds = timed(lambda: loop.train(batches, steps), device)
    tests = loader(root, data, config.image_size, None, True, eval_batch, 0)
    loop.evaluate(tests, limit=1)  # warm-up batch
    seen = {}
    evaluation = timed(lambda: seen.update(n=loop.evaluate(tests, job["eval_images"])[1]), device)
    return seconds, seen["n"] / evaluation


def timed_steps(steps_at_227: int, size: int) -> int:
    """Steps to time at `size`: `steps_at_227` scaled by the FLOPs of a 227x227 step over a `size` one."""
    flops = {s: sum(flop_counts(train_settings(s)[0])["Global"].values()) for s in (227, size)}
    return max(steps_at_227, round(steps_at_227 * flops[227] / flops[size]))


def training_images(root: Path) -> int:
    """Training images of the default config: the training file's, less params.yaml's validation hold-out."""
    from alexnet_mnist.idx import TRAIN_LABELS, read_labels

    return len(read_labels(root / "MNIST" / "raw" / TRAIN_LABELS)) - settings()[0].val_size


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def peak_table(size: int, runs: dict[str, list[dict]]) -> list[str]:
    """Markdown rows, one per precision: each candidate's GFLOP/s (median over processes) and the best."""
    by_precision = {}
    for loop_runs in runs.values():
        for run in loop_runs:
            by_precision.setdefault(run["precision"], []).append(run["peaks"])
    names = list(next(iter(by_precision.values()))[0])
    rows = [f"| image size | precision | {' | '.join(names)} | best |", "|---:|---|" + "---:|" * (len(names) + 1)]
    for precision, peaks in by_precision.items():
        cells = [statistics.median(p[name] for p in peaks) / 1e9 for name in names]
        rows.append(f"| {size} | {precision} | {' | '.join(f'{c:.1f}' for c in cells)} | {max(cells):.1f} |")
    return rows


def report(args, sizes: list[int], results: dict[int, dict[str, list[dict]]], epoch_images: int) -> str:
    from alexnet_mnist.device import describe, resolve_device

    device = resolve_device(args.device)
    info = describe(device, "")
    project_precision = next(
        (r[0]["precision"] for res in results.values() for loop, r in res.items() if loop != "reference"), "fp32"
    )
    caps = [f"{key}={os.environ[key]}" for key in ISA_ENV if os.environ.get(key)]
    speed = ["| image size | loop | train images/s | eval images/s | peak memory (MiB) |", "|---:|---|---:|---:|---:|"]
    mfu = [
        "| image size | loop | GFLOP per image | train GFLOP/s | peak GFLOP/s | MFU |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    ratios, peaks = [], []
    for size in sizes:
        res = results[size]
        per_image = sum(flop_counts(train_settings(size)[0])["Global"].values())
        for loop, runs in res.items():
            label = f"{LOOPS[loop]} ({runs[0]['precision']})"
            speed.append(
                f"| {size} | {label} | {median(runs, 'train_images_per_s'):.1f} | "
                f"{median(runs, 'eval_images_per_s'):.1f} | {median(runs, 'peak_memory_mb'):.0f} |"
            )
            train = median(runs, "train_images_per_s") * per_image
            peak = statistics.median(max(run["peaks"].values()) for run in runs)
            mfu.append(
                f"| {size} | {label} | {per_image / 1e9:.3f} | {train / 1e9:.1f} | {peak / 1e9:.1f} | "
                f"{train / peak:.3f} |"
            )
        for loop in res:
            if loop != "reference":
                ratios.append(
                    f"- {size}x{size}: one epoch of the default config ({epoch_images:,} images) at "
                    f"{LOOPS[loop]}'s rate: {epoch_images / median(res[loop], 'train_images_per_s'):.1f} s"
                )
        for loop, base in (
            ("default", "project"),
            ("default", "reference"),
            ("project", "reference"),
            ("project", "band"),
            ("compile", "project"),
            ("deterministic", "project"),
        ):
            if loop in res and base in res:
                ratios.append(
                    f"- {size}x{size}: {LOOPS[loop]} / {LOOPS[base]}: training "
                    f"{median(res[loop], 'train_images_per_s') / median(res[base], 'train_images_per_s'):.2f}x, "
                    f"evaluation {median(res[loop], 'eval_images_per_s') / median(res[base], 'eval_images_per_s'):.2f}x"
                )
        peaks += [*peak_table(size, res), ""]
    return "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, device {info['device_name']}; torch "
            f"{info['torch_version']}, {info['threads']} threads.",
            *cpu_lines(project_precision, device),
            f"Command: `{' '.join([*caps, 'python', 'benchmarks/train_speed.py', *sys.argv[1:]])}`",
            f"Timing: {args.rounds} fresh processes per loop and size, the loops alternating; in each, {args.warmup} "
            f"warm-up steps, then "
            f"{', '.join(f'{timed_steps(args.steps, s)} timed training steps at {s}x{s}' for s in sizes)}, "
            f"then {args.eval_images} test images evaluated after a "
            "warm-up batch, then the peak candidates. Medians over the processes.",
            "",
            *speed,
            "",
            "Ratios of the medians:",
            *ratios,
            "",
            "Peak candidates, GFLOP/s in the loop's precision (median over its processes); MFU divides by the best:",
            "",
            *peaks,
            "MFU: the median training FLOP/s (FLOPs per image from the layer shapes, times images/s) over the median "
            "of each process's best candidate.",
            "",
            *mfu,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sizes", default="227,67", help="image sizes, comma-separated")
    parser.add_argument(
        "--loops",
        default="default,project,band,reference",
        help=f"loops to time, comma-separated, of: {', '.join(LOOPS)} (compile: under torch.compile)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=16,
        help="timed training steps per process at 227x227 (16: 1,024 images, long enough to be steady); a "
        "smaller size times as many more steps as its step has fewer FLOPs, so that every timing lasts about as long",
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (the allocator settles in ~5)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per loop and size; the median counts")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images timed for evaluation")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="the project loop's train.precision (the reference loop's is fp32)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks that everything runs")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return
    if args.smoke:
        args.sizes, args.steps, args.warmup, args.rounds, args.eval_images = "67", 2, 1, 1, 100
    root = str(raw_folder(Path(tempfile.mkdtemp(prefix="mnist-bench-"))))
    sizes, loops = [int(s) for s in args.sizes.split(",")], args.loops.split(",")
    results = {}
    for size in sizes:
        results[size] = {loop: [] for loop in loops}
        steps = timed_steps(args.steps, size)
        for _ in range(args.rounds):  # alternating, so that a drift of the machine's speed hits every loop alike
            for loop in loops:
                job = {
                    "loop": loop,
                    "size": size,
                    "device": args.device,
                    "precision": args.precision,
                    "root": root,
                    "steps": steps,
                    "warmup": args.warmup,
                    "eval_images": args.eval_images,
                    "matmul_sides": SMOKE_MATMUL_SIDES if args.smoke else MATMUL_SIDES,
                }
                results[size][loop].append(spawn(Path(__file__), job))
                print(f"{size} {loop}: {results[size][loop][-1]}", file=sys.stderr, flush=True)
    text = report(args, sizes, results, training_images(Path(root)))
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
