"""On-device data augmentation: random rotations and shifts of whole batches, fused with the resize."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .idx import MNIST_SIDE


def random_affine(images: torch.Tensor, size: int, shift: float, rotate: float, draws: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) -> (B, 1, S, S) channels_last, each image rotated and shifted, then resampled.

    `draws` (B, 3), uniform in [-1, 1): per image, the rotation as a fraction of `rotate`
    (degrees) and the x and y shifts as fractions of `shift` (pixels of the 28-pixel image).
    One affine grid sample per batch on the images' device does the transform and the
    bilinear resize to S together; pixels from outside the image repeat its (blank) border.
    """
    draws = draws.to(images.device, torch.float32)
    angle = draws[:, 0] * math.radians(rotate)
    offset = draws[:, 1:] * (2 * shift / MNIST_SIDE)  # pixels -> grid units: the image spans [-1, 1]
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), [len(images), images.shape[1], size, size], align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)
