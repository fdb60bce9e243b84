"""The fast-gradient Conv2d and Linear against torch.nn's own, under bf16 CPU autocast and elsewhere."""

import pytest
import torch
from torch import nn

from alexnet_mnist import layers


def pair(make, conv: bool) -> tuple[nn.Module, nn.Module]:
    """(torch.nn's layer, ours) with the same weights."""
    torch.manual_seed(0)
    reference = make(nn.Conv2d if conv else nn.Linear)
    mine = make(layers.Conv2d if conv else layers.Linear)
    mine.load_state_dict(reference.state_dict())
    return reference, mine


def run(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, autocast: bool):
    """Output and the gradients of input, weight and bias."""
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = layer(x)
    out.backward(grad.to(out.dtype))
    return out, x.grad, layer.weight.grad, layer.bias.grad


CASES = [
    # (layer maker, input shape, takes the fast path under bf16 autocast)
    (lambda cls: cls(256, 384, 3, padding=1), (64, 256, 3, 3), True),  # AlexNet's conv3 at 67x67
    (lambda cls: cls(16, 8, 3, padding=1), (4, 16, 4, 4), True),
    (lambda cls: cls(96, 256, 5, padding=2), (8, 96, 7, 7), False),  # 49 positions: oneDNN's is faster
    (lambda cls: cls(1, 96, 11, stride=4), (8, 1, 67, 67), False),
    (lambda cls: cls(4096, 4096), (64, 4096), True),
    (lambda cls: cls(256, 10), (5, 256), True),
]


def inputs(shape, reference):
    torch.manual_seed(1)
    x = torch.randn(shape)
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randn_like(reference(x))


@pytest.mark.parametrize("make, shape, fast", CASES)
def test_same_results_as_torch_nn_under_bf16_autocast(make, shape, fast):
    reference, mine = pair(make, conv=len(shape) == 4)
    x, grad = inputs(shape, reference)
    expected, got = run(reference, x, grad, autocast=True), run(mine, x, grad, autocast=True)
    assert ("WeightGrad" in got[0].grad_fn.name()) == fast, got[0].grad_fn.name()
    assert got[0].dtype == torch.bfloat16 and got[2].dtype == got[3].dtype == torch.float32
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)  # the same bf16 forward
    # The exact gradient: float64, of the same bf16-rounded inputs and weights.
    exact_layer = make(nn.Conv2d if len(shape) == 4 else nn.Linear).double()
    exact_layer.load_state_dict({k: v.bfloat16().double() for k, v in reference.state_dict().items()})
    exact = run(exact_layer, x.bfloat16().double(), grad.bfloat16().double(), autocast=False)
    for mine_grad, their_grad, exact_grad in zip(got[1:], expected[1:], exact[1:], strict=True):
        scale = exact_grad.abs().max().item()
        # ours is as close to the exact gradient as torch.nn's bf16 one is (bf16 keeps ~3 digits)
        torch.testing.assert_close(mine_grad.double(), exact_grad, rtol=1e-2, atol=1e-2 * scale)
        torch.testing.assert_close(their_grad.double(), exact_grad, rtol=1e-2, atol=1e-2 * scale)


@pytest.mark.parametrize("make, shape, fast", CASES)
def test_without_autocast_it_is_exactly_torch_nn(make, shape, fast):
    reference, mine = pair(make, conv=len(shape) == 4)
    x, grad = inputs(shape, reference)
    for a, b in zip(run(mine, x, grad, autocast=False), run(reference, x, grad, autocast=False), strict=True):
        assert torch.equal(a, b)
