"""Building blocks of the I-JEPA ViT: patch embedding, attention, MLP, block, sin-cos table.

Each layer takes plain numbers, not a config object, so one ``Block`` serves both the encoder
and the narrower predictor. Parameter names follow the official checkpoints
(``patch_embed.proj``, ``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``) so weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: ``[B, C, H, W] -> [B, (H/p)*(W/p), D]``, row-major."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, gh, gw] -> [B, N, D]


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and PyTorch's SDPA kernel."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """Two linear layers with exact (erf) GELU between them, as the official ViT uses."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """``[M] -> [M, dim]``: sines of ``positions * omega`` then cosines, omega = 1/10000^(2i/dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D position table ``[grid_h * grid_w, dim]`` in row-major patch order.

    The first half of each vector encodes the column (width) index and the second half the
    row (height) index, which is the layout of the official I-JEPA tables.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb_w = sincos_1d(dim // 2, cols.reshape(-1))
    emb_h = sincos_1d(dim // 2, rows.reshape(-1))
    return torch.cat([emb_w, emb_h], dim=1).float()


def resize_pos_embed(pos_embed: Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> Tensor:
    """Bicubically resample a ``[1, N, D]`` position table to another patch grid.

    Same resampling as the official code and Hugging Face's ``interpolate_pos_encoding``, so
    outputs at other input sizes agree with theirs.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    D = pos_embed.shape[-1]
    table = pos_embed.reshape(1, src_grid[0], src_grid[1], D).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=dst_grid, mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, dst_grid[0] * dst_grid[1], D).to(pos_embed.dtype)


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Keep the tokens at ``idx``: ``x [B, N, D]``, ``idx [B, K]`` -> ``[B, K, D]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
