"""Load test of `alexnet-mnist serve`: N concurrent clients post real MNIST test digits as PNGs for S seconds.

    python benchmarks/serve_load.py [--model FILE | --untrained SIZE] [--clients 16] [--seconds 30]

Starts the installed server on a free port of 127.0.0.1 (loopback only) and stops it at the end. Each
client keeps one connection and posts the next digit as soon as the last answer came (a closed loop),
until the time is up; every answer must be 200 and the digit the model gives the same image in this
process (predict.load and predict.digit on the same bytes). Reports throughput, p50 and p99
latency, failed requests, the server's resident memory before and after, and the compute floor:
the model's forward FLOPs per image (common.flop_counts) over the machine's measured peak FLOP/s in
fp32 (common.peak_candidates, measured before the server starts), i.e. the images/s the CPU
could do at best. The real MNIST files come as the other benchmarks get them (data/raw or
$MNIST_MIRROR, checked against mnist.sha256). --untrained SIZE serves an ONNX export of freshly initialized
weights at SIZE x SIZE instead of a trained model: the speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from common import ROOT, cpu_lines, flop_counts, peak_candidates, raw_folder, rss_mb, serve, server_timing, settings
from PIL import Image

IMAGES = 500  # different test digits the clients cycle through
WARMUP = 5  # requests per client before the clock starts, by one client and then by all: the first passes of
# each batch size allocate (onnxruntime's memory arena grows to the largest batch)


def digit_pngs(count: int) -> list[bytes]:
    """The first `count` real MNIST test digits as PNG files (dark on light, 28x28), in memory."""
    from alexnet_mnist.idx import TEST_IMAGES, TEST_LABELS, read_pair

    with tempfile.TemporaryDirectory() as scratch:
        raw = raw_folder(Path(scratch)) / "MNIST" / "raw"
        images, _ = read_pair(raw / TEST_IMAGES, raw / TEST_LABELS)
    found = []
    for image in images[:count]:
        out = io.BytesIO()
        Image.fromarray(255 - image).save(out, "PNG")
        found.append(out.getvalue())
    return found


def expected_digits(model_path: Path, pngs: list[bytes]) -> list[int]:
    """The digit the model gives each PNG in this process, through the library the server uses."""
    from alexnet_mnist.predict import digit, load

    model = load(model_path)
    digits = np.stack([digit(io.BytesIO(data), "test digit") for data in pngs])
    return [int(d) for d in model.probabilities(digits).argmax(axis=1)]


class Client(threading.Thread):
    """Posts digits over one keep-alive connection until `stop`; records each request's latency and failure."""

    def __init__(self, url: str, pngs: list[bytes], expected: list[int], start: int, stop: float, most: float):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.pngs, self.expected, self.next, self.stop, self.most = pngs, expected, start, stop, most
        self.latencies: list[float] = []
        self.timings: list[dict[str, float]] = []  # each good answer's Server-Timing (ms; and its batch size)
        self.failures: list[str] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        while time.perf_counter() < self.stop and len(self.latencies) + len(self.failures) < self.most:
            i = self.next % len(self.pngs)
            self.next += 1
            began = time.perf_counter()
            try:
                connection.request("POST", "/predict", self.pngs[i], {"Content-Type": "image/png"})
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                continue
            self.latencies.append(time.perf_counter() - began)
            if response.status != 200:
                self.failures.append(f"status {response.status}: {body[:200]!r}")
            elif json.loads(body)["digit"] != self.expected[i]:
                got = json.loads(body)["digit"]
                self.failures.append(f"digit {got} for test image {i}, expected {self.expected[i]}")
            else:
                timing = server_timing(response.getheader("Server-Timing", ""))
                timing["total"] = self.latencies[-1] * 1000
                self.timings.append(timing)
        connection.close()


def run_clients(
    url: str, pngs: list[bytes], expected: list[int], clients: int, seconds: float, most: float = float("inf")
) -> tuple[list, list, float, list]:
    """(latencies in s, failures, wall seconds, Server-Timings) of `clients` clients posting for `seconds`, or
    until each has posted `most` requests."""
    stop = time.perf_counter() + seconds
    threads = [Client(url, pngs, expected, k * len(pngs) // clients, stop, most) for k in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return (
        [t for c in threads for t in c.latencies],
        [f for c in threads for f in c.failures],
        wall,
        [t for c in threads for t in c.timings],
    )


def phase_table(timings: list[dict[str, float]]) -> list[str]:
    """Markdown rows: where a request's time went, from the server's Server-Timing headers (median and p99, ms)."""
    server = {
        "prepare": "reading and preparing the image, with any wait for a preparation slot (server)",
        "wait": "waiting for the model (server)",
        "model": "the forward pass it was part of (server)",
    }
    parts = {label: [t[key] for t in timings] for key, label in server.items()}
    parts["the rest: HTTP, event loop, client"] = [t["total"] - sum(t[key] for key in server) for t in timings]
    rows = ["| part of a request | median (ms) | p99 (ms) |", "|---|---:|---:|"]
    for label, values in parts.items():
        rows.append(f"| {label} | {np.percentile(values, 50):.1f} | {np.percentile(values, 99):.1f} |")
    batches = [t["batch"] for t in timings]
    rows += ["", f"Digits per forward pass, as requests saw them: mean {np.mean(batches):.1f}, max {max(batches):.0f}."]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", type=Path, help="the model the server loads (default: dvc.yaml's ONNX export, models/model.onnx)"
    )
    which.add_argument(
        "--untrained", type=int, metavar="SIZE", help="serve an ONNX export of untrained weights at SIZE x SIZE"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the clients post")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    args = parser.parse_args()
    from alexnet_mnist.predict import default_model

    with tempfile.TemporaryDirectory() as tmp:
        if args.untrained is not None:
            model = untrained_export(args.untrained, Path(tmp) / f"untrained-{args.untrained}.onnx")
        else:
            model = args.model or ROOT / default_model(ROOT, "onnx")
        load_test(args, model)


def untrained_export(size: int, path: Path) -> Path:
    """`path`: the ONNX export of AlexNet at `size` with its initial weights (seed 0), normalized as params.yaml."""
    from alexnet_mnist import onnx_export
    from alexnet_mnist.model import AlexNet, ModelConfig

    data, config = settings()[:2]
    torch.manual_seed(0)
    network = AlexNet(ModelConfig(image_size=size, dropout=config.dropout))
    onnx_export.export(network, {"mean": data.mean, "std": data.std}, path)
    return path


def load_test(args: argparse.Namespace, model: Path) -> None:
    """Run the clients against a server of `model`; print (and write to --output) the report; exit 1 on failures."""
    from alexnet_mnist.model import ModelConfig
    from alexnet_mnist.predict import load

    pngs = digit_pngs(IMAGES)
    expected = expected_digits(model, pngs)
    size = load(model).image_size
    config = ModelConfig(image_size=size, dropout=settings()[1].dropout)
    per_image = sum(flop_counts(config, backward=False)["Global"].values())
    peaks = peak_candidates(torch.device("cpu"), "fp32", config, batch=16)
    peak = max(peaks.values())
    floor = peak / per_image  # images/s if every FLOP ran at the peak

    with serve(model) as (url, server):
        # warm-up, its failures counted too: one client (passes of one digit), then all (passes of many)
        warm = [run_clients(url, pngs, expected, n, args.seconds, most=WARMUP)[1] for n in (1, args.clients)]
        before = rss_mb(server.pid)
        latencies, failures, wall, timings = run_clients(url, pngs, expected, args.clients, args.seconds)
        after = rss_mb(server.pid)
        failures = [*warm[0], *warm[1], *failures]
    milliseconds = np.array(latencies) * 1000
    throughput = len(latencies) / wall
    report = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {cpu_lines('fp32', torch.device('cpu'))[0]}",
        f"Command: `python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`",
        f"Model: {model} ({size}x{size}); {args.clients} clients, each on one keep-alive connection, posting "
        f"the first {IMAGES} MNIST test digits as 28x28 PNGs for {wall:.1f} s, after {WARMUP} requests from one "
        f"client and {WARMUP} from each of them.",
        "",
        "| requests | failed | throughput (images/s) | p50 latency (ms) | p99 latency (ms) | server RSS before, "
        "after (MiB) |",
        "|---|---|---|---|---|---|",
        f"| {len(latencies)} | {len(failures)} | {throughput:.1f} | {np.percentile(milliseconds, 50):.1f} | "
        f"{np.percentile(milliseconds, 99):.1f} | {before:.0f}, {after:.0f} ({after - before:+.0f}) |",
        "",
        f"Compute floor: {per_image / 1e9:.3f} GFLOPs per image forward (at {size}x{size}) over the measured fp32 "
        f"peak of {peak / 1e9:.1f} GFLOP/s ({max(peaks, key=peaks.get)}) = {floor:.1f} images/s at best; "
        f"the server reached {throughput / floor:.2f} of it.",
        "",
        *(phase_table(timings) if timings else ["No request was answered: no Server-Timing to report."]),
    ]
    if failures:
        report += ["", f"First failures ({len(failures)} in all):", *(f"- {f}" for f in failures[:5])]
    text = "\n".join(report)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
