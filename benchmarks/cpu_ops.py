"""Times the CPU choices of model.py and lrn.py, one op at a time: dropout masks, the LRN's power, and
the LRN itself (forward and backward) with the band matrix it replaced and in blocks of several sizes.

Prints the fastest of 7 timings of each: torch.nn.functional.dropout against the project's Dropout on
a 64x4096 bf16 batch (AlexNet's hidden activations at batch 64); d.pow(-0.75) against
exp(-0.75 * log d) on a 64x15x15x96 float32 map (the first LRN's at 67x67); and the LRN's forward
and backward on each of AlexNet's two LRN inputs at 227x227 and 67x67 (bf16, batch 64,
channels-last), with lrn.BLOCK_ELEMENTS set to each size in turn. From the repo root:
    python benchmarks/cpu_ops.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from common import BandLocalResponseNorm

import alexnet_mnist.lrn as lrn
from alexnet_mnist.device import tune_cpu
from alexnet_mnist.model import Dropout

BLOCKS = (1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 21)
# (batch, channels, side, side) of the LRN inputs: conv1's and conv2's outputs at 227x227 and 67x67
LRN_SHAPES = ((64, 96, 55, 55), (64, 256, 27, 27), (64, 96, 15, 15), (64, 256, 7, 7))


def fastest_ms(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return min(runs) * 1000


def lrn_row(shape) -> str:
    """Markdown row: ms of forward + backward with the band LRN, then blockwise at each of BLOCKS."""
    x = torch.relu(torch.randn(shape)).mul_(3).bfloat16().contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(shape).bfloat16().contiguous(memory_format=torch.channels_last)

    def step(layer):
        return lambda: layer(x).backward(grad)

    cells = [fastest_ms(step(BandLocalResponseNorm(5, 1e-4, 0.75, 1.0)))]
    default = lrn.BLOCK_ELEMENTS
    for block in BLOCKS:
        lrn.BLOCK_ELEMENTS = block
        cells.append(fastest_ms(step(lrn.LocalResponseNorm(5))))
    lrn.BLOCK_ELEMENTS = default
    return f"| {'x'.join(map(str, shape))} | " + " | ".join(f"{c:.1f}" for c in cells) + " |"


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
        print(f"{name}: {fastest_ms(fn):.2f} ms")
    print("\nLRN forward + backward, ms (bf16, channels-last):\n")
    print("| input | band matrix | " + " | ".join(f"blocks of 2^{b.bit_length() - 1}" for b in BLOCKS) + " |")
    print("|---|---:|" + "---:|" * len(BLOCKS))
    for shape in LRN_SHAPES:
        print(lrn_row(shape), flush=True)


if __name__ == "__main__":
    main()
