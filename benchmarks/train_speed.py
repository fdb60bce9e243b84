"""Training and evaluation speed of this project's loop against the seed's, on one machine, in one run.

The seed's loop: torchvision's MNIST dataset with per-sample Resize + ToTensor + Normalize in a
DataLoader, fp32, default memory layout, PyTorch's nn.LocalResponseNorm, loss.item() every step,
and (here) no final Softmax, so both loops train the same network. The project's loop: the
train stage's code (tensors on the device, per-batch resize, channels_last, bf16 where native,
the exact LRN, fused Adam, no per-step host sync).

Each measurement runs in a fresh process, so peak memory is its own. Usage, from the repo root:
    MNIST_MIRROR=../shared/data/mnist python benchmarks/train_speed.py            # full run
    MNIST_MIRROR=../shared/data/mnist python benchmarks/train_speed.py --smoke    # seconds, checks it runs
It prints a Markdown report (also written to --output when given).
"""

from __future__ import annotations

import argparse
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
MEAN, STD = 0.1307, 0.3081  # params.yaml data.mean / data.std
VAL_SIZE, SPLIT_SEED = 5000, 0  # params.yaml data.val_size / data.seed


# ---------------------------------------------------------------- data, shared by both loops

def raw_folder(scratch: Path) -> Path:
    """A torchvision-style root (root/MNIST/raw/<uncompressed files>) with the verified MNIST files."""
    from alexnet_mnist.download import MIRROR_ENV, download, read_checksums, sources

    raw = scratch / "MNIST" / "raw"
    existing = ROOT / "data" / "raw"
    mirror = str(existing) if existing.is_dir() else os.environ.get(MIRROR_ENV)
    download(raw, read_checksums(ROOT / "mnist.sha256"), sources(mirror, []))
    return scratch


def indices(train_size: int):
    from alexnet_mnist.prepare import split_indices

    train_idx, _ = split_indices(60_000, VAL_SIZE, train_size, SPLIT_SEED)
    return train_idx


def project_tensors(root: Path, train_idx, test: bool):
    """The prepare stage's cached form: normalized (N, 1, 28, 28) float32 and int64 labels."""
    import torch

    from alexnet_mnist.idx import read_images, read_labels
    from alexnet_mnist.prepare import normalize

    prefix = "t10k" if test else "train"
    images = read_images(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte")
    labels = read_labels(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte")
    if train_idx is not None:
        images, labels = images[train_idx], labels[train_idx]
    return {"images": normalize(images, MEAN, STD), "labels": torch.from_numpy(labels.astype("int64"))}


def seed_loader(root: Path, size: int, train_idx, test: bool, batch_size: int, seed: int):
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import MNIST

    transform = T.Compose([T.Resize(size), T.ToTensor(), T.Normalize((MEAN,), (STD,))])
    dataset = MNIST(str(root), train=not test, download=False, transform=transform)
    if train_idx is not None:
        dataset = Subset(dataset, train_idx.tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=not test,
                      generator=torch.Generator().manual_seed(seed))


def with_torch_nn_layers(model):
    """`model` (changed in place) with torch.nn's own Conv2d and Linear in place of layers.Conv2d/Linear, same weights."""
    from torch import nn

    from alexnet_mnist import layers

    for seq in (model.features, model.classifier):
        for i, layer in enumerate(seq):
            if isinstance(layer, (layers.Conv2d, layers.Linear)):
                plain = (nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
                         if isinstance(layer, nn.Conv2d) else nn.Linear(layer.in_features, layer.out_features))
                plain.load_state_dict(layer.state_dict())
                seq[i] = plain
    return model


def seed_model(size: int, device):
    """The same AlexNet, built of torch.nn's own Conv2d, LocalResponseNorm, Dropout and Linear, as the seed builds it."""
    from torch import nn

    from alexnet_mnist.model import AlexNet, Dropout, LocalResponseNorm, ModelConfig

    model = with_torch_nn_layers(AlexNet(ModelConfig(image_size=size)))
    for seq in (model.features, model.classifier):
        for i, layer in enumerate(seq):
            if isinstance(layer, LocalResponseNorm):
                seq[i] = nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
            elif isinstance(layer, Dropout):
                seq[i] = nn.Dropout(layer.p)
    return model.to(device)


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


def measure(job: dict) -> dict:
    """Run one job ({'loop', 'what', 'size', ...}) in this process; return its numbers."""
    import torch

    from alexnet_mnist import device as dev
    from alexnet_mnist.evaluate import predict

    if job["loop"] == "project":
        dev.tune_cpu()  # as the train and evaluate stages do
    device = dev.resolve_device(job["device"])
    root = Path(job["root"])
    size, batch, seed = job["size"], 64, job.get("seed", 0)
    torch.manual_seed(seed)
    train_idx = indices(job["train_size"])
    result = {}

    if job["loop"] == "seed":
        model = seed_model(size, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
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
            loader = seed_loader(root, size, train_idx, False, batch, seed)
            train_steps(loader, job["warmup"])
            sync(device)
            began = time.perf_counter()
            train_steps(loader, job["steps"])
            sync(device)
            result["train_images_per_s"] = job["steps"] * batch / (time.perf_counter() - began)
            test_loader = seed_loader(root, size, None, True, 1000, 0)
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
        else:
            loader = seed_loader(root, size, train_idx, False, batch, seed)
            test_loader = seed_loader(root, size, None, True, 1000, 0)
            result["test_accuracy"] = []  # after each epoch
            for _ in range(job["epochs"]):
                train_steps(loader)
                result["test_accuracy"].append(evaluate(test_loader))
    else:
        from alexnet_mnist.params import ModelParams, TrainParams
        from alexnet_mnist.train import fit, start, train_epoch
        from tqdm import tqdm

        precision = dev.resolve_precision(job.get("precision", "auto"), device)
        result["precision"] = precision
        params = TrainParams(epochs=job.get("epochs", 1), batch_size=batch, lr=1e-3, seed=seed, device=job["device"],
                             precision=precision, compile=job.get("compile", False), deterministic=False,
                             nproc=1)
        data = project_tensors(root, train_idx, test=False)
        test = project_tensors(root, None, test=True)
        if job["what"] == "speed":
            run = start(ModelParams(size, 0.5), params, device)
            step_fn = torch.compile(run.model) if params.compile else run.model
            images, labels = data["images"].to(device), data["labels"].to(device)
            bar = tqdm(disable=True)
            n_warm, n_time = job["warmup"] * batch, job["steps"] * batch
            train_epoch(run, step_fn, images[:n_warm], labels[:n_warm], batch, precision, bar)
            sync(device)
            began = time.perf_counter()
            train_epoch(run, step_fn, images[n_warm : n_warm + n_time], labels[n_warm : n_warm + n_time],
                        batch, precision, bar)
            sync(device)
            result["train_images_per_s"] = n_time / (time.perf_counter() - began)
            n_eval = job["eval_images"]
            test_images = test["images"][: 1000 + n_eval].to(device)
            test_labels = test["labels"][: 1000 + n_eval].to(device)
            predict(run.model, test_images[:1000], test_labels[:1000], size, 1000, precision)  # warm-up
            sync(device)
            began = time.perf_counter()
            predict(run.model, test_images[1000:], test_labels[1000:], size, 1000, precision)
            sync(device)
            result["eval_images_per_s"] = n_eval / (time.perf_counter() - began)
        else:
            # the test images as fit's validation set: its validation accuracy after each epoch is the
            # test accuracy after each epoch (evaluation draws no random numbers, so training is unchanged)
            run = fit(data, test, ModelParams(size, 0.5), params, device, precision)
            result["test_accuracy"] = [row["val_accuracy"] for row in run.history]
    result["peak_memory_mb"] = peak_memory_mb(device)
    return result


def spawn(job: dict) -> dict:
    """Run `job` in a fresh Python process; return its result."""
    out = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark job {job} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the report

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
    parser.add_argument("--steps", type=int, default=10, help="timed training steps of batch 64 per process")
    parser.add_argument("--rounds", type=int, default=3,
                        help="fresh processes per loop and size, seed and project alternating; the median counts")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps before timing (the allocator settles within about 5 steps)")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images timed for evaluation")
    parser.add_argument("--quick-size", type=int, default=67, help="image size of the accuracy comparison")
    parser.add_argument("--train-size", type=int, default=55_000, help="training images, accuracy comparison")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the accuracy comparison")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the accuracy comparison")
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
        args.train_size, args.epochs, args.seeds = 256, 1, "0"

    from alexnet_mnist.device import describe, resolve_device, resolve_precision

    device = resolve_device(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    root = str(raw_folder(scratch))
    needed = (args.warmup + args.steps) * 64  # training images the timed steps use
    common = {"device": args.device, "root": root, "train_size": max(args.train_size, needed),
              "precision": args.precision}
    lines = [
        "| image size | loop | train images/s | eval images/s | peak memory (MiB) |",
        "|---:|---|---:|---:|---:|",
    ]
    speedups = []
    for size in (int(s) for s in args.sizes.split(",")):
        loops = ["seed", "project"] + (["project+compile"] if args.compile else [])
        runs = {loop: [] for loop in loops}
        for _ in range(args.rounds):  # alternate the loops, so drifts of machine speed hit both alike
            for loop in loops:
                job = {**common, "loop": loop.split("+")[0], "what": "speed", "size": size, "steps": args.steps,
                       "warmup": args.warmup, "eval_images": args.eval_images, "compile": loop.endswith("compile")}
                runs[loop].append(spawn(job))
                print(f"{size} {loop}: {runs[loop][-1]}", file=sys.stderr, flush=True)
        found = {}
        for loop in loops:
            found[loop] = r = {key: statistics.median(run[key] for run in runs[loop])
                               for key in ("train_images_per_s", "eval_images_per_s", "peak_memory_mb")}
            label = loop + (f" ({runs[loop][0]['precision']})" if "precision" in runs[loop][0] else " (fp32)")
            lines.append(f"| {size} | {label} | {r['train_images_per_s']:.1f} | {r['eval_images_per_s']:.1f} | "
                         f"{r['peak_memory_mb']:.0f} |")
        epoch = 55_000 / found["project"]["train_images_per_s"]  # seconds per default-config epoch
        speedups.append(f"- {size}x{size}: one 55,000-image epoch of the project's loop at this rate: {epoch:.1f} s")
        for loop in loops[1:]:
            speedups.append(
                f"- {size}x{size}, {loop}: training {found[loop]['train_images_per_s'] / found['seed']['train_images_per_s']:.2f}x "
                f"the seed loop, evaluation {found[loop]['eval_images_per_s'] / found['seed']['eval_images_per_s']:.2f}x"
            )
    accuracy = {"seed": [], "project": []}  # per loop, per seed: test accuracy after each epoch
    for seed in (int(s) for s in args.seeds.split(",")):
        for loop in accuracy:
            job = {**common, "loop": loop, "what": "accuracy", "size": args.quick_size, "seed": seed,
                   "epochs": args.epochs, "train_size": args.train_size}
            accuracy[loop].append(spawn(job)["test_accuracy"])
            print(f"accuracy {loop} seed {seed}: {accuracy[loop][-1]}", file=sys.stderr, flush=True)
    info = describe(device, "")
    report = "\n".join([
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"device {info['device_name']}; torch {info['torch_version']}, {info['threads']} threads.",
        f"Command: `{' '.join(['python', 'benchmarks/train_speed.py', *sys.argv[1:]])}`",
        f"Timing: in each of {args.rounds} fresh processes per loop and size (seed and project alternating), "
        f"{args.warmup} warm-up steps then {args.steps} timed training steps of batch 64, and "
        f"evaluation of {args.eval_images} test images in batches of 1000 after one warm-up batch; "
        f"the table gives the median over processes.",
        "",
        *lines,
        "",
        "Speed-up of the project's loop:",
        *speedups,
        "",
        f"Test accuracy after the same training ({args.train_size} images, {args.epochs} epochs, "
        f"{args.quick_size}x{args.quick_size}, seeds {args.seeds}), all 10,000 test images; the last epoch's "
        f"row is the result, earlier rows show how it got there (mean over seeds, and each seed's):",
        "",
        f"| after epoch | seed loop (fp32) | project loop ({resolve_precision(args.precision, device)}) | "
        "difference (points) |",
        "|---:|---|---|---:|",
        *accuracy_rows(accuracy, args.epochs),
    ])
    print(report)
    if args.output:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
