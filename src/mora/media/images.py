"""Images: read any PNG/JPEG/WebP/GIF/BMP as an upright RGB PIL image, write PNGs atomically.

Every problem with a user's file becomes an `InputError` naming the argument, the path as given
and the fix; PIL's own errors never escape for bad input.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mora.errors import InputError, bad_input
from mora.limits import MAX_INPUT_PIXELS
from mora.media.files import atomic_path, check_path

logger = logging.getLogger(__name__)

IMAGE_FIX = "pass a PNG, JPEG, WebP, GIF or BMP file"

# PIL signals bad data with all of these (SyntaxError from some decoders, struct.error from broken
# EXIF, IndexError from broken palettes, ...). None of them is a bug of ours for a file we only read.
PIL_BAD_DATA = (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError, struct.error)


def read_image(path: str | os.PathLike, *, argument: str = "image") -> Image.Image:
    """Read any PNG/JPEG/WebP/GIF/BMP image as an upright RGB PIL image.

    Any mode is accepted (RGBA, LA, L, P, P with transparency, I;16, CMYK, ...). Transparency is
    composited over white, EXIF orientation is applied, and for animated files the first frame
    is used. The whole file is decoded here, so truncated files fail here.

    Args:
        path: the image file.
        argument: the argument name used in error messages.

    Raises:
        InputError: the file is missing, empty, not an image, truncated or in an unusable mode.

    Example:
        >>> img = read_image("cat.png")  # doctest: +SKIP
        >>> img.mode
        'RGB'
    """
    p = check_path(path, argument, IMAGE_FIX)
    return open_image(p, path, argument)


def open_image(p: Path, shown: str | os.PathLike, argument: str) -> Image.Image:
    unreadable = bad_input(
        argument, os.fspath(shown), "is not a readable image (truncated or not an image file)", IMAGE_FIX
    )
    try:
        with Image.open(p) as img:  # reads the header only
            check_pixels(img.size, shown, argument)
            img.seek(0)  # first frame of GIF/WebP/APNG animations
            img.load()  # decode everything now so a truncated file fails here, not later
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except InputError:  # ours (too many pixels), not PIL's ValueError
        raise
    except Image.DecompressionBombError as err:
        raise bad_input(
            argument, os.fspath(shown), f"is too large to decode safely ({err})", "pass a smaller image"
        ) from err
    except PermissionError as err:
        raise bad_input(
            argument, os.fspath(shown), "is not readable (permission denied)", "check the file's permissions"
        ) from err
    except PIL_BAD_DATA as err:
        logger.debug("PIL could not read %s: %r", p, err)
        raise unreadable from err


def check_pixels(size: tuple[int, int], shown: str | os.PathLike, argument: str) -> None:
    """Refuse an image or video frame larger than `MAX_INPUT_PIXELS`, from its header's size (nothing decoded).

    Example:
        >>> check_pixels((13000, 13000), "big.png", "image")
        InputError: image: 'big.png' is 13000x13000 (169.0 MP), more than the 40 MP an input may have; ...
    """
    width, height = size
    if width * height > MAX_INPUT_PIXELS:
        raise InputError(f"{os.fspath(shown)!r} is {width}x{height} ({width * height / 1e6:.1f} MP), "
                         f"more than the {MAX_INPUT_PIXELS / 1e6:g} MP an input may have; pass a smaller image "
                         "(the models work at about 1 MP)", param=argument)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency over white.

    White, not black: transparent pixels usually store black RGB, so dropping alpha turns logos and
    stickers into dark blobs; a white page is what the author saw behind them, and what the image
    models (trained on opaque photos) handle best.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale to 8-bit L by scaling, since PIL's convert() clips to 255."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        a = a.astype(np.float64) / 257.0
    elif img.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
    else:  # "I": 32-bit ints; PNG 16-bit greyscale opens as "I" in some Pillow versions
        a = a.astype(np.float64)
        a = a / 257.0 if np.nanmax(a, initial=0.0) > 255 else a
    out = Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8))
    if "transparency" in img.info:
        logger.debug("dropping the transparency key of a %s image", img.mode)
    return out


def write_image(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as PNG, atomically; creates parent directories.

    Args:
        image: any PIL image; modes PNG cannot store (e.g. CMYK) are converted to RGB.
        path: the destination (PNG bytes whatever the suffix).

    Example:
        >>> write_image(Image.new("RGB", (64, 64)), "outputs/first_frame.png")  # doctest: +SKIP
        PosixPath('outputs/first_frame.png')
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"write_image needs a PIL image, got {type(image).__name__}")
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        image = to_rgb(image)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
