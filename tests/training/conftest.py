"""Fixtures for the training tests: a small CIFAR .npz and a tiny config that trains in seconds on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

TINY = {
    "data": {"batch_size": 8, "crop_size": 16, "num_workers": 0, "pin_mem": False, "use_horizontal_flip": True},
    "logging": {"write_tag": "tiny", "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2,
                "progress_bar": False},
    "mask": {"patch_size": 4, "min_keep": 4},
    "meta": {"model_name": "vit_tiny", "encoder_depth": 1, "pred_depth": 1, "pred_emb_dim": 48, "device": "cpu",
             "use_bfloat16": False},
    "optimization": {"epochs": 2, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4},
}  # fmt: skip


def write_npz(src: Path, dst: Path, n: int, seed: int = 0) -> Path:
    """A seeded random subset of ``n`` images of a CIFAR .npz, in the same layout."""
    with np.load(src) as z:
        jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    idx = np.random.default_rng(seed).permutation(len(labels))[:n]
    blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in idx]
    new_offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(dst, jpeg=np.concatenate(blobs), offsets=new_offsets, labels=labels[idx])
    return dst


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """../shared/data/cifar10 as the top-level fixture finds it, or ``$JEPA_CIFAR_DIR`` (for a git worktree
    whose parent has no shared/ folder)."""
    for candidate in (Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10",
                      Path(os.environ.get("JEPA_CIFAR_DIR", "/nonexistent"))):  # fmt: skip
        if (candidate / "cifar10_test_jpeg.npz").is_file():
            return candidate
    pytest.skip("CIFAR-10 archives not found in ../shared/data/cifar10 (or $JEPA_CIFAR_DIR)")


@pytest.fixture(scope="session")
def small_npz(cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npz(cifar_dir / "cifar10_test_jpeg.npz", tmp_path_factory.mktemp("data") / "small.npz", 64)


@pytest.fixture
def tiny_config(small_npz: Path, tmp_path: Path) -> Path:
    """A tiny config file (width 192, depth 1, 16 px, 4x4 grid) writing into ``tmp_path/run``."""
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["data"]["image_folder"] = str(small_npz)
    raw["logging"]["folder"] = str(tmp_path / "run")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
