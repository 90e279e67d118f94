"""Batches of decoded pixels that live on the host (numpy) or, with ``--gpu-decode``, on the GPU (torch).

The batcher stacks whatever the decoders gave it; with GPU decode a batch can mix device tensors
and the CPU fallback's arrays, and it is stacked on the device so the pixels go straight into the
model's input. Without a torch tensor in sight this is ``np.stack`` and never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def stack(pixels: Sequence[Any]) -> Any:
    """``uint8 [S, S, 3]`` images -> ``[B, S, S, 3]``: numpy, or a tensor on the first tensor's device."""
    if all(isinstance(p, np.ndarray) for p in pixels):
        return np.stack(pixels)
    import torch

    device = next(p.device for p in pixels if isinstance(p, torch.Tensor))
    return torch.stack([p if isinstance(p, torch.Tensor) else torch.from_numpy(p).to(device) for p in pixels])


def concat(first: Any, second: Any) -> Any:
    """Two stacked batches, one after the other (the batcher's top-up)."""
    if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
        return np.concatenate([first, second])
    return stack([*first, *second])
