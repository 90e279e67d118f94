"""Benchmark images: real photos from scikit-image's wheel, re-encoded as JPEG at fixed sizes.

``small`` photos are about 224-256 px on the shorter side (what a client that resizes first would
send); ``large`` ones are multi-megapixel JPEGs made by tiling and upscaling the same real photos,
as a phone camera would upload them. Everything is made in memory and is deterministic.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

from PIL import Image

PHOTO_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")


def photo_dir() -> Path:
    """scikit-image's bundled photos, found without importing scikit-image (so a ``--no-deps``
    install of its wheel is enough, e.g. on a GPU box); ``JEPA_BENCH_PHOTO_DIR`` overrides."""
    override = os.environ.get("JEPA_BENCH_PHOTO_DIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "benchmark photos not found: install scikit-image (pip install --no-deps scikit-image is "
            "enough) or set JEPA_BENCH_PHOTO_DIR to a folder holding " + ", ".join(PHOTO_NAMES)
        )
    return Path(spec.origin).parent / "data"


def load_photos(names: tuple[str, ...] = PHOTO_NAMES) -> list[Image.Image]:
    """The real RGB photos, loaded into memory."""
    out = []
    for name in names:
        with Image.open(photo_dir() / name) as im:
            out.append(im.convert("RGB"))
    return out


def to_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def resize_to_pixels(image: Image.Image, megapixels: float) -> Image.Image:
    """Scale ``image`` (keeping its aspect ratio) to about ``megapixels`` million pixels."""
    w, h = image.size
    scale = (megapixels * 1e6 / (w * h)) ** 0.5
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


def tiled_photo(photos: list[Image.Image], index: int, megapixels: float) -> Image.Image:
    """A 4:3 photo of about ``megapixels`` MP: a 2x2 mosaic of real photos, upscaled.

    Tiling keeps real photographic texture at every scale, so JPEG sizes and decode times are
    those of real photos rather than of a smooth upscaled blur.
    """
    tile_w, tile_h = 800, 600
    canvas = Image.new("RGB", (2 * tile_w, 2 * tile_h))
    for k in range(4):
        photo = photos[(index + k) % len(photos)].resize((tile_w, tile_h), Image.Resampling.BICUBIC)
        canvas.paste(photo, ((k % 2) * tile_w, (k // 2) * tile_h))
    return resize_to_pixels(canvas, megapixels)


def small_jpegs(count: int = 6, short_side: int = 240) -> list[bytes]:
    """``count`` real photos as JPEGs with the shorter side at ``short_side`` px (~0.06-0.1 MP)."""
    photos = load_photos()
    out = []
    for i in range(count):
        im = photos[i % len(photos)]
        w, h = im.size
        s = short_side / min(w, h)
        out.append(to_jpeg(im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)))
    return out


def jpegs_at(megapixels: float, count: int = 3) -> list[bytes]:
    """``count`` real-photo JPEGs of about ``megapixels`` MP each."""
    photos = load_photos()
    return [to_jpeg(tiled_photo(photos, i, megapixels)) for i in range(count)]
