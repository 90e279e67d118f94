"""JPEG decode in one call with the GIL released (simplejpeg), for the decode threads.

Why: Pillow's ``ImageFile.load`` feeds libjpeg the file in 64 KiB pieces, one C call each, and
every call gives the GIL up and then has to take it back. Beside a thread that runs Python (the
event loop, the inference thread) taking it back waits for the switch interval, 5 ms, so a
3 MP photo's decode paid about ten such waits: one decode thread beside one pure-Python busy
thread kept only about a third of its solo rate (``python -m bench.gil_bench``, docs/BENCHMARKS.md).
simplejpeg (libjpeg-turbo, a pip wheel) decodes the whole buffer in one ``nogil`` call, and into
RGBX, which Pillow wraps without a copy, so what is left is one wait per Pillow step after it
instead of one per 64 KiB: the resize (two passes) and the transpose of a rotated photo. The
crop, the drop of the pad byte and the copy-out hold the GIL throughout (:func:`to_rgb_array`).

The result is **bit-for-bit** what ``Image.open(...).load()`` + :func:`jepa.preprocess.prepare_image`
give: simplejpeg decodes with the same libjpeg-turbo settings Pillow uses (slow integer IDCT,
fancy upsampling) at the DCT scale Pillow's ``draft`` chose, EXIF orientation is applied with the
same transposes ``ImageOps.exif_transpose`` uses, and the resize runs on the same Pillow code
(tests/service/test_jpeg_nogil.py compares every class of JPEG). Whatever this path does not
take (CMYK, a file simplejpeg refuses, no simplejpeg installed) goes Pillow's way, as before.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import numpy as np
from PIL import Image

from jepa.config import Preprocess
from jepa.preprocess import prepare_image, resize_for_crop

# EXIF orientation -> the transpose that undoes it (ImageOps.exif_transpose's table).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
# Pillow mode of the opened JPEG -> (simplejpeg colorspace, the Pillow mode that maps its pixels).
_COLOURS = {"RGB": ("RGBX", "RGBX"), "L": ("GRAY", "L")}


@cache
def available() -> bool:
    """Whether simplejpeg is installed (an optional speed-up: without it Pillow decodes)."""
    return importlib.util.find_spec("simplejpeg") is not None


def prepare(image: Image.Image, data: bytes, preprocess: Preprocess, image_size: int) -> np.ndarray:
    """The opened (header-only, maybe drafted) ``image`` of ``data`` -> ``uint8 [S, S, 3]``.

    JPEGs go through :func:`decode_jpeg`; every other image, and any JPEG it declines, through
    Pillow's own load and :func:`jepa.preprocess.prepare_image`, as before.
    """
    pixels = decode_jpeg(image, data)
    if pixels is None:
        image.load()
        return prepare_image(image, preprocess, image_size)
    resized, crop = resize_for_crop(_orient(pixels, image), preprocess, image_size)
    return to_rgb_array(resized, crop)


def to_rgb_array(image: Image.Image, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """An RGBX or L image, cut to ``crop``, as ``uint8 [S, S, 3]``: bit for bit what Pillow's
    crop, ``convert("RGB")`` (RGBX drops the pad byte; L repeats its level) and ``np.asarray``
    give, without giving the GIL up. Why: every C call that gives it up must take it back, a wait
    of up to the switch interval beside a thread running Python, and Pillow's crop and convert
    and numpy's strided copy all give it up (for 0.2 ms of work each). ``tobytes`` packs the
    pixels holding the GIL, and the crop is a join of row slices (0.1 ms for 224 rows).
    """
    width, height = image.size
    raw = image.tobytes("raw", "L" if image.mode == "L" else "RGB")
    channels = 1 if image.mode == "L" else 3
    left, top, right, bottom = crop or (0, 0, width, height)
    row = width * channels
    rows = bytearray().join(raw[y * row + left * channels : y * row + right * channels] for y in range(top, bottom))
    pixels = np.frombuffer(rows, np.uint8).reshape(bottom - top, right - left, channels)  # writable: a bytearray
    return np.repeat(pixels, 3, axis=2) if channels == 1 else pixels


def decode_jpeg(image: Image.Image, data: bytes) -> Image.Image | None:
    """Decode ``data`` in one GIL-free call at the size and DCT scale ``image`` (its opened
    header, after any ``draft``) says; None when this path does not apply, so Pillow decodes.

    A file simplejpeg refuses (it is strict about warnings Pillow ignores) also returns None:
    Pillow then decodes it, or raises the error it always raised.
    """
    if not available() or image.format not in ("JPEG", "MPO") or image.mode not in _COLOURS:
        return None
    import simplejpeg

    colorspace, mode = _COLOURS[image.mode]
    scale = image.decoderconfig[0] if image.decoderconfig else 1  # set by draft()
    width, height = image.size
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace=colorspace, min_width=width, min_height=height, min_factor=scale
        )
    except ValueError:
        return None
    if pixels.shape[:2] != (height, width):  # a scale Pillow would not have picked
        return None
    return Image.frombuffer(mode, (width, height), pixels, "raw", mode, 0, 1)  # no copy


def _orient(pixels: Image.Image, opened: Image.Image) -> Image.Image:
    """Undo the EXIF orientation of ``opened`` on ``pixels`` (ImageOps.exif_transpose's result);
    a damaged EXIF block leaves the pixels as stored, as :func:`jepa.preprocess.upright` does."""
    try:
        orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # damaged EXIF only: the pixels decoded fine
        return pixels
    method = _ORIENTATION.get(orientation)
    if method is None:
        return pixels
    return pixels.transpose(method)
