"""Image preprocessing as a model's config describes it, shared by every stage.

Split in two so the service can run the slow part in a thread pool and the fast part per batch:
``prepare_image`` (PIL, per image: orientation, colour mode, resize, crop -> ``uint8 [S, S, 3]``)
and ``normalize`` (numpy, per batch: ``uint8 [B, S, S, 3] -> float32 [B, 3, S, S]``).
Only numpy and Pillow are needed, so the torch-free ONNX Runtime service can use this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from jepa.config import Preprocess

if TYPE_CHECKING:
    import torch

RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB.

    Transparent images (an alpha band, or a ``transparency`` key as P, L and RGB PNGs carry) are
    composited on white, as Hugging Face's processors do; 16/32-bit greyscale is scaled to 8 bits
    rather than clipped, which is what a plain ``convert("RGB")`` would do to a 16-bit PNG.
    """
    if image.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(image)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scaled = values  # float images are taken to be on the 0..255 scale already
    else:
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = values * (255.0 / peak)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


# Up to this aspect ratio (and whenever the resize shrinks) the whole image is resized, then
# cropped: the pixels Hugging Face's processors produce, bit for bit. Past it, see _bounded_resize.
MAX_ASPECT_WHOLE = 4
REDUCING_GAP = 3.0  # Pillow's reducing_gap for those elongated images (exact resize within 3x)


def resize_and_crop(image: Image.Image, config: Preprocess, image_size: int) -> Image.Image:
    """Resize as ``config`` says and return an ``image_size`` x ``image_size`` image.

    ``shorter_crop`` sizes and crop offsets are rounded down, as Hugging Face's processors do.
    """
    resized, crop = resize_for_crop(image, config, image_size)
    return resized if crop is None else resized.crop(crop)


def resize_for_crop(
    image: Image.Image, config: Preprocess, image_size: int
) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """The resize of :func:`resize_and_crop` and the crop box still to cut from it (None: the
    resized image is the result). Split so that a caller holding the pixels as an array can cut
    the box there (:mod:`service.jpeg_nogil`: no Pillow call, so no GIL hand-over, after the resize).
    """
    resample = RESAMPLING[config.interpolation]
    if config.resize == "squash":
        if image.size == (image_size, image_size):
            return image, None
        return _bounded_resize(image, (image_size, image_size), resample), None
    short = config.resize_size or image_size
    if short < image_size:
        raise ValueError(f"resize_size {short} is smaller than the crop {image_size}")
    w, h = image.size
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    crop = (left, top, left + image_size, top + image_size)
    if new_w * new_h > max(w * h, MAX_ASPECT_WHOLE * short * short):
        # Resize only what the crop keeps: the crop mapped back to source coordinates is a
        # ``box`` for Pillow (the same sampling grid and filter support). Resizing a 1 x 100,000
        # PNG whole to a 32 px shorter side would first make a 32 x 3,200,000 image (300 MB).
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + image_size) * sx, (top + image_size) * sy)
        return _bounded_resize(image, (image_size, image_size), resample, box), None
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample=resample)
    return image, crop if (new_w, new_h) != (image_size, image_size) else None


def _bounded_resize(
    image: Image.Image,
    size: tuple[int, int],
    resample: Image.Resampling,
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """``image.resize`` whose work stays O(source + target pixels) whatever the aspect ratio.

    Pillow resizes in two passes, horizontal first, so it holds ``size[0]`` x (source rows) pixels
    in between: 32 x 100,000 for a 1 x 100,000 image squashed to 32 x 32. When that exceeds the
    source and the target, the image is first reduced by whole factors (Pillow's
    ``reducing_gap``, a box filter down to ``REDUCING_GAP`` x the target). Normal images never take
    this path, so their pixels stay exactly those of a plain resize. (The box-path resize's
    fixed-point weights can also round a level apart from the whole-image resize: another reason
    to keep it to elongated images.)
    """
    rows = image.height if box is None else math.ceil(box[3]) - math.floor(box[1])
    between = size[0] * rows
    gap = None if between <= max(image.width * image.height, MAX_ASPECT_WHOLE * size[0] * size[1]) else REDUCING_GAP
    return image.resize(size, resample=resample, box=box, reducing_gap=gap)


def prepare_image(image: Image.Image, config: Preprocess, image_size: int) -> np.ndarray:
    """One PIL image -> ``uint8 [S, S, 3]``: EXIF orientation, RGB, resize, crop."""
    image = resize_and_crop(to_rgb(upright(image)), config, image_size)
    return np.asarray(image, dtype=np.uint8)


def upright(image: Image.Image) -> Image.Image:
    """The image as its EXIF orientation tag says to display it.

    Pillow decodes the pixels of a file whose EXIF block is damaged, but parsing that block can
    raise (``SyntaxError``, ``struct.error``, ``ValueError``...). The pixels are still good: with
    the orientation unreadable they are taken as stored, rather than refusing an image Pillow loads.
    """
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # damaged EXIF only: decoding errors happened in image.load(), before this
        return image


def normalize(batch: np.ndarray, config: Preprocess) -> np.ndarray:
    """``uint8 [B, S, S, 3] -> float32 [B, 3, S, S]``: scale to [0, 1], subtract mean, divide by std."""
    x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= np.asarray(config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    x /= np.asarray(config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return x


def preprocess_batch(images: Sequence[Image.Image], config: Preprocess, image_size: int) -> torch.Tensor:
    """PIL images -> the normalised ``[B, 3, S, S]`` torch tensor."""
    import torch

    if not images:
        raise ValueError("preprocess_batch needs at least one image")
    return torch.from_numpy(normalize(np.stack([prepare_image(im, config, image_size) for im in images]), config))
