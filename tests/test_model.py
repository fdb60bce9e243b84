"""AlexNet shapes at several input sizes, the size floor, and the dropout (the LRN: test_lrn.py)."""

import pytest
import torch
from torch import nn

from alexnet_mnist.errors import ConfigError
from alexnet_mnist.model import AlexNet, Dropout, ModelConfig, to_input


@pytest.mark.parametrize("size, flat", [(67, 256 * 1 * 1), (99, 256 * 2 * 2), (131, 256 * 3 * 3), (227, 256 * 6 * 6)])
def test_logits_shape_and_derived_flatten_size(size, flat):
    model = AlexNet(ModelConfig(image_size=size, dropout=0.5)).eval()
    assert model.classifier[1].in_features == flat
    with torch.no_grad():
        logits = model(torch.randn(3, 1, size, size))
    assert logits.shape == (3, 10)
    assert isinstance(model.classifier[-1], nn.Linear)  # logits out: no softmax before CrossEntropyLoss
    assert not torch.allclose(logits.exp().sum(1), torch.ones(3))


def test_sizes_below_the_minimum_are_rejected():
    with pytest.raises(ConfigError, match=r"model\.image_size: 66 is too small for AlexNet: the minimum is 67"):
        ModelConfig(image_size=66, dropout=0.5)


def test_to_input_resizes_on_the_batch_device_as_channels_last():
    x = to_input(torch.randn(2, 1, 28, 28), 67)
    assert x.shape == (2, 1, 67, 67) and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_dropout_zeroes_a_p_fraction_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 1.0  # no zeros of its own
    dropout = Dropout(p).train()
    out = dropout(x.requires_grad_())
    dropped = out == 0
    assert abs(dropped.float().mean().item() - p) < 0.005  # 1e6 draws: the standard error is 0.0005
    torch.testing.assert_close(out[~dropped], x[~dropped] / (1 - p))
    out.sum().backward()  # the gradient passes through kept elements only, with the same scale
    torch.testing.assert_close(x.grad, (~dropped).float() / (1 - p))


def test_dropout_is_seeded_keeps_dtype_and_is_the_identity_in_eval():
    x = torch.randn(64, 4096, dtype=torch.bfloat16)
    dropout = Dropout(0.5)
    masks = []
    for _ in range(2):
        torch.manual_seed(3)
        out = dropout.train()(x)
        masks.append(out == 0)
    assert out.dtype == torch.bfloat16
    assert torch.equal(masks[0], masks[1])
    assert dropout.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\), got 1.0"):
        Dropout(1.0)
