"""Training step time with torch.nn's Conv2d/Linear against this project's (layers.py), in one process.

Both models train alternately, step by step, on the same batch, so drifts of machine speed hit both
alike; prints the median step time of each. Usage, from the repo root:
    python benchmarks/layers_ab.py --size 67 --steps 60
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm import tqdm

from alexnet_mnist import device as dev
from alexnet_mnist.params import ModelParams, TrainParams
from alexnet_mnist.train import Run, start, train_epoch
from train_speed import with_torch_nn_layers  # benchmarks/ is on sys.path when run as a script

WARMUP = 5  # steps of each model before timing: the allocator settles


def with_torch_nn(run: Run) -> Run:
    """The same run with torch.nn.Conv2d/Linear in place of layers.Conv2d/Linear (same weights)."""
    with_torch_nn_layers(run.model).to(memory_format=torch.channels_last)
    run.optimizer = torch.optim.Adam(run.model.parameters(), lr=run.optimizer.param_groups[0]["lr"], fused=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=67, help="image size")
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each model")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = parser.parse_args()
    dev.tune_cpu()
    params = TrainParams(epochs=1, batch_size=64, lr=1e-3, seed=0, device="cpu", precision=args.precision,
                         compile=False, deterministic=False, nproc=1)
    runs = {
        "torch.nn layers": with_torch_nn(start(ModelParams(args.size, 0.5), params, torch.device("cpu"))),
        "project layers": start(ModelParams(args.size, 0.5), params, torch.device("cpu")),
    }
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    bar = tqdm(disable=True)
    times = {name: [] for name in runs}
    for step in range(WARMUP + args.steps):
        for name in (list(runs) if step % 2 else list(runs)[::-1]):
            began = time.perf_counter()
            train_epoch(runs[name], runs[name].model, images, labels, 64, args.precision, bar)
            if step >= WARMUP:
                times[name].append(1000 * (time.perf_counter() - began))
    for name, ms in times.items():
        print(f"{args.size}x{args.size} {args.precision}, {name}: median {statistics.median(ms):.1f} ms per step of 64")


if __name__ == "__main__":
    main()
