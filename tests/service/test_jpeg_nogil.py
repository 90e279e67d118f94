"""service/jpeg_nogil.py: the one-call JPEG decode gives exactly what Pillow's load + prepare_image
gave, for every class of JPEG it takes, and hands everything else (CMYK, refused files, other
formats) to Pillow, so the service's answers do not change."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.gil_bench import pillow_path
from jepa.config import Preprocess
from service import jpeg_nogil
from service.decode import DecodeOptions, decode_image, draft_target
from service.errors import InvalidImage

pytest.importorskip("simplejpeg")

SIZE = 224
CROP = DecodeOptions(Preprocess(resize_size=256), SIZE, 100_000_000)
SQUASH = DecodeOptions(Preprocess(resize="squash", interpolation="bilinear"), 64, 100_000_000)


def jpeg(image: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **save)
    return buf.getvalue()


def pillow_reference(data: bytes, options: DecodeOptions) -> np.ndarray:
    """What decode_image returned before jpeg_nogil: Pillow's own load, then prepare_image."""
    return pillow_path(options)(data)


def took_fast_path(data: bytes, options: DecodeOptions) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        target = draft_target(options)
        if min(image.size) >= 2 * target:
            image.draft(None, (target, target))
        return jpeg_nogil.decode_jpeg(image, data) is not None


def odd_sized(photo: Image.Image, scale: float) -> Image.Image:
    w, h = photo.size
    return photo.resize((int(w * scale) | 1, int(h * scale) | 1), Image.Resampling.BICUBIC)


JPEG_KINDS = {
    "baseline 4:2:0": dict(quality=90),
    "4:4:4": dict(quality=95, subsampling=0),
    "4:2:2": dict(quality=85, subsampling=1),
    "progressive": dict(quality=80, progressive=True),
    "optimized, low quality": dict(quality=30, optimize=True),
}


@pytest.mark.parametrize("kind", list(JPEG_KINDS))
@pytest.mark.parametrize("options", [CROP, SQUASH], ids=["shorter_crop", "squash"])
def test_equal_to_pillow_for_every_jpeg_kind_and_size(photos, kind, options):
    """Small (no draft), medium and large (drafted 1/2 and 1/4) odd-sized photos: bit-for-bit equal."""
    for photo in photos[:3]:
        for scale in (0.5, 3.1, 6.3):
            data = jpeg(odd_sized(photo, scale), **JPEG_KINDS[kind])
            assert took_fast_path(data, options)
            assert np.array_equal(decode_image(data, 0, options), pillow_reference(data, options)), (kind, scale)


def test_greyscale_jpegs_are_equal(photos):
    for scale in (1.0, 4.2):
        data = jpeg(odd_sized(photos[1], scale).convert("L"), quality=90)
        assert took_fast_path(data, CROP)
        out = decode_image(data, 0, CROP)
        assert out.shape == (SIZE, SIZE, 3)
        assert np.array_equal(out, pillow_reference(data, CROP))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_undone_as_exif_transpose_does(photos, orientation):
    """A wide photo with each EXIF orientation, small and drafted: same pixels as ImageOps.exif_transpose."""
    for scale in (1.0, 5.0):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = jpeg(odd_sized(photos[0].crop((0, 0, 512, 300)), scale), quality=90, exif=exif.tobytes())
        assert took_fast_path(data, CROP)
        assert np.array_equal(decode_image(data, 0, CROP), pillow_reference(data, CROP)), (orientation, scale)


def test_multi_picture_jpeg_decodes_its_first_picture(photos):
    """Phones write MPO files (Pillow's format "MPO"): the first picture, as Pillow decodes it."""
    buf = io.BytesIO()
    first, second = photos[0].resize((640, 480)), photos[2].resize((640, 480))
    first.save(buf, "MPO", save_all=True, append_images=[second], quality=90)
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert took_fast_path(data, CROP)
    assert np.array_equal(decode_image(data, 0, CROP), pillow_reference(data, CROP))


def test_cmyk_jpegs_go_to_pillow(photos):
    data = jpeg(photos[1].resize((400, 300)).convert("CMYK"), quality=90)
    assert not took_fast_path(data, CROP)
    assert np.array_equal(decode_image(data, 0, CROP), pillow_reference(data, CROP))


def test_a_jpeg_simplejpeg_refuses_but_pillow_reads_still_decodes(photos):
    """Junk between markers makes libjpeg warn: simplejpeg (strict) refuses, Pillow decodes as before."""
    data = jpeg(photos[2].resize((400, 300)), quality=90)
    sos = data.index(b"\xff\xda")
    odd = data[:sos] + b"\x00\x00\x00" + data[sos:]  # extraneous bytes before the scan marker
    assert not took_fast_path(odd, CROP)
    assert np.array_equal(decode_image(odd, 0, CROP), pillow_reference(odd, CROP))


def test_truncated_jpeg_is_still_a_400_naming_the_image(photos):
    data = jpeg(photos[0].resize((800, 600)), quality=90)
    with pytest.raises(InvalidImage, match="image 2 is truncated or corrupt") as err:
        decode_image(data[: len(data) // 2], 2, CROP)
    assert err.value.index == 2


def test_other_formats_never_take_the_jpeg_path(photos):
    buf = io.BytesIO()
    photos[0].resize((300, 200)).save(buf, "PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as image:
        assert jpeg_nogil.decode_jpeg(image, buf.getvalue()) is None
    assert np.array_equal(decode_image(buf.getvalue(), 0, CROP), pillow_reference(buf.getvalue(), CROP))
