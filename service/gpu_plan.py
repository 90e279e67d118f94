"""What the GPU decoder will do with one image, decided from its header alone (no torch here).

The GPU path (``service/gpu_decode.py``) decodes baseline RGB/greyscale JPEGs with nvJPEG and
resizes them on the device; everything else keeps the CPU path, one image at a time, with the
reason counted. The decisions and the geometry are plain functions so they are tested on any
host, against Pillow's own results (tests/service/test_gpu_plan.py):

- :func:`plan_image`: GPU or not, and why not (format, colour mode, progressive scan,
  an interpolation the device resize does not have);
- :func:`orientation_steps`: EXIF orientation as transpose-then-flips, the dihedral moves
  ``ImageOps.exif_transpose`` makes, in a form both numpy and torch apply;
- :func:`resize_geometry`: the resized size and crop box of ``jepa.preprocess.resize_and_crop``;
- :func:`wants_gpu_decode`: what ``--gpu-decode`` means for the backend that was loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from jepa.config import Preprocess

# Pillow interpolation name -> torch.nn.functional.interpolate mode (antialiased where it blurs).
DEVICE_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest-exact"}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Steps:
    """Undo an EXIF orientation on ``[..., H, W]`` pixels: swap H and W first, then flip each axis."""

    transpose: bool = False
    flip_h: bool = False  # flip rows (upside down)
    flip_w: bool = False  # flip columns (mirror)


# EXIF orientation (1..8) -> the moves that turn the stored pixels upright, as exif_transpose does
_STEPS = {
    1: Steps(),
    2: Steps(flip_w=True),
    3: Steps(flip_h=True, flip_w=True),
    4: Steps(flip_h=True),
    5: Steps(transpose=True),
    6: Steps(transpose=True, flip_w=True),
    7: Steps(transpose=True, flip_h=True, flip_w=True),
    8: Steps(transpose=True, flip_h=True),
}


def orientation_steps(orientation: int) -> Steps:
    """Unknown values are left as they are, as ``ImageOps.exif_transpose`` leaves them."""
    return _STEPS.get(orientation, Steps())


@dataclass(frozen=True)
class Geometry:
    """Resize the upright image to ``size`` (w, h), then crop ``box`` (left, top, right, bottom)."""

    size: tuple[int, int]
    box: tuple[int, int, int, int]


def resize_geometry(width: int, height: int, config: Preprocess, image_size: int) -> Geometry:
    """``jepa.preprocess.resize_and_crop``'s arithmetic: sizes and offsets rounded down."""
    if config.resize == "squash":
        return Geometry((image_size, image_size), (0, 0, image_size, image_size))
    short = config.resize_size or image_size
    if short < image_size:
        raise ValueError(f"resize_size {short} is smaller than the crop {image_size}")
    new_w, new_h = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    return Geometry((new_w, new_h), (left, top, left + image_size, top + image_size))


@dataclass(frozen=True)
class Plan:
    """Decode on the GPU: the stored size, the orientation moves, then resize and crop."""

    stored: tuple[int, int]  # (w, h) as the JPEG stores it
    steps: Steps
    geometry: Geometry
    mode: str  # torch interpolate mode


def plan_image(image: Image.Image, config: Preprocess, image_size: int) -> Plan | str:
    """A :class:`Plan` for an opened (header-only) image, or the reason it stays on the CPU."""
    if image.format not in ("JPEG", "MPO"):
        return "not_jpeg"
    if image.mode not in ("RGB", "L"):
        return "colour_mode"  # CMYK / YCCK: nvJPEG's colour conversion differs from Pillow's
    if image.info.get("progressive") or image.info.get("progression"):
        return "progressive"
    mode = DEVICE_INTERPOLATION.get(config.interpolation)
    if mode is None:
        return "interpolation"
    steps = orientation_steps(image.getexif().get(_EXIF_ORIENTATION, 1))
    width, height = image.size
    upright = (height, width) if steps.transpose else (width, height)
    return Plan(image.size, steps, resize_geometry(*upright, config, image_size), mode)


def wants_gpu_decode(setting: str, backend: str, device: str) -> bool:
    """``--gpu-decode`` for the loaded backend: auto = torch on CUDA (nvJPEG is then tried, and
    its absence only logged); on = the same, but anything else is a start-up error."""
    fits = backend == "torch" and device.startswith("cuda")
    if setting == "on" and not fits:
        raise ValueError(f"--gpu-decode on needs the torch backend on cuda, not {backend} on {device}")
    return setting != "off" and fits
