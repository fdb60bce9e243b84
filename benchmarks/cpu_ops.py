"""Times the two elementwise choices of model.py on the CPU: dropout masks and the LRN's power.

Prints the median time of torch.nn.functional.dropout against the project's Dropout on a 64x4096
bf16 batch (AlexNet's hidden FC activations, batch 64), and of d.pow(-0.75) against
exp(-0.75 * log d) on a 64x15x15x96 float32 map (the first LRN's at 67x67). Usage, from the repo root:
    python benchmarks/cpu_ops.py
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from alexnet_mnist.device import tune_cpu
from alexnet_mnist.model import Dropout


def median_ms(fn, repeats: int = 7, calls: int = 20) -> float:
    for _ in range(3):
        fn()
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - began) / calls * 1000)
    return statistics.median(runs)


def main() -> None:
    tune_cpu()
    x = torch.randn(64, 4096, dtype=torch.bfloat16)
    dropout = Dropout(0.5).train()
    d = torch.rand(64, 15, 15, 96) + 1.0  # d = k + alpha/n * window sum >= k = 1
    rows = [
        ("F.dropout, 64x4096 bf16", lambda: F.dropout(x, 0.5, training=True)),
        ("model.Dropout, 64x4096 bf16", lambda: dropout(x)),
        ("d.pow(-0.75), 64x15x15x96 fp32", lambda: d.pow(-0.75)),
        ("d.log().mul_(-0.75).exp_(), same", lambda: d.log().mul_(-0.75).exp_()),
    ]
    for name, fn in rows:
        print(f"{name}: {median_ms(fn):.2f} ms")


if __name__ == "__main__":
    main()
