"""Real photos for checking a model's outputs, prepared with its own preprocessing (torch-free).

Export verifies every graph on them (export/verify.py), and the service's engine trial
(service/engine_trial.py) checks OpenVINO on the same ones, so both compare like with like (for a
video model, as the same panning clips: :func:`panning_clips`):
scikit-image's bundled photographs when it is installed (no download), else a directory the
caller names, else smooth synthetic images, recorded as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jepa.config import ModelConfig
from jepa.preprocess import normalize, prepare_image
from jepa.video_preprocess import normalize_clips

PHOTO_COUNT = 7  # export checks batches of 1 and 7
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# scikit-image's bundled RGB photographs (no download); greyscale/test patterns left out.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
                  "hubble_deep_field.jpg", "ihc.png", "motorcycle_right.png")  # fmt: skip


@dataclass(frozen=True)
class Photos:
    """Real images for verification, already resized: ``pixels`` is ``uint8 [B, S, S, 3]``."""

    pixels: np.ndarray
    source: str
    names: tuple[str, ...]


def load_photos(config: ModelConfig, images_dir: Path | None = None, count: int = PHOTO_COUNT) -> Photos:
    """``count`` photos prepared with the model's own preprocessing.

    From ``images_dir`` when given, else scikit-image's bundled photos when it is installed, else
    smooth synthetic images (recorded as such, so export.json says which were used).
    """
    from PIL import Image

    if images_dir is not None:
        paths = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
        source = f"dir:{images_dir}"
    else:
        paths, source = _skimage_photos(), "scikit-image"
    if not paths:
        return Photos(_synthetic(config.image_size, count), "synthetic", ())
    paths = [paths[i % len(paths)] for i in range(count)]
    pixels = []
    for path in paths:
        with Image.open(path) as im:
            pixels.append(prepare_image(im, config.preprocess, config.image_size))
    return Photos(np.stack(pixels), source, tuple(p.name for p in paths))


def _skimage_photos() -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        return []
    root = Path(skimage.data.__file__).parent
    return [root / name for name in SKIMAGE_PHOTOS if (root / name).is_file()]


def _synthetic(size: int, count: int) -> np.ndarray:
    """Smooth colour gradients plus noise: image-like statistics without any image files."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = []
    for _ in range(count):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        img = np.stack([a[i] * xx + b[i] * yy + c[i] for i in range(3)], axis=-1)
        img = (img - img.min()) / (np.ptp(img) + 1e-6) * 200 + rng.normal(0, 20, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def panning_clips(pixels: np.ndarray, frames: int, step: int = 3) -> np.ndarray:
    """Photos ``uint8 [B, S, S, 3]`` -> clips ``[B, T, S, S, 3]`` panning ``step`` pixels a frame:
    real image content with motion, for video models (frame t is the photo rolled by ``t * step``)."""
    return np.stack([np.roll(pixels, t * step, axis=2) for t in range(frames)], axis=1)


def model_inputs(photos: Photos, config: ModelConfig) -> np.ndarray:
    """The photos as the model's normalised input: images ``[B, 3, S, S]``, or for a video model
    panning clips ``[B, T, 3, S, S]`` of ``frames_per_clip`` frames."""
    if config.temporal is None:
        return normalize(photos.pixels, config.preprocess)
    return normalize_clips(panning_clips(photos.pixels, config.temporal.frames_per_clip), config.preprocess)
