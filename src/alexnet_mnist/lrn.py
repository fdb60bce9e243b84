"""Local response normalization (AlexNet's LRN) at O(C) per pixel: exact, deterministic, and cache-blocked on the CPU.

    b_c = a_c * d_c^-beta,  d_c = k + alpha/n * sum_{c' in window(c)} a_c'^2

with the window channels c - n//2 .. c + (n-1)//2, zero-padded at the ends: `nn.LocalResponseNorm`'s
math. PyTorch's own goes through `avg_pool3d`, slow on the CPU and nondeterministic in its CUDA
backward. Here the window sum is a moving sum along the channels of channels-last rows (n shifted
adds of a zero-padded copy), and the backward is the analytic gradient

    da_c = g_c * d_c^-beta - 2 alpha beta / n * a_c * sum_{c' : c in window(c')} g_c' a_c' d_c'^-beta / d_c'.

Whatever the input's dtype, the squares, sums and powers are computed in float32 at least (float64
stays float64); only the output and the input gradient are rounded back to the input's dtype. The
pixels go through in blocks: on the CPU of about BLOCK_ELEMENTS values, so that each pass over a block
reads and writes the cache rather than main memory; on a GPU of about GPU_BLOCK_ELEMENTS, so that the
float32 temporaries stay small next to the batch (one block of evaluate's 1000 images at 227x227
would be several GB). Without autograd (evaluation) only one block's temporaries exist at a time.
Each pixel's result is the same whatever the block.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

# values per block on the CPU: the block's six float32 temporaries (12 MiB) stay in the last-level
# cache, and the dozen PyTorch calls per block cost little next to its arithmetic (the size was
# chosen by timing the LRN alone at AlexNet's shapes, BENCHMARKS.md)
BLOCK_ELEMENTS = 1 << 19
# values per block on a GPU: 64 MiB per float32 temporary, enough work per kernel to fill any GPU, and
# AlexNet's training batch of 64 at 227x227 is one or two blocks per LRN
GPU_BLOCK_ELEMENTS = 1 << 24


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bf16, fp16 and float32 inputs; float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def window_sum(padded: torch.Tensor, out: torch.Tensor, size: int) -> torch.Tensor:
    """out[:, c] = sum of padded[:, c + m] for m in 0..size-1: the moving sum of `size` columns.

    `padded` is (R, C + size - 1), the values with their zero padding; `out` is (R, C).
    """
    channels = out.shape[1]
    torch.add(padded[:, :channels], padded[:, 1 : channels + 1], out=out)
    for m in range(2, size):
        out.add_(padded[:, m : m + channels])
    return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last -> (B*H*W, C), a view: one row of channels per pixel."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def block_elements(device: torch.device) -> int:
    """Values per block on `device`: BLOCK_ELEMENTS on the CPU, GPU_BLOCK_ELEMENTS elsewhere."""
    return BLOCK_ELEMENTS if device.type == "cpu" else GPU_BLOCK_ELEMENTS


def _blocks(rows: int, channels: int, block: int) -> range:
    """Start rows of the blocks of about `block` values (at least one row each)."""
    return range(0, rows, max(1, block // channels))


def normalize(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, block: int, keep: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(the LRN of `x`, d, d^-beta), blockwise over channels-last rows of about `block` values.

    d and d^-beta are (B*H*W, C) in the compute dtype where `keep` (the backward needs them), else
    None, and then only one block of each is ever allocated.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x)
    a, b = _rows(x), _rows(out)
    n, channels = a.shape
    dtype = compute_dtype(x.dtype)
    blocks = _blocks(n, channels, block)
    rows_per_block = min(blocks.step, n)
    lo = size // 2  # the window's channels before c; (size - 1) // 2 after
    d = torch.empty(n if keep else rows_per_block, channels, dtype=dtype, device=x.device)  # k + alpha/size * sum
    scale = torch.empty_like(d)  # d^-beta
    padded = torch.zeros(rows_per_block, channels + size - 1, dtype=dtype, device=x.device)
    for start in blocks:
        rows = slice(start, start + blocks.step)
        a_ = a[rows]
        m = len(a_)
        d_, s_ = (d[rows], scale[rows]) if keep else (d[:m], scale[:m])
        pad = padded[:m]
        squares = pad[:, lo : lo + channels]
        squares.copy_(a_)  # to float32: its squares are then exact for bf16 values
        squares.mul_(squares)
        window_sum(pad, d_, size).mul_(alpha / size).add_(k)
        torch.log(d_, out=s_).mul_(-beta).exp_()  # d^-beta, d >= k > 0; faster than pow on the CPU
        torch.mul(a_, s_, out=b[rows])  # in float32, rounded once to the output's dtype
    return (out, d, scale) if keep else (out, None, None)


class _LocalResponseNorm(torch.autograd.Function):
    """`normalize` and the analytic backward, blockwise over channels-last rows; saves d and d^-beta."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, block: int) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        out, d, scale = normalize(x, size, alpha, beta, k, block, keep=True)
        ctx.save_for_backward(x, d, scale)
        ctx.constants = (size, alpha, beta, block)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:
        x, d, scale = ctx.saved_tensors
        size, alpha, beta, block = ctx.constants
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_in = torch.empty_like(x)
        a, g, da = _rows(x), _rows(grad), _rows(grad_in)
        n, channels = a.shape
        blocks = _blocks(n, channels, block)
        rows_per_block = min(blocks.step, n)
        lo = (size - 1) // 2  # the transposed window: channels c' whose window holds c
        padded = torch.zeros(rows_per_block, channels + size - 1, dtype=d.dtype, device=x.device)
        scaled = torch.empty(rows_per_block, channels, dtype=d.dtype, device=x.device)  # g * d^-beta
        inner = torch.empty_like(scaled)
        for start in blocks:
            rows = slice(start, start + blocks.step)
            a_, d_, s_ = a[rows], d[rows], scale[rows]
            m = len(a_)
            gs, pad = torch.mul(g[rows], s_, out=scaled[:m]), padded[:m]
            terms = pad[:, lo : lo + channels]
            torch.mul(gs, a_, out=terms).div_(d_)  # g a d^-beta / d
            window_sum(pad, inner[:m], size)
            torch.addcmul(gs, a_, inner[:m], value=-2.0 * alpha * beta / size, out=da[rows])
        return grad_in, None, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The same LRN in whole-tensor operations that autograd and torch.compile follow.

    (B, C, H, W) -> (B, C, H, W). Used where the model is compiled; the ONNX export records
    `local_response_norm_for_onnx`, and the blockwise version runs everywhere else.
    """
    a = x.to(compute_dtype(x.dtype))
    padded = F.pad(a * a, (0, 0, 0, 0, size // 2, (size - 1) // 2))  # zeros before and after the channels
    channels = x.shape[1]
    total = cast(torch.Tensor, sum(padded[:, m : m + channels] for m in range(size)))  # never the empty sum's 0
    return (a * (total * (alpha / size) + k).pow(-beta)).to(x.dtype)


def local_response_norm_for_onnx(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The same LRN in the operators onnxruntime runs fastest: what the ONNX export records.

    (B, C, H, W) float32 -> (B, C, H, W). The window sum, times alpha/size, plus k, is one 1x1 convolution
    of the squares with a band of C x C weights and bias k: onnxruntime keeps it in its blocked
    convolution layout between the model's convolutions, where the elementwise form exports as a dozen
    passes over memory (Pad, a Slice and an Add per window channel) that each leave that layout. The band
    adds 2 C^2 FLOPs per pixel, 7% of AlexNet's forward FLOPs at 227x227. For AlexNet's beta of 0.75,
    d^-beta is 1 / (sqrt(d) sqrt(sqrt(d))): onnxruntime's Pow calls std::pow per value, several times
    slower than two vectorized square roots (BENCHMARKS.md, "Serving under load").
    """
    channels = x.shape[1]
    # built from Python numbers, so that the export records the (C, C, 1, 1) weights as one constant:
    # output channel c sums the input channels c - size//2 .. c + (size-1)//2
    band = [
        [[[alpha / size if -(size // 2) <= i - c <= (size - 1) // 2 else 0.0]] for i in range(channels)]
        for c in range(channels)
    ]
    weight = torch.tensor(band, dtype=x.dtype, device=x.device)
    d = F.conv2d(x * x, weight, torch.full((channels,), k, dtype=x.dtype, device=x.device))
    if beta == 0.75:
        root = torch.sqrt(d)
        return x / (root * torch.sqrt(root))
    return x * d.pow(-beta)


class LocalResponseNorm(nn.Module):
    """`nn.LocalResponseNorm`'s math (see the module docstring), faster and deterministic."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        if torch.onnx.is_in_onnx_export():
            return local_response_norm_for_onnx(x, self.size, self.alpha, self.beta, self.k)
        if torch.compiler.is_compiling():
            return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        constants = (self.size, self.alpha, self.beta, self.k, block_elements(x.device))
        with torch.autocast(x.device.type, enabled=False):  # the math picks its own precision
            if torch.is_grad_enabled() and x.requires_grad:
                return _LocalResponseNorm.apply(x, *constants)
            return normalize(x, *constants, keep=False)[0]  # no backward: one block's temporaries at a time

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
