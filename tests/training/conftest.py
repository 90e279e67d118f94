"""Fixtures for the training tests: a CIFAR-10 archive in the official format made from real photos,
converted by our own converter, and a tiny config that trains in seconds on CPU.

Nothing here needs ../shared/data: a fresh clone runs every training test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image
from train_data_util import write_cifar_archive

from training.datasets import convert_cifar10

TINY = {
    "data": {"batch_size": 8, "crop_size": 16, "num_workers": 0, "pin_mem": False, "use_horizontal_flip": True},
    "logging": {"write_tag": "tiny", "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2,
                "progress_bar": False},
    "mask": {"patch_size": 4, "min_keep": 4},
    "meta": {"model_name": "vit_tiny", "encoder_depth": 1, "pred_depth": 1, "pred_emb_dim": 48, "device": "cpu",
             "use_bfloat16": False},
    "optimization": {"epochs": 2, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4},
}  # fmt: skip


@pytest.fixture(scope="session")
def cifar_archive(photos: list[Image.Image], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar_archive(tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz", photos, 8, 64)


@pytest.fixture(scope="session")
def cifar_npz(cifar_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our .npz files (train: 40 images, test: 64), written by the converter from the archive."""
    return convert_cifar10(cifar_archive, tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def small_npz(cifar_npz: dict[str, Path]) -> Path:
    return cifar_npz["test"]


@pytest.fixture
def tiny_config(small_npz: Path, tmp_path: Path) -> Path:
    """A tiny config file (width 192, depth 1, 16 px, 4x4 grid) writing into ``tmp_path/run``."""
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["data"]["image_folder"] = str(small_npz)
    raw["logging"]["folder"] = str(tmp_path / "run")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
