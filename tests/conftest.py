"""Shared fixtures: real photos shipped in scikit-image's wheel and a tiny random model directory.
(Training tests make their own small CIFAR-style data: tests/training/train_data_util.py.)"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import skimage_data_dir

REPO = Path(__file__).resolve().parents[1]

# Real photographs (and a few other modes) bundled with scikit-image; no download needed.
PHOTO_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    return [skimage_data_dir() / name for name in PHOTO_NAMES]


@pytest.fixture(scope="session")
def photos(photo_paths: list[Path]) -> list[Image.Image]:
    """Real RGB photos of different sizes, loaded into memory."""
    out = []
    for path in photo_paths:
        with Image.open(path) as im:
            out.append(im.convert("RGB"))
    return out


@pytest.fixture(scope="session")
def jpeg_bytes(photos: list[Image.Image]) -> list[bytes]:
    """The photos re-encoded as JPEG files, as a client would upload them."""
    out = []
    for im in photos:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight encoder saved as our model directory (ViT width 192, depth 2, 32 px)."""
    import torch

    import jepa

    torch.manual_seed(0)
    model = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=2, name="tiny-test")
    return jepa.save_model_dir(model, tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session", autouse=True)
def isolated_jepa_cache(tmp_path_factory: pytest.TempPathFactory):
    """No test writes to the user's cache (JEPA_CACHE_DIR), and the service tests of other features
    serve their model as given (JEPA_OPTIMIZE=false; server subprocesses inherit both):
    tests/service/test_optimize.py turns the start-up build on where it tests it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("JEPA_CACHE_DIR", str(tmp_path_factory.mktemp("jepa-cache")))
    patch.setenv("JEPA_OPTIMIZE", "false")
    yield
    patch.undo()
