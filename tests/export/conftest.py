"""One full export of the tiny model (all graphs + Triton repo), shared by the export tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True)
class Exported:
    out: Path
    triton: Path
    source: Path


@pytest.fixture(scope="session")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    from export.__main__ import main

    root = tmp_path_factory.mktemp("exported")
    out, triton = root / "model", root / "triton"
    argv = [str(tiny_model_dir), "--out", str(out), "--fp16", "--int8", "--uint8-input", "--triton", str(triton)]
    assert main([*argv, "--no-progress"]) == 0
    return Exported(out, triton, tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    import jepa

    return jepa.load_encoder(tiny_model_dir)


@pytest.fixture(scope="session")
def photo_pixels(photos, tiny_encoder) -> np.ndarray:
    """Seven real photos prepared with the tiny model's own preprocessing: ``uint8 [7, S, S, 3]``."""
    from jepa.preprocess import prepare_image

    cfg = tiny_encoder.config
    return np.stack([prepare_image(photos[i % len(photos)], cfg.preprocess, cfg.image_size) for i in range(7)])
