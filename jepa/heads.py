"""The one normalisation on a device and the output heads, shared by every torch consumer.

Training's evaluation, the exported graphs (``export/onnx.py``), the torch backend and its CUDA
graphs all build their outputs here, so the global embedding, the patch grid and the multilayer
embedding cannot mean different things in different places:

- ``global``: mean of the last layer's patch tokens (after the final norm), ``[B, D]``, the
  paper's evaluation;
- ``patch``: those tokens, ``[B, N, D]``;
- ``multilayer``: the mean tokens of each of the last four blocks, each through the final norm,
  concatenated, ``[B, 4 D]`` (the paper's transfer evaluations; what DINOv2-style linear probes
  use). A model with fewer than four blocks concatenates all of them.

:class:`Normalize` is :func:`jepa.preprocess.normalize` (numpy, on the host) on a torch device:
the same operations in the same order in float32, so the two agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from jepa.contract import Embeddings, Output, multilayer_blocks


class Normalize(nn.Module):
    """``uint8 [B, S, S, 3]`` -> float32 ``[B, 3, S, S]``: scale to [0, 1], subtract mean, divide by std.

    Mean and std are buffers, so the module moves with ``.to(device)`` and nothing is copied from
    the host per call (which a CUDA graph capture would refuse)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(1, 3, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        # [B, S, S, 3] -> [B, 3, S, S]; a video model's clips [B, T, S, S, 3] -> [B, T, 3, S, S]
        x = pixels.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format)
        x = x * (1.0 / 255.0)
        x = x - self.mean
        return x / self.std


def mean_pool(tokens: Tensor) -> Tensor:
    """Global embedding: mean of the patch tokens, ``[B, N, D] -> [B, D]``."""
    return tokens.mean(dim=1)


def multilayer_pool(layers: Sequence[Tensor]) -> Tensor:
    """The mean of each layer's tokens, concatenated: ``L x [B, N, D] -> [B, L * D]``."""
    return torch.cat([mean_pool(t) for t in layers], dim=-1)


def last_layers(encoder: nn.Module, pixel_values: Tensor) -> list[Tensor]:
    """The normed outputs of the blocks ``multilayer`` averages (the last one is the usual tokens)."""
    return encoder.forward_layers(pixel_values, multilayer_blocks(len(encoder.blocks)))  # type: ignore[operator]


def embed_tensors(
    encoder: nn.Module, pixel_values: Tensor, outputs: frozenset[Output] = frozenset({"global", "patch"})
) -> Embeddings[Tensor]:
    """Normalised ``[B, 3, S, S]`` -> the asked-for outputs in float32 (``global`` always).

    The encoder may run in a lower precision; the pooling is taken in float32. Asking for
    ``multilayer`` runs the same blocks once and normalises three more layers, nothing else."""
    if "multilayer" in outputs:
        layers = [t.float() for t in last_layers(encoder, pixel_values)]
        tokens, multilayer = layers[-1], multilayer_pool(layers)
    else:
        tokens, multilayer = encoder(pixel_values).float(), None
    patch = tokens if "patch" in outputs else None
    return Embeddings(mean_pool(tokens), patch, multilayer)


class EmbeddingHeads(nn.Module):
    """An encoder with its heads: pixels in, :class:`~jepa.contract.Embeddings` out.

    ``uint8_input`` puts :class:`Normalize` in front (raw RGB ``[B, S, S, 3]`` in); ``dtype`` casts
    the encoder (its input is cast to match, its outputs are float32)."""

    def __init__(
        self,
        encoder: nn.Module,
        outputs: frozenset[Output] = frozenset({"global", "patch", "multilayer"}),
        *,
        uint8_input: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.encoder = encoder.to(dtype)
        self.outputs = outputs
        self.dtype = dtype
        pre = encoder.config.preprocess  # type: ignore[union-attr]
        self.normalize = Normalize(pre.mean, pre.std) if uint8_input else None

    def forward(self, pixels: Tensor, outputs: frozenset[Output] | None = None) -> Embeddings[Tensor]:
        """``outputs``: those to compute this call (default: the ones given at construction)."""
        x = self.normalize(pixels) if self.normalize is not None else pixels
        return embed_tensors(self.encoder, x.to(self.dtype), self.outputs if outputs is None else outputs)
