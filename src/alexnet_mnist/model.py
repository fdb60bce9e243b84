"""AlexNet for 1-channel images, faithful to the original layers (LRN in lrn.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import require
from .lrn import LocalResponseNorm

MIN_IMAGE_SIZE = 67  # pixels: the smallest input whose last max-pool still yields 1x1
IN_CHANNELS = 1  # grayscale digits
NUM_CLASSES = 10  # digits 0-9


def check_dropout(p: float) -> None:
    """A dropout probability is in [0, 1): at 1 nothing would be kept, and the 1/(1-p) scale divides by zero.
    Raises ConfigError (a ValueError) naming model.dropout, the one setting it comes from."""
    require(0.0 <= p < 1.0, "model.dropout", f"must be in [0, 1), got {p}")


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape: the `model` section of params.yaml, and what a model file stores."""

    image_size: int  # pixels per side of the network's input
    dropout: float  # probability, before each of the two hidden fully connected layers

    def __post_init__(self) -> None:
        require(
            self.image_size >= MIN_IMAGE_SIZE,
            "model.image_size",
            f"{self.image_size} is too small for AlexNet: "
            f"the minimum is {MIN_IMAGE_SIZE} (the reference loop uses 227)",
        )
        check_dropout(self.dropout)


class Dropout(nn.Module):
    """`nn.Dropout` in effect: in training, zero each element with probability p, scale the rest by 1/(1-p).

    The keep mask is `torch.rand(...) >= p`, the same distribution as the Bernoulli draws of
    `nn.Dropout`, which are slower on CPU (`python benchmarks/cpu_ops.py`; BENCHMARKS.md).
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        check_dropout(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p  # float32 uniforms in [0, 1)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al., 2012) for (B, 1, S, S) inputs; returns logits (B, 10)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.features = nn.Sequential(
            nn.Conv2d(IN_CHANNELS, 96, kernel_size=11, stride=4),
            nn.ReLU(inplace=True),
            LocalResponseNorm(5, alpha=1e-4, beta=0.75),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            LocalResponseNorm(5, alpha=1e-4, beta=0.75),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        side = feature_side(self.features, config.image_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * side * side, 4096),  # 256*6*6 = 9216 inputs at 227x227
            nn.ReLU(inplace=True),
            Dropout(config.dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            Dropout(config.dropout),
            nn.Linear(4096, NUM_CLASSES),  # logits: CrossEntropyLoss applies the softmax
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def feature_side(features: nn.Sequential, image_size: int) -> int:
    """Side of the feature map that `features` makes of an image_size x image_size input."""
    side = image_size
    for layer in features:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (_first(getattr(layer, a)) for a in ("kernel_size", "stride", "padding"))
            side = (side + 2 * p - k) // s + 1
    return side


def _first(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def to_input(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, 1, 28, 28) -> (B, 1, S, S) channels_last: bilinear resize on the batch's own device."""
    x = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)
