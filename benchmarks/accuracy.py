"""Test accuracy of the reference loop and of the project's after the same training, seed by seed.

Both train on the same training images (params.yaml's split) for the same epochs at one image size,
constant lr and no augmentation; after each epoch, each is scored on all 10,000 test images. Each
(loop, seed) runs in a fresh process. From the repo root:
    MNIST_MIRROR=../shared/data/mnist python benchmarks/accuracy.py [--size 67] [--epochs 2] [--seeds 0,1,2]
    python benchmarks/accuracy.py --smoke     # checks that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from common import mnist_splits, raw_folder, settings, spawn, train_settings


def measure(job: dict) -> list[float]:
    """Test accuracy after each epoch of one loop and seed."""
    from alexnet_mnist import device as dev

    device = dev.resolve_device(job["device"])
    project = job["loop"] == "project"
    precision = dev.resolve_precision("auto", device) if project else "fp32"
    config, params = train_settings(
        job["size"], device=job["device"], precision=precision, seed=job["seed"], epochs=job["epochs"]
    )
    dev.choose_kernels(device, params.deterministic)  # as the train stage does
    torch.manual_seed(params.seed)
    root = Path(job["root"])
    if project:
        from alexnet_mnist.train import fit

        dev.tune_cpu()
        splits = mnist_splits(root, job["train_size"])
        # the test images as fit's validation set: its validation accuracy after each epoch is the test
        # accuracy (evaluation draws no random numbers, so training is the same as with any other)
        run = fit(splits["train"], splits["test"], config, params, device, precision)
        return [row["val_accuracy"] for row in run.history]
    from reference_loop import ReferenceLoop, loader

    data, evaluate = settings()[0], settings()[3]
    loop = ReferenceLoop(config, params.lr, device)
    batches = loader(root, data, config.image_size, job["train_size"], False, params.batch_size, params.seed)
    tests = loader(root, data, config.image_size, None, True, evaluate.batch_size, 0)
    accuracy = []
    for _ in range(params.epochs):
        loop.train(batches)
        accuracy.append(loop.evaluate(tests)[0])
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", type=int, default=67, help="image size")
    parser.add_argument("--train-size", type=int, help="training images (default: all but data.val_size)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2", help="train.seed values, comma-separated")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks that everything runs")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return
    if args.smoke:
        args.train_size, args.epochs, args.seeds = 256, 1, "0"
    root = str(raw_folder(Path(tempfile.mkdtemp(prefix="mnist-bench-"))))
    seeds = [int(s) for s in args.seeds.split(",")]
    found = {"reference": [], "project": []}  # loop -> per seed -> accuracy after each epoch
    for seed in seeds:
        for loop in found:
            job = {
                "loop": loop,
                "seed": seed,
                "size": args.size,
                "epochs": args.epochs,
                "device": args.device,
                "train_size": args.train_size,
                "root": root,
            }
            found[loop].append(spawn(Path(__file__), job))
            print(f"{loop} seed {seed}: {found[loop][-1]}", file=sys.stderr, flush=True)
    print(
        f"Command: `python benchmarks/accuracy.py {' '.join(sys.argv[1:])}`; test accuracy in %, mean over "
        f"seeds {args.seeds} (each seed's in brackets):\n"
    )
    print("| after epoch | reference loop (fp32) | project loop | difference (points) |\n|---:|---|---|---:|")
    for epoch in range(args.epochs):
        cells, means = [], []
        for loop in found:
            each = [100 * per_epoch[epoch] for per_epoch in found[loop]]
            means.append(statistics.mean(each))
            cells.append(f"{means[-1]:.2f}% ({', '.join(f'{a:.2f}' for a in each)})")
        print(f"| {epoch + 1} | {cells[0]} | {cells[1]} | {means[1] - means[0]:+.2f} |")


if __name__ == "__main__":
    main()
