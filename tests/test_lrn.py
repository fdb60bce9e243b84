"""The LRN against PyTorch's own computed in float64: forward and gradient, in float64, float32 and bf16,
across several blocks; its whole-tensor twin for compilers, its form for the ONNX export (in onnxruntime
too); and determinism."""

import pytest
import torch
from torch import nn

from alexnet_mnist.lrn import (
    BLOCK_ELEMENTS,
    GPU_BLOCK_ELEMENTS,
    LocalResponseNorm,
    _blocks,
    _LocalResponseNorm,
    block_elements,
    local_response_norm,
    local_response_norm_for_onnx,
    normalize,
)


def reference(x: torch.Tensor, grad: torch.Tensor, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """(output, input gradient) of nn.LocalResponseNorm in float64 at the values of `x` and `grad`."""
    x64 = x.detach().double().requires_grad_()
    out = nn.LocalResponseNorm(size, alpha, beta, k)(x64)
    out.backward(grad.double())
    return out.detach(), x64.grad


def ours(x: torch.Tensor, grad: torch.Tensor, lrn=None):
    x = x.detach().clone().requires_grad_()
    out = (lrn or LocalResponseNorm(5))(x)
    out.backward(grad)
    return out.detach(), x.grad


def activations(shape, dtype=torch.float32, channels_last=True, seed=0):
    """ReLU outputs at the scale of AlexNet's first layers, where the denominator matters."""
    torch.manual_seed(seed)
    x = torch.relu(torch.randn(shape, dtype=torch.float64) * 30).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


SEVERAL_BLOCKS = (8, 96, 40, 40)  # 12,800 pixels of 96 channels: two blocks of BLOCK_ELEMENTS and part of a third
assert 2 * BLOCK_ELEMENTS < 8 * 96 * 40 * 40 < 3 * BLOCK_ELEMENTS


@pytest.mark.parametrize("shape", [(4, 96, 13, 13), (2, 7, 5, 5), (2, 3, 4, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_float64_matches_pytorch_to_float64_rounding(shape, channels_last):
    x = activations(shape, torch.float64, channels_last)
    grad = torch.randn(shape, dtype=torch.float64)
    (out, dx), (ref, ref_dx) = ours(x, grad), reference(x, grad)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-12, atol=1e-12)


def test_float32_across_blocks_matches_float64_to_float32_rounding():
    x = activations(SEVERAL_BLOCKS)
    grad = torch.randn(SEVERAL_BLOCKS)
    (out, dx), (ref, ref_dx) = ours(x, grad), reference(x, grad)
    assert out.dtype == dx.dtype == torch.float32
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(out.double(), ref, rtol=4 * eps, atol=4 * eps * ref.abs().max().item())
    torch.testing.assert_close(dx.double(), ref_dx, rtol=8 * eps, atol=8 * eps * ref_dx.abs().max().item())


def test_bf16_is_the_float64_result_rounded_once_to_bf16():
    x = activations(SEVERAL_BLOCKS, torch.bfloat16)
    grad = torch.randn(SEVERAL_BLOCKS).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, dx = ours(x, grad)
    ref, ref_dx = reference(x, grad)  # at the bf16 values themselves
    assert out.dtype == dx.dtype == torch.bfloat16
    # one rounding to bf16 (8 significant bits) is at most half a unit in the last place: 2**-8 of the value
    half_ulp = 2.0**-8
    torch.testing.assert_close(out.double(), ref, rtol=half_ulp * 1.001, atol=0)
    # the gradient's two terms can cancel: where they do, float32 rounding of the terms (~1e-7 of the
    # largest gradient) outweighs the rounding of the small result
    torch.testing.assert_close(dx.double(), ref_dx, rtol=half_ulp * 1.001, atol=1e-6 * ref_dx.abs().max().item())


def test_other_constants_even_size_and_gradcheck():
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(4, alpha=0.5, beta=0.6, k=2.0)  # even size: asymmetric window
    torch.testing.assert_close(lrn(x), nn.LocalResponseNorm(4, alpha=0.5, beta=0.6, k=2.0)(x))
    assert torch.autograd.gradcheck(lrn, (x,))


def test_whole_tensor_twin_computes_the_same_with_autograd():
    x = activations((2, 96, 9, 9), torch.float64)
    grad = torch.randn(x.shape, dtype=torch.float64)
    x_ = x.clone().requires_grad_()
    out = local_response_norm(x_, 5, 1e-4, 0.75, 1.0)
    out.backward(grad)
    ref, ref_dx = reference(x, grad)
    torch.testing.assert_close(out.detach(), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_.grad, ref_dx, rtol=1e-12, atol=1e-12)
    assert local_response_norm(x.bfloat16(), 5, 1e-4, 0.75, 1.0).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "size, alpha, beta, k",
    [(5, 1e-4, 0.75, 1.0), (4, 0.5, 0.6, 2.0)],  # AlexNet's (square roots), and others (Pow, uneven window)
)
def test_the_onnx_form_computes_the_same(size, alpha, beta, k):
    x = activations((2, 7, 5, 5), torch.float64, channels_last=False)
    expected = nn.LocalResponseNorm(size, alpha, beta, k)(x)
    torch.testing.assert_close(local_response_norm_for_onnx(x, size, alpha, beta, k), expected, rtol=1e-12, atol=1e-12)


def test_onnxruntime_runs_the_exported_lrn_as_a_convolution_and_square_roots(tmp_path):
    import onnx
    import onnxruntime

    x = activations((3, 96, 11, 11), channels_last=False)
    path = tmp_path / "lrn.onnx"
    torch.onnx.export(LocalResponseNorm(5).eval(), (x,), dynamo=True, verbose=False).save(path)
    assert sorted({node.op_type for node in onnx.load(path).graph.node}) == ["Conv", "Div", "Mul", "Sqrt"]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), nn.LocalResponseNorm(5)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_pixel_is_bitwise_the_same_whatever_the_batch_and_run(dtype):
    x = activations(SEVERAL_BLOCKS, dtype)
    grad = torch.randn(SEVERAL_BLOCKS).to(dtype).contiguous(memory_format=torch.channels_last)
    first, again, alone = ours(x, grad), ours(x, grad), ours(x[1:2], grad[1:2])
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first, alone, strict=True):
        assert torch.equal(a[1:2], b)


@pytest.mark.parametrize(
    "shape, blocks",
    [
        ((1000, 96, 55, 55), 18),  # the first LRN of evaluate's batch at 227x227: 290 million values
        ((64, 96, 55, 55), 2),  # the first LRN of a training batch at 227x227
        ((64, 256, 27, 27), 1),  # the second
    ],
)
def test_a_gpu_takes_big_batches_in_blocks_of_bounded_size(shape, blocks):
    batch, channels, height, width = shape
    rows = batch * height * width
    starts = _blocks(rows, channels, block_elements(torch.device("cuda")))
    assert len(starts) == blocks and starts[0] == 0 and starts[-1] + starts.step >= rows
    assert starts.step * channels <= GPU_BLOCK_ELEMENTS  # float32 temporaries of at most 64 MiB each
    assert block_elements(torch.device("cpu")) == BLOCK_ELEMENTS


def test_gpu_sized_blocks_give_the_cpu_blocks_bits_on_cpu_tensors():
    shape = (2, 96, 40, 40)  # 3200 pixels of 96 channels
    x = activations(shape, torch.bfloat16)
    grad = torch.randn(shape).bfloat16().contiguous(memory_format=torch.channels_last)
    results = []
    for block in (1 << 20, 1 << 17, 1000 * 96):  # one block; 3 blocks; 4, the last one short
        x_ = x.detach().clone().requires_grad_()
        out = _LocalResponseNorm.apply(x_, 5, 1e-4, 0.75, 1.0, block)
        out.backward(grad)
        results.append((out.detach(), x_.grad))
    for out, dx in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(dx, results[0][1])


def test_without_autograd_the_lrn_keeps_no_temporaries_and_computes_the_same():
    x = activations((2, 96, 40, 40))
    trained, d, scale = normalize(x, 5, 1e-4, 0.75, 1.0, 1000 * 96, keep=True)
    assert d.shape == scale.shape == (2 * 40 * 40, 96)  # every pixel's, for the backward
    out, d, scale = normalize(x, 5, 1e-4, 0.75, 1.0, 1000 * 96, keep=False)
    assert d is None and scale is None and torch.equal(out, trained)
    with torch.inference_mode():
        assert torch.equal(LocalResponseNorm(5)(x), trained)
