"""The decode function against classes of input, each made by real encoders (image_corpus.py).

- every supported format, every Pillow mode each encoder takes, each encoder's structural options:
  decoded to ``uint8 [S, S, 3]``, equal to what ``embed`` prepares from Pillow's own open;
- truncation at every byte of the first KiB and every 5% after, for every format, and the corrupt
  header classes that once escaped as 500s: a typed 400/413 naming the index, nothing else;
- elongated shapes: decoded, close to the whole-image resize where that is affordable, and with a
  peak memory bounded by the source and target sizes (a fresh process's max RSS).
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from image_corpus import (
    SAVE_FORMATS,
    corrupt_headers,
    elongated,
    elongated_shapes,
    format_samples,
    mode_variants,
    option_variants,
    truncation_points,
)
from PIL import Image, ImageOps

from jepa.config import Preprocess
from jepa.preprocess import RESAMPLING, prepare_image
from service.decode import FORMATS, DecodeOptions, decode_image, register_plugins
from service.errors import InvalidImage, PayloadTooLarge

REPO = Path(__file__).resolve().parents[2]
SIZE = 32  # the shipped model's input size
CROP = DecodeOptions(Preprocess(resize="shorter_crop", resize_size=SIZE), SIZE, 40_000_000, jpeg_draft=False)
SQUASH = DecodeOptions(Preprocess(resize="squash"), SIZE, 40_000_000, jpeg_draft=False)


@pytest.fixture(scope="module")
def photo(photos) -> Image.Image:
    return photos[0]


def pillow_reference(data: bytes, options: DecodeOptions) -> np.ndarray:
    register_plugins()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return prepare_image(image, options.preprocess, options.image_size)


def test_every_format_is_supported_and_sniffed(photo) -> None:
    samples = format_samples(photo)
    assert set(samples) == set(FORMATS)
    for fmt, data in samples.items():
        out = decode_image(data, 0, CROP)
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8, fmt
        np.testing.assert_array_equal(out, pillow_reference(data, CROP), err_msg=fmt)


@pytest.mark.parametrize("options", [CROP, SQUASH], ids=["shorter_crop", "squash"])
def test_every_mode_and_encoder_option_decodes_like_pillow(photo, options: DecodeOptions) -> None:
    cases = list(mode_variants(photo)) + list(option_variants(photo))
    assert len(cases) > 80  # 8 formats x their modes, plus options: the class, not a few examples
    for label, data in cases:
        out = decode_image(data, 0, options)
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8, label
        np.testing.assert_array_equal(out, pillow_reference(data, options), err_msg=label)


def expect_typed(data: bytes, index: int, label: str) -> str:
    """'ok', or the error type; any exception but our typed 400/413 naming ``index`` fails."""
    try:
        out = decode_image(data, index, CROP)
    except (InvalidImage, PayloadTooLarge) as e:
        assert e.index == index and e.message.startswith(f"image {index} "), (label, e.message)
        return e.type
    assert out.shape == (SIZE, SIZE, 3), label
    return "ok"


@pytest.mark.parametrize("fmt", SAVE_FORMATS)
def test_truncation_anywhere_is_a_typed_error_or_an_image(photo, fmt: str) -> None:
    data = format_samples(photo)[fmt]
    points = truncation_points(len(data))
    outcomes = [expect_typed(data[:cut], 5, f"{fmt} cut at {cut}") for cut in points]
    assert len(points) >= min(len(data), 1024)
    assert outcomes.count("invalid_image") > len(points) // 2, fmt  # truncation is noticed, not ignored
    assert outcomes[0] == "invalid_image"  # the empty file


def test_corrupt_headers_are_400_naming_the_index(photo) -> None:
    for label, data in corrupt_headers(photo).items():
        assert expect_typed(data, 2, label) == "invalid_image", label


def whole_resize_then_crop(data: bytes, size: int) -> np.ndarray:
    """The plain shorter-side resize of the whole image, then the centre crop (affordable only
    for mild elongation): what the bounded path must reproduce."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    w, h = rgb.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    resized = rgb.resize(new, RESAMPLING["bicubic"])
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG", "AVIF", "HEIF"])
def test_elongated_shapes_decode_close_to_the_whole_image_resize(photo, fmt: str) -> None:
    options = DecodeOptions(Preprocess(resize="shorter_crop", resize_size=SIZE), SIZE, 40_000_000, jpeg_draft=False)
    for shape in elongated_shapes(2_000):
        data = elongated(fmt, shape, photo)
        out = decode_image(data, 0, options).astype(int)
        reference = whole_resize_then_crop(data, SIZE).astype(int)
        assert np.abs(out - reference).max() <= 2, (fmt, shape)  # fixed-point rounding only


def test_elongated_squash_decodes(photo) -> None:
    for shape in elongated_shapes(100_000):
        out = decode_image(elongated("PNG", shape, photo), 0, SQUASH)
        assert out.shape == (SIZE, SIZE, 3), shape


PEAK_SCRIPT = textwrap.dedent(
    """
    import io, resource, sys
    from PIL import Image
    from jepa.config import Preprocess
    from service.decode import DecodeOptions, decode_image

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    files = []
    for w, h in [(1, 100_000), (100_000, 1), (2, 1_000_000), (1_000_000, 2)]:
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 90)).save(buf, "PNG")
        files.append(buf.getvalue())
    decode_image(files[0][:0] or files[0], 0, DecodeOptions(Preprocess(resize="squash"), 8, 10**7))  # warm imports
    before = peak_mib()
    for size in (32, 224):
        for resize in ("shorter_crop", "squash"):
            options = DecodeOptions(Preprocess(resize=resize, resize_size=size if resize != "squash" else None),
                                    size, 40_000_000)
            for data in files:
                assert decode_image(data, 0, options).shape == (size, size, 3)
    print(f"{peak_mib() - before:.1f} {max(len(f) for f in files)}")
    """
)


def test_elongated_images_decode_with_bounded_peak_memory() -> None:
    """A 1 x 100,000 PNG (a few hundred bytes) once made the shorter-side resize allocate a
    32 x 3,200,000 image (300 MB; 15 GB at 224 px). In a fresh process, decoding 1 x 100,000,
    100,000 x 1, 2 x 1,000,000 and 1,000,000 x 2 PNGs at 32 and 224 px, cropped and squashed,
    must raise the peak RSS by less than 64 MiB (the largest source, 2 M RGB pixels, is 8 MB)."""
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    growth_mib, largest_file = result.stdout.split()
    print(f"peak RSS growth {growth_mib} MiB; largest file {largest_file} bytes")
    assert float(growth_mib) < 64


def damaged_exif_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """JPEGs whose pixels Pillow loads but whose EXIF block (an orientation tag, a camera name and
    a date, then a few random bytes overwritten) makes ``ImageOps.exif_transpose`` raise."""
    image = Image.new("RGB", (24, 16), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x9003] = 6, "Camera", "2020:01:01 00:00:00"
    raw, rng, found = exif.tobytes(), random.Random(seed), []
    for _ in range(20_000):
        block = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            block[rng.randrange(len(block))] = rng.randrange(256)
        buf = io.BytesIO()
        image.save(buf, "JPEG", exif=bytes(block))
        with Image.open(io.BytesIO(buf.getvalue())) as check:
            check.load()
            try:
                ImageOps.exif_transpose(check)
            except Exception:
                found.append(buf.getvalue())
        if len(found) == count:
            break
    return found


def test_damaged_exif_is_ignored_not_refused() -> None:
    """An image Pillow decodes must embed: when only its EXIF block is unreadable, the pixels are
    taken as stored (no orientation) instead of a 400."""
    files = damaged_exif_jpegs(3)
    assert len(files) == 3, "no damaged-EXIF example found"
    for data in files:
        with Image.open(io.BytesIO(data)) as stored:
            expected = prepare_image(stored.convert("RGB"), CROP.preprocess, SIZE)
        np.testing.assert_array_equal(decode_image(data, 0, CROP), expected)
