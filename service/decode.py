"""Image bytes -> ``uint8 [S, S, 3]``, run in a thread pool so the event loop never decodes.

The header is read first (``Image.open`` parses only that), so a decompression bomb or an image
over ``max_pixels`` is refused before any pixel is decoded. Large JPEGs are decoded at reduced
DCT scale (Pillow ``draft``) but never below ``jpeg_draft_margin`` times the size the resize
needs, the same trade as Pillow's ``reducing_gap``: the resize's own low-pass filter dominates,
and the prepared pixels move by a few levels at most (measured in tests/service/test_decode.py).
Everything after that is :func:`jepa.preprocess.prepare_image`, the same code ``embed`` uses.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from jepa.config import Preprocess
from service import jpeg_nogil
from service.errors import ApiError, InvalidImage, PayloadTooLarge

log = logging.getLogger("service")

# Formats Pillow may parse here. Anything else (EPS and PDF, which hand the bytes to Ghostscript;
# ICNS, PSD, ...) is refused: a smaller attack surface for bytes from strangers. The JPEG
# opener also returns the multi-picture JPEGs (format "MPO") many phones write.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class DecodeOptions:
    preprocess: Preprocess
    image_size: int
    max_pixels: int
    jpeg_draft: bool = True
    jpeg_draft_margin: float = 4.0


def draft_target(options: DecodeOptions) -> int:
    """Shortest side a drafted JPEG must keep: ``jpeg_draft_margin`` times what the resize produces."""
    short = options.image_size if options.preprocess.resize == "squash" else options.preprocess.resize_size
    return math.ceil(options.jpeg_draft_margin * (short or options.image_size))


def decode_image(data: bytes, index: int, options: DecodeOptions) -> np.ndarray:
    """Decode one image and prepare it for the model; raises :class:`ApiError` naming ``index``."""
    if not data:
        raise InvalidImage(f"image {index} is empty", index=index)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as e:
        raise PayloadTooLarge(f"image {index} is too large to decode: {e}", index=index) from e
    except UnidentifiedImageError as e:
        supported = ", ".join(FORMATS)
        raise InvalidImage(f"image {index} is not an image in a supported format ({supported})", index=index) from e
    with image:
        width, height = image.size
        if width * height > options.max_pixels:
            raise PayloadTooLarge(
                f"image {index} is {width}x{height} = {width * height} pixels, over the limit of {options.max_pixels}",
                index=index,
            )
        if options.jpeg_draft and image.format in ("JPEG", "MPO"):
            target = draft_target(options)
            if min(width, height) >= 2 * target:
                image.draft(None, (target, target))
        try:  # JPEGs decode in one GIL-free call when simplejpeg is installed, else as before
            return jpeg_nogil.prepare(image, data, options.preprocess, options.image_size)
        except ApiError:
            raise
        except Exception as e:  # Pillow raises many types on hostile input (OSError, SyntaxError, struct.error...)
            log.debug("image %d failed to decode", index, exc_info=e)
            raise InvalidImage(f"image {index} is truncated or corrupt ({type(e).__name__}: {e})", index=index) from e


class Decoder(Protocol):
    """Decodes off the event loop in another process (:class:`service.decode_procs.DecodeProcesses`)."""

    async def decode(self, data: bytes, index: int, options: DecodeOptions) -> np.ndarray: ...


async def decode_all(
    blobs: Sequence[bytes], options: DecodeOptions, pool: Executor | Decoder, timeout_s: float
) -> list[np.ndarray]:
    """Decode every image in ``pool`` (threads, or a :class:`Decoder`); the first failing index
    (lowest) fails the whole request."""
    loop = asyncio.get_running_loop()

    def start(i: int, blob: bytes) -> Awaitable[np.ndarray]:
        if isinstance(pool, Executor):
            return loop.run_in_executor(pool, decode_image, blob, i, options)
        return pool.decode(blob, i, options)

    async def one(i: int, blob: bytes) -> np.ndarray:
        try:
            return await asyncio.wait_for(start(i, blob), timeout_s)
        except asyncio.TimeoutError as e:
            raise InvalidImage(f"image {i} took longer than {timeout_s:g} s to decode", index=i) from e

    results = await asyncio.gather(*(one(i, b) for i, b in enumerate(blobs)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
