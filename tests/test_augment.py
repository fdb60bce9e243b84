"""On-device augmentation: no draw is the plain resize, shifts move the digit by the asked pixels,
rotations keep it centered."""

import pytest
import torch

from alexnet_mnist.augment import random_affine
from alexnet_mnist.model import to_input


def center_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(x, y) in pixels of the first image's brightness."""
    t = images[0, 0]
    ys, xs = torch.meshgrid(torch.arange(t.shape[0]).float(), torch.arange(t.shape[1]).float(), indexing="ij")
    return torch.stack([(t * xs).sum(), (t * ys).sum()]) / t.sum()


def square() -> torch.Tensor:
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:14, 12:16] = 1.0
    return image


def test_zero_draws_give_the_plain_bilinear_resize():
    x = torch.randn(4, 1, 28, 28)
    out = random_affine(x, 67, shift=2, rotate=10, draws=torch.zeros(4, 3))
    assert out.shape == (4, 1, 67, 67) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, to_input(x, 67), rtol=0, atol=1e-4)  # grid sampling vs interpolate rounding


@pytest.mark.parametrize("axis", [0, 1])
def test_a_full_draw_shifts_by_shift_pixels_of_the_28_pixel_image(axis):
    draws = torch.zeros(1, 3)
    draws[0, 1 + axis] = 1.0
    moved = center_of_mass(random_affine(square(), 67, shift=4, rotate=0, draws=draws))
    still = center_of_mass(to_input(square(), 67))
    expected = torch.zeros(2)
    expected[axis] = -4 * 67 / 28  # 4 pixels at 28 are 9.57 at 67; a positive draw moves it left/up
    torch.testing.assert_close(moved - still, expected, rtol=0, atol=0.05)


def test_rotation_about_the_center_keeps_a_centered_digit_in_place():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 12:16, 6:22] = 1.0  # a horizontal bar through the center
    turned = random_affine(image, 67, shift=0, rotate=90, draws=torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(center_of_mass(turned), center_of_mass(to_input(image, 67)), rtol=0, atol=0.05)
    rows, columns = (turned[0, 0] > 0.5).nonzero().unbind(1)
    assert rows.max() - rows.min() > 2 * (columns.max() - columns.min())  # now a vertical bar
