"""Images given to `alexnet-mnist predict` or `serve`: folders expanded to their images, each image read with Pillow.

Reading only: nothing is ever written beside the images. Each failure is a PipelineError naming
the file, so the caller reports it on one line and goes on with the other files.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PipelineError


class TooLargeError(PipelineError):
    """An image that declares more pixels than may be decoded safely (a decompression bomb, or just too large)."""


def image_suffixes() -> set[str]:
    """File name endings Pillow can open ('.png', '.jpg', ...), lower case."""
    return {suffix for suffix, name in Image.registered_extensions().items() if name in Image.OPEN}


def expand(paths: list[Path]) -> list[Path | PipelineError]:
    """Each path in order: a file as it is, a folder as its image files (sorted by name; not its
    subfolders, hidden files, or files whose ending is no image format's). A path that does not
    exist, or a folder without images, becomes the PipelineError to report in its place."""
    suffixes = image_suffixes()
    found: list[Path | PipelineError] = []
    for path in paths:
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
            )
            found.extend(
                files
                or [PipelineError(f"{path}: folder holds no image files (.png, .jpg, .bmp, .gif, .webp, .tif, ...)")]
            )
        elif path.exists():
            found.append(path)
        else:
            found.append(PipelineError(f"{path}: not found; give an image file or a folder of images"))
    return found


def read_image(source: Path | BinaryIO, name: str | Path | None = None, max_pixels: int | None = None) -> Image.Image:
    """The image in `source` (a file, or a binary stream such as an HTTP body in memory), fully decoded
    (its first frame), turned upright as its EXIF orientation says. `name` (default: the path) names
    it in errors.

    Raises PipelineError naming it when it is no image Pillow reads, is truncated, or declares more
    pixels than `max_pixels` (default: Pillow's decompression-bomb limit, Image.MAX_IMAGE_PIXELS;
    above it Pillow only warns up to twice the limit, here both are errors). The pixel count is
    checked from the header, before anything is decoded.
    """
    label = source if name is None else name
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if limit is not None and width * height > limit:
                    raise Image.DecompressionBombError(
                        f"{width}x{height} = {width * height} pixels, over the limit of {limit}"
                    )
                image.load()
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLargeError(f"{label}: image too large to read safely ({e}); give a smaller image") from None
    except UnidentifiedImageError:
        raise PipelineError(f"{label}: not an image Pillow can read (PNG, JPEG, BMP, GIF, WebP, TIFF, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupted data; unreadable file
        raise PipelineError(
            f"{label}: cannot be read as an image ({e}); the file may be truncated or damaged"
        ) from None
