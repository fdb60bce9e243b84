"""On-device data augmentation: random rotations and shifts of whole batches at 28x28, then the resize."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .idx import MNIST_SIDE
from .model import to_input


def epoch_draws(images: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(images, 3) uniform in [-1, 1) on `device`: one epoch's draws, a row per image in batch order.

    One call on the CPU `generator` gives the same values, and leaves the generator in the same
    state, as one call per batch of rows: it fills the tensor one value after another. One copy to
    the device per epoch, rather than one per step, which on a GPU would make the host wait for the
    previous step before it could queue the next.
    """
    return torch.rand(images, 3, generator=generator).mul_(2).sub_(1).to(device)


def random_affine(images: torch.Tensor, size: int, shift: float, rotate: float, draws: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) -> (B, 1, S, S) channels_last, each image rotated and shifted, then resized.

    `draws` (B, 3), uniform in [-1, 1), on the images' device (never copied here): per image, the
    rotation as a fraction of `rotate` (degrees) and the x and y shifts as fractions of `shift`
    (pixels of the 28-pixel image; a positive draw moves the digit left or up). One affine grid
    sample at 28x28 rotates about the center and shifts, bilinearly, repeating the image's (blank)
    border; then the bilinear resize of `to_input`. At 28x28 the sample touches 66x fewer pixels
    than at 227x227, as a torchvision RandomAffine before Resize would.
    """
    angle = draws[:, 0] * math.radians(rotate)
    offset = draws[:, 1:] * (2 * shift / MNIST_SIDE)  # pixels -> grid units: the image spans [-1, 1]
    cos, sin, dx, dy = (t.view(-1, 1, 1) for t in (angle.cos(), angle.sin(), *offset.unbind(1)))  # (B, 1, 1) each
    side = images.shape[-1]
    centers = torch.arange(side, device=images.device, dtype=images.dtype).mul_(2).add_(1).div_(side).sub_(1)
    xs, ys = centers.view(1, 1, side), centers.view(1, side, 1)  # pixel centers in grid units
    # (B, 28, 28, 2): where each pixel samples, as affine_grid would give, in elementwise ops (its
    # batched matrix product of 3-vectors takes 10x longer on the CPU)
    grid = torch.stack([cos * xs - sin * ys + dx, sin * xs + cos * ys + dy], -1)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return to_input(moved, size)
