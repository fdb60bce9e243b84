"""The CUDA path: deterministic training and the exact LRN on the GPU. Skipped without CUDA."""

import pytest
import torch
from conftest import assert_same_weights, synthetic_mnist, train_params
from torch import nn

from alexnet_mnist.device import make_deterministic
from alexnet_mnist.model import LocalResponseNorm, ModelConfig
from alexnet_mnist.train import fit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def test_lrn_matches_pytorch_on_cuda():
    x = (torch.randn(4, 96, 27, 27, device=CUDA, dtype=torch.float64) * 30).requires_grad_()
    y = x.detach().clone().requires_grad_()
    ours, ref = LocalResponseNorm(5)(x), nn.LocalResponseNorm(5)(y)
    grad = torch.randn_like(ref)
    ours.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(x.grad, y.grad)


def test_deterministic_cuda_training_is_bitwise_repeatable():
    make_deterministic(CUDA)
    images, labels = synthetic_mnist(256, seed=1)
    data = {"images": torch.from_numpy(images).float().div(255).unsqueeze(1), "labels": torch.from_numpy(labels).long()}
    params = train_params(epochs=1, batch_size=32, seed=3, device="cuda", precision="bf16", deterministic=True)
    runs = [fit(data, data, ModelConfig(image_size=227, dropout=0.5), params, CUDA, "bf16") for _ in range(2)]
    assert_same_weights(*(r.model.state_dict() for r in runs))
