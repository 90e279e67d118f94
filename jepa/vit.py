"""The I-JEPA encoder and predictor, and the pooled (global) embeddings users consume.

The encoder maps ``pixel_values [B, 3, H, W]`` to patch tokens ``[B, N, D]`` after the final
norm, with no class token. The same module is the context encoder (it sees only the ``keep``
tokens), the EMA target encoder, and the model the service serves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from jepa.config import ModelConfig
from jepa.contract import Output
from jepa.heads import embed_tensors
from jepa.layers import Block, PatchEmbed, gather_tokens, resize_pos_embed, sincos_2d

if TYPE_CHECKING:
    from PIL import Image


class ImageEmbedding(nn.Module):
    """What every encoder offers on PIL images: its preprocessing and its heads' outputs."""

    config: ModelConfig

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images -> the normalised ``[B, 3, S, S]`` float tensor this model expects."""
        from jepa.preprocess import preprocess_batch

        return preprocess_batch(images, self.config.preprocess, self.config.image_size)

    @torch.inference_mode()
    def embed(
        self, images: Sequence[Image.Image], outputs: Sequence[Output] = ("global", "patch")
    ) -> dict[str, np.ndarray]:
        """PIL images -> ``{"global": [B, D], "patch": [B, N, D]}`` float32 numpy arrays (the
        ``outputs`` asked for; ``"multilayer"`` gives ``[B, 4 D]``, see :mod:`jepa.heads`)."""
        param = next(self.parameters())
        pixel_values = self.preprocess(images).to(device=param.device, dtype=param.dtype)
        result = embed_tensors(self, pixel_values, frozenset(outputs))
        return {name: result.get(name).cpu().numpy() for name in outputs}  # type: ignore[union-attr]


class Encoder(ImageEmbedding):
    """ViT encoder: embed patches, add positions, keep context indices, blocks, final norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        arch = config.architecture
        self.config = config
        self.grid = arch.grid
        self.patch_embed = PatchEmbed(arch.patch_size, arch.in_chans, arch.embed_dim)
        # Fixed sin-cos table, kept in the state dict as the official checkpoints do.
        self.register_buffer("pos_embed", sincos_2d(arch.embed_dim, *arch.grid)[None], persistent=True)
        self.blocks = nn.ModuleList(
            Block(arch.embed_dim, arch.num_heads, arch.mlp_dim, arch.qkv_bias, arch.norm_eps) for _ in range(arch.depth)
        )
        self.norm = nn.LayerNorm(arch.embed_dim, eps=arch.norm_eps)

    def _embed(self, pixel_values: Tensor, keep: Tensor | None) -> Tensor:
        H, W = pixel_values.shape[-2:]
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"input size {H}x{W} is not a multiple of the patch size {p}")
        x = self.patch_embed(pixel_values)  # [B, N, D]
        x = x + resize_pos_embed(self.pos_embed, self.grid, (H // p, W // p)).to(x.dtype)
        if keep is not None:
            x = gather_tokens(x, keep)  # [B, K, D]
        return x

    def forward(self, pixel_values: Tensor, keep: Tensor | None = None) -> Tensor:
        """``[B, 3, H, W]`` (normalised) -> last layer's tokens ``[B, N, D]`` (or ``[B, K, D]`` with ``keep``)."""
        x = self._embed(pixel_values, keep)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_layers(self, pixel_values: Tensor, n: int) -> list[Tensor]:
        """The last ``n`` blocks' outputs, each through the final norm: ``n x [B, N, D]``."""
        x = self._embed(pixel_values, None)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                outputs.append(self.norm(x))
        return outputs


class Predictor(nn.Module):
    """Narrow ViT that predicts target-block representations from the context tokens.

    Context tokens are projected to the predictor width and given their positions; each target
    block contributes mask tokens at its positions; after the blocks, the target tokens are
    projected back to the encoder width.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        embed_dim: int,
        predictor_dim: int = 384,
        depth: int = 6,
        num_heads: int = 6,
        mlp_dim: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.predictor_embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.register_buffer("predictor_pos_embed", sincos_2d(predictor_dim, *grid)[None], persistent=True)
        self.predictor_blocks = nn.ModuleList(
            Block(predictor_dim, num_heads, mlp_dim or 4 * predictor_dim, True, eps) for _ in range(depth)
        )
        self.predictor_norm = nn.LayerNorm(predictor_dim, eps=eps)
        self.predictor_proj = nn.Linear(predictor_dim, embed_dim)

    def forward(self, context: Tensor, context_idx: Tensor, target_idx: Tensor) -> Tensor:
        """``context [B, Kc, D]``, ``context_idx [B, Kc]``, ``target_idx [B, M, Kt]`` -> ``[B, M, Kt, D]``."""
        B, M, Kt = target_idx.shape
        pos = self.predictor_pos_embed.expand(B, -1, -1).to(context.dtype)
        x = self.predictor_embed(context) + gather_tokens(pos, context_idx)  # [B, Kc, P]
        x = x.repeat_interleave(M, dim=0)  # [B*M, Kc, P]
        flat_targets = target_idx.reshape(B * M, Kt)
        pos = self.predictor_pos_embed.expand(B * M, -1, -1).to(context.dtype)
        queries = self.mask_token.to(context.dtype) + gather_tokens(pos, flat_targets)  # [B*M, Kt, P]
        x = torch.cat([x, queries], dim=1)
        for block in self.predictor_blocks:
            x = block(x)
        x = self.predictor_proj(self.predictor_norm(x[:, -Kt:]))
        return x.reshape(B, M, Kt, -1)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """The official initialisation: truncated-normal linears/convs, unit norms, and residual
    output projections scaled by ``1/sqrt(2 * layer)`` so deep stacks start near identity."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d | nn.Conv3d):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    blocks = getattr(module, "blocks", None) or getattr(module, "predictor_blocks", None) or []
    for layer_id, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))
    if isinstance(module, Predictor):
        nn.init.trunc_normal_(module.mask_token, std=std)
