"""On-device augmentation: no draw is the plain resize, draws rotate and shift a digit by the stated degrees and
pixels, an epoch's draws are the batches' draws, and nothing is copied between devices per batch."""

import math

import pytest
import torch

from alexnet_mnist.augment import epoch_draws, random_affine
from alexnet_mnist.model import to_input


def center_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(B, 2): each image's (x, y) in pixels of its brightness, from the top-left pixel's center."""
    t = images[:, 0]
    ys, xs = torch.meshgrid(torch.arange(t.shape[1]).float(), torch.arange(t.shape[2]).float(), indexing="ij")
    return torch.stack([(t * xs).sum((1, 2)), (t * ys).sum((1, 2))], 1) / t.sum((1, 2))[:, None]


def square() -> torch.Tensor:
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:14, 12:16] = 1.0
    return image


def test_zero_draws_give_the_plain_bilinear_resize():
    x = torch.randn(4, 1, 28, 28)
    out = random_affine(x, 67, shift=2, rotate=10, draws=torch.zeros(4, 3))
    assert out.shape == (4, 1, 67, 67) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, to_input(x, 67), rtol=0, atol=1e-5)  # the sample at 28 hits pixel centers


@pytest.mark.parametrize("axis", [0, 1])
def test_a_full_draw_shifts_by_shift_pixels_of_the_28_pixel_image(axis):
    draws = torch.zeros(1, 3)
    draws[0, 1 + axis] = 1.0
    moved = center_of_mass(random_affine(square(), 67, shift=4, rotate=0, draws=draws))
    still = center_of_mass(to_input(square(), 67))
    expected = torch.zeros(1, 2)
    expected[0, axis] = -4 * 67 / 28  # 4 pixels at 28 are 9.57 at 67; a positive draw moves it left/up
    torch.testing.assert_close(moved - still, expected, rtol=0, atol=0.05)


def test_draws_rotate_and_shift_a_digit_by_the_stated_degrees_and_pixels():
    """A dot 9 pixels right of and 4 above the center of a 28x28 digit, under four draws: at 227x227 it lands
    within a pixel of where a rotation by draw * 10 degrees about the center (counterclockwise as seen, for a
    positive draw) after a shift by -draw * 3 pixels of the 28-pixel image puts it."""
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 9:11, 22:24] = 1.0  # its center: x 23, y 10 in pixel coordinates, (+9, -4) from the image's
    draws = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.5, 1.0, -0.5], [-0.7, -0.3, 1.0]])
    images = image.expand(len(draws), -1, -1, -1)
    found = center_of_mass(random_affine(images, 227, shift=3, rotate=10, draws=draws))  # in 227 pixels
    found_at_28 = (found + 0.5) * 28 / 227 - 14  # (x, y) from the image's center, in pixels of the 28-pixel image
    dot, shift = torch.tensor([9.0, -4.0]), -3 * draws[:, 1:]
    angle = draws[:, 0] * math.radians(10)
    x, y = (dot + shift).unbind(1)  # y points down, so a rotation counterclockwise as seen is clockwise in (x, y)
    expected = torch.stack([x * angle.cos() + y * angle.sin(), -x * angle.sin() + y * angle.cos()], 1)
    assert ((found_at_28 - expected) * 227 / 28).norm(dim=1).max() < 1.0  # pixels at 227
    assert (found_at_28 - dot).norm(dim=1).min() > 1.5  # every draw moved it: the check has teeth


def test_rotation_about_the_center_keeps_a_centered_digit_in_place():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 12:16, 6:22] = 1.0  # a horizontal bar through the center
    turned = random_affine(image, 67, shift=0, rotate=90, draws=torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(center_of_mass(turned), center_of_mass(to_input(image, 67)), rtol=0, atol=0.05)
    rows, columns = (turned[0, 0] > 0.5).nonzero().unbind(1)
    assert rows.max() - rows.min() > 2 * (columns.max() - columns.min())  # now a vertical bar


def test_an_epochs_draws_are_the_draws_of_its_batches_in_turn():
    """One draw of the epoch gives the values and the generator state of one draw per batch (64, then the rest)."""
    per_batch = torch.Generator().manual_seed(5)
    batches = [torch.rand(n, 3, generator=per_batch).mul_(2).sub_(1) for n in (64, 64, 64, 13)]
    at_once = torch.Generator().manual_seed(5)
    draws = epoch_draws(205, at_once, torch.device("cpu"))
    assert torch.equal(draws, torch.cat(batches)) and draws.min() >= -1 and draws.max() < 1
    assert torch.equal(at_once.get_state(), per_batch.get_state())


def test_the_draws_reach_the_images_device_once_and_are_never_copied_per_batch():
    """epoch_draws puts the epoch's draws on the device it is given (the meta device stands for a second device
    here), and random_affine refuses draws on another device than the images rather than copying them."""
    meta = torch.device("meta")
    draws = epoch_draws(64, torch.Generator().manual_seed(0), meta)
    assert draws.device == meta and draws.shape == (64, 3)
    images = torch.zeros(64, 1, 28, 28, device=meta)
    assert random_affine(images, 67, shift=2, rotate=10, draws=draws).shape == (64, 1, 67, 67)
    with pytest.raises(RuntimeError, match="device"):
        random_affine(images, 67, shift=2, rotate=10, draws=torch.zeros(64, 3))
