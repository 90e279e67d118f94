"""Image bytes -> ``uint8 [S, S, 3]``, run off the event loop (:mod:`service.decode_slots`).

The header is read first (``Image.open`` parses only that), so a decompression bomb or an image
over ``max_pixels`` is refused before any pixel is decoded. Large JPEGs are decoded at reduced
DCT scale (Pillow ``draft``) but never below ``jpeg_draft_margin`` times the size the resize
needs, the same trade as Pillow's ``reducing_gap``: the resize's own low-pass filter dominates,
and the prepared pixels move by a few levels at most (measured in tests/service/test_decode.py).
Everything after that is :func:`jepa.preprocess.prepare_image`, the same code ``embed`` uses.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from jepa.config import Preprocess
from service import jpeg_nogil
from service.errors import ApiError, InvalidImage, PayloadTooLarge

log = logging.getLogger("service")

# Formats Pillow may parse here. Anything else (EPS and PDF, which hand the bytes to Ghostscript;
# ICNS, PSD, ...) is refused: a smaller attack surface for bytes from strangers. The JPEG
# opener also returns the multi-picture JPEGs (format "MPO") many phones write. AVIF is Pillow's
# own plugin (Pillow >= 11.3); HEIC/HEIF comes from pillow-heif, registered by register_plugins.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
REASON_CHARS = 200  # of a decoder's own error message, quoted in the 400


@dataclass(frozen=True)
class DecodeOptions:
    preprocess: Preprocess
    image_size: int
    max_pixels: int
    jpeg_draft: bool = True
    jpeg_draft_margin: float = 4.0


@functools.cache
def register_plugins() -> None:
    """Register pillow-heif's HEIC/HEIF opener with Pillow, once per process (decode worker
    processes call this too). Not at import time: importing a module must not change Pillow.

    Pillow also reports recoverable damage in a stranger's file ("Corrupt EXIF data", "Truncated
    File Read") as ``UserWarning``s printed to stderr with a source line, once per message: noise
    in a server's log about the client's file, and the outcome is in the response anyway. Those
    are silenced here; ``DecompressionBombWarning`` (a ``RuntimeWarning``) is not.
    """
    from pillow_heif import register_heif_opener

    register_heif_opener()
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def draft_target(options: DecodeOptions) -> int:
    """Shortest side a drafted JPEG must keep: ``jpeg_draft_margin`` times what the resize produces."""
    short = options.image_size if options.preprocess.resize == "squash" else options.preprocess.resize_size
    return math.ceil(options.jpeg_draft_margin * (short or options.image_size))


def decode_image(data: bytes, index: int, options: DecodeOptions) -> np.ndarray:
    """Decode one image and prepare it for the model; raises :class:`ApiError` naming ``index``.

    Every failure while opening, reading or preparing the bytes is the client's: a 400
    ``invalid_image`` (413 for a decompression bomb), never a 500. Pillow's parsers raise many
    types on hostile input (``OSError``, ``ValueError``, ``SyntaxError``, ``struct.error``,
    ``EOFError``, ``IndexError``, ``ZeroDivisionError``...), so anything but our own errors is
    caught here, and logged at DEBUG without a traceback (a stranger's bad file is not our bug).
    """
    if not data:
        raise InvalidImage(f"image {index} is empty", index=index)
    register_plugins()
    try:
        return _decode(data, index, options)
    except ApiError:
        raise
    except Image.DecompressionBombError as e:
        raise PayloadTooLarge(f"image {index} is too large to decode: {e}", index=index) from e
    except UnidentifiedImageError as e:
        supported = ", ".join(FORMATS)
        raise InvalidImage(f"image {index} is not an image in a supported format ({supported})", index=index) from e
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"[:REASON_CHARS]
        log.debug("image %d failed to decode: %s", index, reason)
        raise InvalidImage(f"image {index} is truncated or corrupt ({reason})", index=index) from e


def _decode(data: bytes, index: int, options: DecodeOptions) -> np.ndarray:
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:  # reads the header only
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
        # JPEGs decode in one GIL-free call when simplejpeg is installed (service/jpeg_nogil.py)
        return jpeg_nogil.prepare(image, data, options.preprocess, options.image_size)
