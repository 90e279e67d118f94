"""Plain helpers shared by tests in several packages (fixtures stay in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch


def skimage_data_dir() -> Path:
    """Where scikit-image's wheel keeps its sample photos (no download needed), or
    ``JEPA_BENCH_PHOTO_DIR`` (a GPU box that got the photos without the wheel, bench/gpu.sh)."""
    from bench.images import photo_dir

    return photo_dir()


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter (LayerNorm scales and biases included), so that a swapped or
    missed tensor in a loader changes the output instead of hiding behind default values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
