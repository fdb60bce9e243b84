"""Digit images of any format, mode, size and polarity become the same MNIST-style 28x28 digit."""

import numpy as np
import pytest
from PIL import Image

from alexnet_mnist.digits import NoInkError, center, mnist_digit
from alexnet_mnist.images import read_image


def stroke_digit() -> np.ndarray:
    """(28, 28) uint8 'digit' as MNIST has them: white strokes on black, 20 pixels tall, centred by mass."""
    canvas = np.zeros((80, 80))
    canvas[8:72, 34:46] = 1.0  # a thick vertical bar
    canvas[8:20, 20:60] = 1.0  # and a top bar: a 'T'-like 7
    small = (
        np.asarray(
            Image.fromarray((canvas * 255).astype(np.uint8))
            .crop((20, 8, 60, 72))
            .resize((12, 20), Image.Resampling.LANCZOS),
            dtype=np.float64,
        )
        / 255.0
    )
    return np.round(center(np.clip(small, 0, 1)) * 255).astype(np.uint8)


DIGIT = stroke_digit()


def close(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference on the 0..1 scale, at the best whole-pixel shift of up to one pixel: the
    centring moves by a whole pixel, so a centre of mass near a half pixel may land either way."""
    a, b = a.astype(float), b.astype(float)
    return min(
        float(np.abs(np.roll(a, (dr, dc), axis=(0, 1)) - b).mean() / 255.0) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
    )


def test_an_mnist_digit_comes_back_unchanged():
    assert np.array_equal(mnist_digit(Image.fromarray(DIGIT)), DIGIT)


@pytest.mark.parametrize(
    "kind",
    ["dark-on-light", "enlarged", "off-centre", "rgb-noisy", "alpha", "alpha-white", "palette", "16-bit", "one-bit"],
)
def test_every_kind_of_image_gives_the_mnist_digit(kind):
    rng = np.random.default_rng(0)
    if kind == "dark-on-light":
        image = Image.fromarray(255 - DIGIT)
    elif kind == "enlarged":
        image = Image.fromarray(255 - DIGIT).resize((200, 200), Image.Resampling.BICUBIC)
    elif kind == "off-centre":
        canvas = np.zeros((50, 90), np.uint8)
        canvas[20:48, 3:31] = DIGIT
        image = Image.fromarray(canvas)
    elif kind == "rgb-noisy":
        ink = DIGIT[..., None] / 255.0
        background = np.array([230.0, 220.0, 180.0]) + rng.normal(0, 8, (28, 28, 3))
        image = Image.fromarray(
            np.clip(background * (1 - ink) + np.array([20, 40, 120]) * ink, 0, 255).astype(np.uint8), "RGB"
        )
    elif kind in ("alpha", "alpha-white"):  # strokes black or white, background transparent
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = 255 if kind == "alpha-white" else 0
        rgba[..., 3] = DIGIT
        image = Image.fromarray(rgba, "RGBA")
    elif kind == "palette":
        image = Image.fromarray(255 - DIGIT).convert("P")
    elif kind == "16-bit":
        image = Image.fromarray(DIGIT.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:  # 1-bit: thresholding loses the anti-aliased edge
        image = Image.fromarray(DIGIT > 127).convert("1")
    # resampling twice (enlarging, then scaling to 20 pixels) blurs the edges a little
    assert close(mnist_digit(image), DIGIT) < (0.03 if kind in ("enlarged", "one-bit") else 0.005), kind


@pytest.mark.parametrize(
    "suffix, options",
    [
        (".png", {}),
        (".jpg", {"quality": 95}),
        (".bmp", {}),
        (".gif", {}),
        (".webp", {"lossless": True}),
        (".tif", {}),
    ],
)
def test_every_file_format_reads(tmp_path, suffix, options):
    path = tmp_path / f"digit{suffix}"
    Image.fromarray(255 - DIGIT).resize((100, 100), Image.Resampling.BICUBIC).save(path, **options)
    assert close(mnist_digit(read_image(path)), DIGIT) < 0.03


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (40, 30), 255),
        Image.new("RGB", (40, 30), (10, 200, 30)),
        Image.new("RGBA", (40, 30), (0, 0, 0, 0)),
    ],
    ids=["white", "green", "transparent"],
)
def test_an_image_without_ink_is_an_error(image):
    with pytest.raises(NoInkError, match="no digit found"):
        mnist_digit(image)


def test_the_centre_of_mass_lands_where_mnist_has_it():
    digit = mnist_digit(Image.fromarray(np.pad(np.full((30, 10), 255, np.uint8), ((5, 60), (70, 3)))))
    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    assert abs((rows * digit).sum() / mass - 14) <= 0.5 and abs((cols * digit).sum() / mass - 14) <= 0.5
    nonzero_rows = np.nonzero(digit.any(axis=1))[0]
    assert 20 <= len(nonzero_rows) <= 21  # the longer side scaled to 20 pixels (its anti-aliased edge may add one)
