"""V-JEPA 2's 3-D rotary positions and the attention block that uses them.

Each head's channels are split into three equal even slices (time, row, column; ``2 * (Dh // 3 // 2)``
channels each, the rest untouched) and each slice is rotated by its token's position on that axis.
Two details follow the released checkpoints rather than textbook RoPE, because the weights were
trained with them (facebookresearch/vjepa2 ``src/models/utils/modules.py``; transformers matches):
channels are rotated in adjacent pairs ``(2i, 2i+1)``, but the angle table is the half-size table
*tiled* twice (pair ``i`` uses frequency ``i mod (d/2)``), not repeated per pair. Positions are the
token's integer (t, h, w) on the input's own grid, so other resolutions, aspect ratios and clip
lengths need no interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa.layers import Mlp


def axis_dim(head_dim: int) -> int:
    """Channels per rotated axis: the largest even number <= head_dim / 3."""
    return 2 * ((head_dim // 3) // 2)


def rope_tables(grid: tuple[int, int, int], head_dim: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """``cos, sin [N, head_dim]`` for the row-major (t, h, w) tokens of ``grid``.

    ``sin`` carries each pair's sign (minus on the first channel of a pair), so :func:`rotate`
    needs no negation (one operator fewer in exported graphs). Channels past the three rotated
    slices get cos 1 and sin 0 (left as they are).
    """
    t, h, w = grid
    d = axis_dim(head_dim)
    ids = torch.arange(t * h * w, device=device)
    positions = (ids // (h * w), (ids % (h * w)) // w, ids % w)
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float32, device=device) / (d / 2.0))
    angles = [pos.to(torch.float32)[:, None] * omega[None, :] for pos in positions]  # 3 x [N, d/2]
    angles = torch.cat([torch.cat([a, a], dim=1) for a in angles], dim=1)  # [N, 3d], each half tiled
    rest = head_dim - 3 * d
    cos = F.pad(angles.cos(), (0, rest), value=1.0)
    sign = torch.tensor([-1.0, 1.0], device=device).repeat(3 * d // 2)
    sin = F.pad(angles.sin() * sign, (0, rest), value=0.0)
    return cos, sin


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x [B, H, N, Dh]`` rotated pairwise: ``(a, b) -> (a cos - b sin, b cos + a sin)`` (the
    minus is in ``sin``, see :func:`rope_tables`)."""
    pairs = x.unflatten(-1, (-1, 2))
    swapped = torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + swapped * sin


class RopeAttention(nn.Module):
    """Self-attention with a fused ``qkv`` projection, 3-D RoPE on queries and keys, and SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        x = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class RopeBlock(nn.Module):
    """Pre-norm block as in I-JEPA (``norm1, attn, norm2, mlp``), its attention positioned by RoPE."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = RopeAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))
