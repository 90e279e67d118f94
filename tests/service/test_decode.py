"""decode.py on its own: the JPEG draft's effect is bounded, small images are never drafted,
and limits are checked from the header."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jepa.config import Preprocess
from jepa.preprocess import prepare_image
from service.decode import DecodeOptions, decode_image, draft_target
from service.errors import PayloadTooLarge

SIZE = 224  # the default model's input size: the case the draft is for


def big_jpeg(photo: Image.Image, scale: int) -> bytes:
    buf = io.BytesIO()
    photo.resize((photo.width * scale, photo.height * scale), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def options(draft: bool, margin: float = 4.0) -> DecodeOptions:
    return DecodeOptions(Preprocess(resize_size=SIZE), SIZE, 100_000_000, draft, margin)


def test_draft_target_follows_the_resize():
    assert draft_target(options(True)) == 4 * SIZE
    squash = DecodeOptions(Preprocess(resize="squash"), 64, 10**6, True, 2.5)
    assert draft_target(squash) == 160


def test_draft_changes_pixels_by_a_few_levels_at_most(photos):
    """Full decode vs draft on 4x upscaled photos (2 to 3 k pixels a side): the resize dominates."""
    diffs = []
    for photo in photos:
        data = big_jpeg(photo, 4)
        full = decode_image(data, 0, options(False)).astype(np.int16)
        assert np.array_equal(full, prepare_image(Image.open(io.BytesIO(data)), options(False).preprocess, SIZE))
        drafted = decode_image(data, 0, options(True)).astype(np.int16)
        diffs.append(np.abs(full - drafted))
    means = [float(d.mean()) for d in diffs]
    maxes = [int(d.max()) for d in diffs]
    print("draft vs full decode, mean |diff| per photo:", [f"{m:.3f}" for m in means], "max:", maxes)
    assert any(m > 0 for m in means)  # the draft really ran on these sizes
    assert max(means) < 0.5 and max(maxes) <= 3


def test_small_jpegs_are_decoded_in_full(jpeg_bytes):
    for data in jpeg_bytes:  # 300..640 px photos: under 2 x 4 x 224, no draft
        full = decode_image(data, 0, options(False))
        assert np.array_equal(decode_image(data, 0, options(True)), full)


def test_pixel_limit_is_read_from_the_header():
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1000)).save(buf, "PNG")
    opts = DecodeOptions(Preprocess(resize_size=32), 32, 1_999_999, True)
    with pytest.raises(PayloadTooLarge, match="2000x1000") as err:
        decode_image(buf.getvalue(), 3, opts)
    assert err.value.index == 3


SHIPPED = Path(__file__).resolve().parents[2] / "models" / "ijepa-vit-tiny-cifar10"


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="the shipped default model is not here")
def test_shipped_32px_model_drafts_nearly_every_photo(photo_paths):
    """For the shipped 32 px model the draft threshold is 2 x 4 x 32 = 256 px, so nearly every
    photo is decoded at reduced scale: its global embedding moves by a relative error of a few
    1e-3 against ``embed`` on the full decode (fp32, the photos as JPEG quality 90)."""
    import jepa

    model = jepa.load_encoder(SHIPPED)
    cfg = model.config
    draft = DecodeOptions(cfg.preprocess, cfg.image_size, 40_000_000, jpeg_draft=True, jpeg_draft_margin=4.0)
    assert draft_target(draft) == 128
    errors = {}
    for path in photo_paths:
        buf = io.BytesIO()
        Image.open(path).convert("RGB").save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        served = model.embed([Image.fromarray(decode_image(data, 0, draft))])["global"][0]
        full = model.embed([Image.open(io.BytesIO(data))])["global"][0]
        errors[path.name] = float(np.abs(served - full).max() / np.abs(full).max())
    print("shipped model, draft vs full decode, rel err of the global embedding:",
          {k: f"{v:.1e}" for k, v in errors.items()})  # fmt: skip
    assert all(v > 0 for v in errors.values())  # every photo here (300 px and up) was drafted
    assert max(errors.values()) < 2e-2
