"""`nn.Conv2d` and `nn.Linear` with the same results and a faster weight gradient under bf16 autocast on CPU.

Under autocast, PyTorch computes a layer's weight gradient in bf16 with oneDNN and then casts it to
the float32 parameter's dtype. Two cases of that are slow on CPU:

- A 3x3 convolution on 3x3 maps (AlexNet's conv3-5 at 67x67): oneDNN's weight-gradient kernel runs
  at a fraction of its forward speed. One GEMM of the output gradient with the unfolded input
  (im2col) computes the same gradient 2-4x faster.
- A wide Linear: the bf16 gradient of a 4096x4096 weight is written, then read and written again
  as float32. One float32 GEMM of the upcast (batch x features) inputs writes it once, and more
  precisely.

Training step of AlexNet at 67x67, batch 64, on a 2-core AVX512-BF16/AMX CPU, both variants
alternating in one process (`python benchmarks/layers_ab.py --size 67 --steps 80`): median 141.6 ms
with these layers against 162.4 ms with torch.nn's. At 227x227 the difference was within the
machine's noise (1333 against 1345 ms, `--size 227 --steps 16`).

Everywhere else (CUDA, float32, other map sizes) the layers are exactly torch.nn's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP = 16  # output positions (H*W) up to which a convolution's weight gradient is one GEMM


def _bf16_cpu_autocast(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


class _Conv2dGemmWeightGrad(torch.autograd.Function):
    """bf16 conv2d (stride 1, no dilation, one group) whose weight gradient is one im2col GEMM."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding: tuple[int, int]):
        w16 = weight.to(torch.bfloat16)  # what autocast would pass to the convolution
        ctx.save_for_backward(x, w16)
        ctx.padding = padding
        return F.conv2d(x, w16, bias.to(torch.bfloat16), padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, w16 = ctx.saved_tensors
        out_channels, in_channels, kh, kw = w16.shape
        grad_x = None
        if ctx.needs_input_grad[0]:  # oneDNN's data gradient is fast: keep it
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, w16, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1, [True, False, False])[0]
        cols = F.unfold(x, (kh, kw), padding=ctx.padding)  # (N, C_in*kh*kw, H*W)
        grad_rows = grad.permute(1, 0, 2, 3).reshape(out_channels, -1)  # (C_out, N*H*W)
        grad_w = grad_rows @ cols.transpose(1, 2).reshape(-1, in_channels * kh * kw)
        grad_b = grad.sum((0, 2, 3), dtype=torch.float32)
        return grad_x, grad_w.view(w16.shape).float(), grad_b, None


class Conv2d(nn.Conv2d):
    """`nn.Conv2d`; under bf16 CPU autocast, on maps of at most SMALL_MAP positions, the GEMM weight gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = x.shape[-2] * x.shape[-1] <= SMALL_MAP  # stride 1 and "same" padding: output map = input map
        plain = (self.stride, self.dilation, self.groups) == ((1, 1), (1, 1), 1) and self.bias is not None
        padded_same = all(2 * p == k - 1 for p, k in zip(self.padding, self.kernel_size, strict=True))
        if not (small and plain and padded_same and _bf16_cpu_autocast(x)):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return _Conv2dGemmWeightGrad.apply(x.to(torch.bfloat16), self.weight, self.bias, self.padding)


class _LinearFloat32WeightGrad(torch.autograd.Function):
    """bf16 linear whose weight and bias gradients are computed in, and written once as, float32."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        w16 = weight.to(torch.bfloat16)  # what autocast would pass to the matmul
        ctx.save_for_backward(x, w16)
        return torch.addmm(bias.to(torch.bfloat16), x, w16.t())

    @staticmethod
    def backward(ctx, grad):
        x, w16 = ctx.saved_tensors
        grad_x = grad @ w16 if ctx.needs_input_grad[0] else None
        grad32 = grad.float()
        return grad_x, grad32.t() @ x.float(), grad32.sum(0)


class Linear(nn.Linear):
    """`nn.Linear`; under bf16 CPU autocast, on (batch, features) inputs, the float32 weight gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or self.bias is None or not _bf16_cpu_autocast(x):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return _LinearFloat32WeightGrad.apply(x.to(torch.bfloat16), self.weight, self.bias)
