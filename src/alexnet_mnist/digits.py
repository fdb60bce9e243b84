"""A person's digit image (any Pillow image) made into a 28x28 MNIST digit, prepared as MNIST's were.

MNIST's digits are white on black, cropped to the ink, scaled so that the longer side is 20
pixels (anti-aliased), and placed in a 28x28 frame with their centre of mass at its centre
(LeCun et al., the MNIST page). `mnist_digit` does the same to any image: grayscale, ink made
bright (judged from the border, which is background), background and its noise removed, then
crop, scale and centre. Pure functions of arrays and images; nothing here reads a file.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import PipelineError
from .idx import MNIST_SIDE

BOX = 20  # pixels: the longer side of the digit inside the frame
NOISE_SIGMAS = 4.0  # background noise removed: up to this many standard deviations of the border's noise
CROP_LEVEL = 0.05  # ink above this fraction of the strongest ink counts for the crop
MIN_CONTRAST = 0.05  # ink must stand out from the background by this much (0..1 scale) above its noise


class NoInkError(PipelineError):
    """The image has no digit: blank, one colour, or ink as faint as its background noise."""


def grayscale(image: Image.Image) -> np.ndarray:
    """(H, W) float64 luminance in 0..1 of an image in any mode: L, RGB, P, 1, 16-bit, with or without alpha.

    Transparent pixels become a background that contrasts with the visible ones: a digit drawn
    on a transparent background keeps its own colour, dark or light.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            return gray / 65535.0
        top = 1.0 if gray.max(initial=0.0) <= 1.0 else 255.0 if gray.max() <= 255.0 else 65535.0
        return np.clip(gray / top, 0.0, 1.0)  # 32-bit modes: the range their values fit
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3]
        if alpha.min() < 1.0:
            gray = luminance(rgba[..., :3])
            if alpha.max() == 0.0:
                return np.zeros_like(gray)  # fully transparent: nothing drawn
            # a background opposite to the visible pixels' mean luminance, so that they stay visible
            background = 1.0 if np.average(gray, weights=alpha) < 0.5 else 0.0
            return gray * alpha + background * (1.0 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W): ITU-R 601 luma, the weights of Pillow's convert('L')."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def ink(gray: np.ndarray) -> np.ndarray:
    """(H, W) 0..1 luminance -> (H, W) ink in 0..1, bright on 0, whatever the image's polarity.

    The border (outermost rows and columns) is taken as background: its median is the
    background level, and the ink is the side of the range farther from it (dark ink on paper is
    inverted). Deviations up to NOISE_SIGMAS robust standard deviations of the border become 0;
    the strongest ink becomes 1. Raises NoInkError when nothing stands out.
    """
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    background = float(np.median(border))
    dark_ink = background - gray.min() > gray.max() - background  # dark digit on a light background
    signal = background - gray if dark_ink else gray - background
    noise = 1.4826 * float(np.median(np.abs(border - background)))  # robust standard deviation
    floor = NOISE_SIGMAS * noise
    peak = float(signal.max())
    if peak - floor < MIN_CONTRAST:
        raise NoInkError(
            f"no digit found: the image is blank or one colour (contrast {peak:.3f} "
            f"against a background noise of {floor:.3f} on a 0..1 scale); give an image of one "
            f"digit, darker or lighter than its background"
        )
    return np.clip((signal - floor) / (peak - floor), 0.0, 1.0)


def crop(ink_: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding every pixel with more than CROP_LEVEL of the strongest ink."""
    rows, cols = np.nonzero(ink_ > CROP_LEVEL * ink_.max())
    return ink_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def scale(ink_: np.ndarray, box: int = BOX) -> np.ndarray:
    """Resize so that the longer side is `box` pixels, keeping the aspect ratio, with anti-aliasing
    (Lanczos, whose support widens with the reduction; its overshoot is clipped back to 0..1)."""
    h, w = ink_.shape
    factor = box / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))  # Pillow's (width, height)
    resized = Image.fromarray(ink_.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def center(ink_: np.ndarray, side: int = MNIST_SIDE) -> np.ndarray:
    """Place in a side x side frame with the centre of mass at the frame's centre (whole-pixel
    shift, as MNIST's); ink shifted past the frame's edge is cut off."""
    rows, cols = np.indices(ink_.shape)
    mass = ink_.sum()
    com = (rows * ink_).sum() / mass, (cols * ink_).sum() / mass  # in pixel indices
    # to index side/2 (14 of 0..27), where MNIST's digits have it: 14.0 +- 0.3 on average over the training set
    top, left = (int(np.floor(side / 2 - c + 0.5)) for c in com)
    frame = np.zeros((side, side))
    h, w = ink_.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, side), min(left + w, side)
    frame[r0:r1, c0:c1] = ink_[r0 - top : r1 - top, c0 - left : c1 - left]
    return frame


def mnist_digit(image: Image.Image) -> np.ndarray:
    """(28, 28) uint8 digit, white on black as in MNIST's files, from a Pillow image of one digit."""
    digit = center(scale(crop(ink(grayscale(image)))))
    return np.round(digit * 255.0).astype(np.uint8)
