"""Preprocessing: parity with transformers' own image processor on real photos, and our mode handling."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import jepa
from jepa.config import ModelConfig, Preprocess
from jepa.preprocess import normalize, prepare_image, to_rgb

EXIF_ORIENTATION = 0x0112


def open_photo(name: str) -> Image.Image:
    """A photo from scikit-image's wheel (real photos, no download)."""
    import skimage.data

    with Image.open(Path(skimage.data.__file__).parent / name) as im:
        im.load()
        return im


def encoded(image: Image.Image, fmt: str, **save: object) -> Image.Image:
    """``image`` written as a ``fmt`` file and opened again, as a decoder would hand it over."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return Image.open(io.BytesIO(buf.getvalue()))


def exif_rotated_jpeg(upright: Image.Image) -> Image.Image:
    """A JPEG whose pixels are stored turned 90 degrees left, tagged orientation 6 ("rotate right to view")."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encoded(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """Real photos from scikit-image's wheel in several modes and sizes; the modes the wheel lacks
    are made from its photos and written through real encoders (PNG, JPEG)."""
    rocket = open_photo("rocket.jpg")
    palette = rocket.quantize(64)
    palette.info["transparency"] = 5
    return {
        "RGB-chelsea-451x300": open_photo("chelsea.png"),
        "RGB-retina-jpeg-1411": open_photo("retina.jpg"),
        "L-camera-512": open_photo("camera.png"),
        "RGBA-horse-400x328": open_photo("horse.png"),
        "RGBA-logo-500": open_photo("logo.png"),
        "P-transparent-rocket-640x427": encoded(palette, "PNG"),
        "CMYK-coffee-jpeg-600x400": encoded(open_photo("coffee.png").convert("CMYK"), "JPEG", quality=95),
    }


PHOTO_IDS = [
    "RGB-chelsea-451x300",
    "RGB-retina-jpeg-1411",
    "L-camera-512",
    "RGBA-horse-400x328",
    "RGBA-logo-500",
    "P-transparent-rocket-640x427",
    "CMYK-coffee-jpeg-600x400",
]


@pytest.fixture(scope="module")
def transformers():
    """``transformers``, or a skip of only the tests that compare with it."""
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory, transformers) -> dict[str, object]:
    """Two HF directories whose processors differ: ViT's default (squash, bilinear, 0.5/0.5)
    and shortest-edge + centre crop with bicubic and ImageNet statistics."""
    import torch

    out = {}
    for name, processor in {
        "squash": {"size": {"height": 224, "width": 224}},
        "shorter_crop": {
            "size": {"shortest_edge": 256},
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "resample": 3,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        },
    }.items():
        torch.manual_seed(0)
        config = transformers.IJepaConfig(
            hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64, patch_size=32
        )
        path = tmp_path_factory.mktemp(name)
        transformers.IJepaModel(config).save_pretrained(path)
        transformers.ViTImageProcessor(**processor).save_pretrained(path)
        out[name] = path
    return out


@pytest.mark.parametrize("resize", ["squash", "shorter_crop"])
@pytest.mark.parametrize("photo", PHOTO_IDS)
def test_preprocess_equals_transformers_processor(transformers, hf_dirs, photos, resize, photo):
    """HF's processor refuses non-RGB modes unless asked to convert (``do_convert_rgb=True``),
    which composites transparency on white as ours does."""
    model = jepa.load_encoder(hf_dirs[resize])
    assert model.config.preprocess.resize == resize
    processor = transformers.AutoImageProcessor.from_pretrained(hf_dirs[resize])
    image = photos[photo]
    expected = processor(images=[image], do_convert_rgb=True, return_tensors="np")["pixel_values"]
    ours = model.preprocess([image]).numpy()
    assert ours.shape == expected.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)  # one 8-bit level is 0.0078 or more


def test_exif_rotated_jpeg_matches_transformers_on_the_upright_image(transformers, hf_dirs):
    """HF's processor leaves EXIF orientation to the caller (its ``load_image`` applies it); we apply it."""
    model = jepa.load_encoder(hf_dirs["squash"])
    processor = transformers.AutoImageProcessor.from_pretrained(hf_dirs["squash"])
    tagged = exif_rotated_jpeg(open_photo("rocket.jpg"))
    expected = processor(images=[ImageOps.exif_transpose(tagged)], return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(model.preprocess([tagged]).numpy(), expected, rtol=0, atol=1e-6)


SQUASH = Preprocess(resize="squash", interpolation="bilinear")


def test_exif_orientation_6_gives_the_upright_image():
    upright = open_photo("rocket.jpg")  # landscape 640x427
    tagged = exif_rotated_jpeg(upright)
    assert tagged.size == (427, 640) and tagged.getexif()[EXIF_ORIENTATION] == 6
    ours = prepare_image(tagged, SQUASH, 64).astype(np.float64)
    reference = prepare_image(upright, SQUASH, 64).astype(np.float64)
    assert np.abs(ours - reference).mean() < 3  # JPEG noise only
    for wrong in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180):
        misoriented = prepare_image(upright.transpose(wrong), SQUASH, 64).astype(np.float64)
        assert np.abs(ours - misoriented).mean() > 15


def test_16_bit_greyscale_is_scaled_not_clipped():
    grey = np.asarray(open_photo("camera.png"), dtype=np.uint16)
    png16 = encoded(Image.fromarray(grey * 257), "PNG")  # full 16-bit range
    assert png16.mode == "I;16"
    rgb = np.asarray(to_rgb(png16))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
    assert (np.asarray(png16.convert("RGB")) == 255).mean() > 0.9  # what a plain convert would have done


def test_palette_without_transparency_uses_its_colours():
    palette = encoded(open_photo("astronaut.png").quantize(32), "PNG")
    assert palette.mode == "P" and "transparency" not in palette.info
    np.testing.assert_array_equal(np.asarray(to_rgb(palette)), np.asarray(palette.convert("RGB")))


def composited_on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return colour.astype(np.float64) * a + 255.0 * (1.0 - a)


def test_la_is_composited_on_white():
    grey = np.asarray(open_photo("camera.png"))
    alpha = np.tile(np.linspace(0, 255, grey.shape[1]).astype(np.uint8), (grey.shape[0], 1))
    la = encoded(Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]), "PNG")
    assert la.mode == "LA"
    rgb = np.asarray(to_rgb(la)).astype(np.float64)
    expected = composited_on_white(np.repeat(grey[..., None], 3, axis=2), alpha)
    assert np.abs(rgb - expected).max() <= 1
    assert (rgb[:, 0] == 255).all()  # fully transparent column is white


def test_rgba_is_composited_on_white():
    colour = np.asarray(open_photo("chelsea.png"))
    alpha = np.tile(np.linspace(0, 255, colour.shape[1]).astype(np.uint8), (colour.shape[0], 1))
    rgba = encoded(Image.fromarray(np.dstack([colour, alpha])), "PNG")
    assert rgba.mode == "RGBA"
    rgb = np.asarray(to_rgb(rgba)).astype(np.float64)
    assert np.abs(rgb - composited_on_white(colour, alpha)).max() <= 1
    assert (rgb[:, 0] == 255).all() and (rgb[:, -1] == colour[:, -1]).all()


def test_transparent_palette_index_becomes_white(photos):
    image = photos["P-transparent-rocket-640x427"]
    index = np.asarray(image) == 5
    assert index.any()
    assert (np.asarray(to_rgb(image))[index] == 255).all()


def test_cmyk_converts_like_pillow(photos):
    cmyk = photos["CMYK-coffee-jpeg-600x400"]
    assert cmyk.mode == "CMYK"
    np.testing.assert_array_equal(np.asarray(to_rgb(cmyk)), np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"])
def test_every_mode_gives_uint8_rgb(mode):
    image = open_photo("chelsea.png").convert(mode) if mode not in ("I;16", "PA") else None
    if mode == "I;16":
        image = Image.fromarray(np.asarray(open_photo("camera.png"), dtype=np.uint16) * 257)
    if mode == "PA":
        image = open_photo("chelsea.png").convert("P").convert("PA")
    out = prepare_image(image, SQUASH, 48)
    assert out.dtype == np.uint8 and out.shape == (48, 48, 3) and out.std() > 10


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_squash_resizes_straight_to_square(interpolation):
    chelsea = open_photo("chelsea.png")  # 451x300
    ours = prepare_image(chelsea, Preprocess(resize="squash", interpolation=interpolation), 64)
    resample = getattr(Image.Resampling, interpolation.upper())
    np.testing.assert_array_equal(ours, np.asarray(chelsea.resize((64, 64), resample=resample)))


def test_interpolation_choice_matters():
    chelsea = open_photo("chelsea.png")
    near = prepare_image(chelsea, Preprocess(resize="squash", interpolation="nearest"), 64)
    cubic = prepare_image(chelsea, Preprocess(resize="squash", interpolation="bicubic"), 64)
    assert not np.array_equal(near, cubic)


@pytest.mark.parametrize("portrait", [False, True])
def test_shorter_side_then_centre_crop(portrait):
    chelsea = open_photo("chelsea.png")  # 451x300 -> shorter side 256 gives 384x256, crop 224 at (80, 16)
    if portrait:
        chelsea = chelsea.transpose(Image.Transpose.ROTATE_90)  # 300x451 -> 256x384, crop at (16, 80)
    config = Preprocess(resize="shorter_crop", resize_size=256, interpolation="bicubic")
    ours = prepare_image(chelsea, config, 224)
    resized = chelsea.resize((256, 384) if portrait else (384, 256), resample=Image.Resampling.BICUBIC)
    box = (16, 80, 240, 304) if portrait else (80, 16, 304, 240)
    np.testing.assert_array_equal(ours, np.asarray(resized.crop(box)))


def test_crop_larger_than_resize_is_refused():
    arch = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=1).config.architecture
    with pytest.raises(ValueError, match="resize_size 24 is smaller than image_size 32"):
        ModelConfig(architecture=arch, preprocess=Preprocess(resize="shorter_crop", resize_size=24))


def test_normalize_is_scale_then_mean_std():
    config = Preprocess(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    batch = np.stack([prepare_image(open_photo(n), SQUASH, 32) for n in ("chelsea.png", "coffee.png")])
    out = normalize(batch, config)
    assert out.dtype == np.float32 and out.shape == (2, 3, 32, 32)
    expected = (batch.transpose(0, 3, 1, 2) / 255.0 - np.array(config.mean)[:, None, None]) / np.array(config.std)[
        :, None, None
    ]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_embed_returns_global_mean_and_patch_grid(tiny_model_dir, photos):
    model = jepa.load_encoder(tiny_model_dir)
    out = model.embed([photos["RGB-chelsea-451x300"], photos["L-camera-512"]])
    assert out["patch"].shape == (2, 16, 192) and out["global"].shape == (2, 192)
    np.testing.assert_allclose(out["global"], out["patch"].mean(axis=1), rtol=1e-6, atol=1e-6)
