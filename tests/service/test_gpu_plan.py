"""The GPU decode's decisions and geometry, checked on the CPU against Pillow's own results:
which images go to nvJPEG and why the others do not, EXIF orientation as exif_transpose does it,
the resize/crop box of prepare_image, and the device-side resize itself run on CPU tensors."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageOps

from jepa.config import Preprocess
from jepa.preprocess import prepare_image, resize_and_crop
from service.device_pixels import concat, stack
from service.gpu_plan import Steps, orientation_steps, plan_image, resize_geometry, wants_gpu_decode

CROP = Preprocess(resize_size=256)


def apply(pixels: np.ndarray, steps: Steps) -> np.ndarray:
    """The steps on ``[H, W, C]`` numpy pixels (the GPU does the same on ``[C, H, W]``)."""
    if steps.transpose:
        pixels = pixels.transpose(1, 0, 2)
    if steps.flip_h:
        pixels = pixels[::-1]
    if steps.flip_w:
        pixels = pixels[:, ::-1]
    return pixels


def with_orientation(image: Image.Image, orientation: int, **save: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes(), **save)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_steps_are_exif_transpose(photos, orientation):
    data = with_orientation(photos[0].crop((0, 0, 60, 40)), orientation, quality=95)
    stored = Image.open(io.BytesIO(data))
    upright = np.asarray(ImageOps.exif_transpose(stored))
    assert np.array_equal(apply(np.asarray(stored.convert("RGB")), orientation_steps(orientation)), upright)


def test_unknown_orientation_is_left_alone():
    assert orientation_steps(0) == orientation_steps(9) == Steps()


@pytest.mark.parametrize("config", [CROP, Preprocess(resize_size=224), Preprocess(resize="squash")])
def test_resize_geometry_is_resize_and_crop(photos, config):
    """Pillow resize to the planned size then the planned crop == prepare_image's resize_and_crop."""
    rng = random.Random(0)
    for _ in range(12):
        w, h = rng.randint(224, 1200), rng.randint(224, 1200)
        image = photos[rng.randrange(len(photos))].resize((w, h))
        g = resize_geometry(w, h, config, 224)
        planned = image.resize(g.size, resample=Image.Resampling.BICUBIC).crop(g.box)
        assert np.array_equal(np.asarray(planned), np.asarray(resize_and_crop(image, config, 224))), (w, h)


def test_resize_geometry_refuses_a_resize_below_the_crop():
    with pytest.raises(ValueError, match="resize_size 200 is smaller than the crop 224"):
        resize_geometry(400, 300, Preprocess(resize_size=200), 224)


def jpeg(image: Image.Image, **save: object) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, **{"format": "JPEG", **save})
    return Image.open(io.BytesIO(buf.getvalue()))


def test_plan_sends_baseline_rgb_and_grey_jpegs_to_the_gpu(photos):
    for image in (jpeg(photos[0]), jpeg(photos[0].convert("L")), jpeg(photos[1], subsampling=0)):
        plan = plan_image(image, CROP, 224)
        assert not isinstance(plan, str) and plan.stored == image.size and plan.mode == "bicubic"


def test_plan_keeps_the_rest_on_the_cpu_with_a_reason(photos):
    png = io.BytesIO()
    photos[0].save(png, "PNG")
    assert plan_image(Image.open(png), CROP, 224) == "not_jpeg"
    assert plan_image(jpeg(photos[0].convert("CMYK")), CROP, 224) == "colour_mode"
    assert plan_image(jpeg(photos[0], progressive=True), CROP, 224) == "progressive"
    assert plan_image(jpeg(photos[0]), Preprocess(resize_size=256, interpolation="lanczos"), 224) == "interpolation"


def test_plan_of_a_rotated_photo_resizes_the_upright_image(photos):
    wide = photos[0].resize((640, 400))
    plan = plan_image(Image.open(io.BytesIO(with_orientation(wide, 6))), CROP, 224)
    assert not isinstance(plan, str)
    assert plan.stored == (640, 400) and plan.steps.transpose
    assert plan.geometry == resize_geometry(400, 640, CROP, 224)  # portrait once upright


@pytest.mark.parametrize(
    ("setting", "backend", "device", "wanted"),
    [
        ("auto", "torch", "cuda", True),
        ("auto", "torch", "cuda:1", True),
        ("auto", "torch", "cpu", False),
        ("auto", "onnxruntime", "cuda", False),
        ("off", "torch", "cuda", False),
        ("on", "torch", "cuda", True),
    ],
)
def test_gpu_decode_setting(setting, backend, device, wanted):
    assert wants_gpu_decode(setting, backend, device) is wanted


def test_gpu_decode_on_refuses_a_backend_that_cannot_use_it():
    with pytest.raises(ValueError, match="--gpu-decode on needs the torch backend on cuda, not onnxruntime on cpu"):
        wants_gpu_decode("on", "onnxruntime", "cpu")


def test_device_side_resize_matches_pillow_within_a_few_levels(photos):
    """service.gpu_decode.on_device run on CPU tensors (the same torch ops the GPU runs) against
    prepare_image, for every orientation and each interpolation the device has."""
    torch = pytest.importorskip("torch")
    from service.gpu_decode import on_device

    for config in (CROP, Preprocess(resize="squash", interpolation="bilinear"), Preprocess(interpolation="nearest")):
        for orientation in (1, 3, 6, 8):
            data = with_orientation(photos[2].resize((700, 460)), orientation, quality=92)
            stored = Image.open(io.BytesIO(data))
            plan = plan_image(stored, config, 224)
            assert not isinstance(plan, str)
            pixels = torch.from_numpy(np.array(stored.convert("RGB"))).permute(2, 0, 1).contiguous()
            got = on_device(pixels, plan).numpy().astype(np.int16)
            want = prepare_image(Image.open(io.BytesIO(data)), config, 224).astype(np.int16)
            diff = np.abs(got - want)
            assert got.shape == (224, 224, 3)
            assert diff.mean() < 0.5 and diff.max() <= 8, (config.interpolation, orientation, diff.mean(), diff.max())


def test_stack_keeps_numpy_batches_in_numpy_and_moves_mixed_ones_to_the_tensors_device():
    torch = pytest.importorskip("torch")
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 7, np.uint8)
    assert isinstance(stack([a, b]), np.ndarray) and isinstance(concat(stack([a]), stack([b])), np.ndarray)
    mixed = stack([torch.from_numpy(b), a])
    assert isinstance(mixed, torch.Tensor) and mixed.shape == (2, 4, 4, 3) and int(mixed[0].max()) == 7
    joined = concat(mixed, stack([a]))
    assert isinstance(joined, torch.Tensor) and joined.shape == (3, 4, 4, 3)


def test_gpu_decoder_reads_the_reason_from_the_header_alone(photos):
    """What the GPU decoder sends to the CPU, and why: the reasons jepa_decode_path_total counts."""
    pytest.importorskip("torch")
    from service.decode import DecodeOptions
    from service.gpu_decode import plan_for

    options = DecodeOptions(CROP, 224, 10**8)
    png = io.BytesIO()
    photos[0].save(png, "PNG")
    cmyk = io.BytesIO()
    photos[0].convert("CMYK").save(cmyk, "JPEG")
    progressive = io.BytesIO()
    photos[0].save(progressive, "JPEG", progressive=True)
    baseline = io.BytesIO()
    photos[0].save(baseline, "JPEG")
    assert plan_for(png.getvalue(), options) == "not_jpeg"
    assert plan_for(cmyk.getvalue(), options) == "colour_mode"
    assert plan_for(progressive.getvalue(), options) == "progressive"
    assert plan_for(b"not an image at all", options) == "header"  # the CPU path names the error
    assert plan_for(baseline.getvalue(), DecodeOptions(CROP, 224, 100)) == "header"  # over max_pixels: a 413 there
    assert not isinstance(plan_for(baseline.getvalue(), options), str)
