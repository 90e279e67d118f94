"""Fixtures for the core's tests: tiny random ``transformers`` IJepa models saved as HF directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.helpers import randomize


@pytest.fixture
def make_hf_model() -> Callable[..., torch.nn.Module]:
    """``make_hf_model(seed, **IJepaConfig kwargs)`` -> a random ``IJepaModel`` in eval mode."""

    transformers = pytest.importorskip("transformers")

    def make(seed: int = 0, **config: object) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = transformers.IJepaModel(transformers.IJepaConfig(**config))
        randomize(model, seed)
        return model.eval()

    return make


@pytest.fixture
def save_hf_dir() -> Callable[..., Path]:
    """``save_hf_dir(model, path, **processor kwargs)``: ``save_pretrained`` plus the matching
    image processor's ``preprocessor_config.json``, as a Hub repository holds them."""

    transformers = pytest.importorskip("transformers")

    def save(model: torch.nn.Module, path: Path, **processor: object) -> Path:
        model.save_pretrained(path)
        size = model.config.image_size
        processor = {"size": {"height": size, "width": size}, **processor}
        transformers.ViTImageProcessor(**processor).save_pretrained(path)
        return path

    return save
