"""The V-JEPA 2 video encoder: tubelet patch embedding, 3-D RoPE blocks, final norm.

``model(x)`` takes a clip ``[B, T, 3, H, W]`` (Hugging Face's layout) or an image batch
``[B, 3, H, W]`` and returns tokens ``[B, N, D]`` after the final norm, in row-major
(time, row, column) order; :meth:`VideoEncoder.token_grid` gives ``(T', H', W')``. An image is fed
as Meta's image evaluation feeds it (``evals/image_classification_frozen``): repeated
``temporal.image_frames`` times and passed through the video tokenizer. Parameter names are
Meta's (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``norm``), so its checkpoints load by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from jepa.config import ModelConfig
from jepa.rope import RopeBlock, rope_tables
from jepa.vit import ImageEmbedding


class PatchEmbed3D(nn.Module):
    """Tubelets of ``tubelet x p x p`` pixels -> tokens: ``[B, C, T, H, W] -> [B, T'*H'*W', D]``."""

    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, T', H', W'] -> [B, N, D]


class VideoEncoder(ImageEmbedding):
    """V-JEPA 2 ViT: frames to clip, tubelet embed, RoPE blocks, final norm (no position table)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.temporal is None:
            raise ValueError("a VideoEncoder needs a config with temporal geometry (family 'vjepa2')")
        arch = config.architecture
        self.config = config
        self.head_dim = arch.embed_dim // arch.num_heads
        self.patch_embed = PatchEmbed3D(arch.patch_size, config.temporal.tubelet_size, arch.in_chans, arch.embed_dim)
        self.blocks = nn.ModuleList(
            RopeBlock(arch.embed_dim, arch.num_heads, arch.mlp_dim, arch.qkv_bias, arch.norm_eps)
            for _ in range(arch.depth)
        )
        self.norm = nn.LayerNorm(arch.embed_dim, eps=arch.norm_eps)

    @property
    def tubelet_size(self) -> int:
        assert self.config.temporal is not None
        return self.config.temporal.tubelet_size

    def as_clip(self, x: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` or clips ``[B, T, 3, H, W]`` -> ``[B, 3, T, H, W]`` for the Conv3d."""
        assert self.config.temporal is not None
        if x.ndim == 4:
            x = x.unsqueeze(1).expand(-1, self.config.temporal.image_frames, -1, -1, -1)
        if x.ndim != 5:
            raise ValueError(f"expected [B, 3, H, W] images or [B, T, 3, H, W] clips, got shape {tuple(x.shape)}")
        frames = x.shape[1]
        if frames < self.tubelet_size:  # too short: frames repeated to a tubelet, as Hugging Face does
            x = x.repeat_interleave(self.tubelet_size // frames + 1, dim=1)[:, : self.tubelet_size]
        elif frames % self.tubelet_size:
            raise ValueError(f"a clip of {frames} frames is not a multiple of the tubelet size {self.tubelet_size}")
        return x.permute(0, 2, 1, 3, 4)

    def token_grid(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """``(T', H', W')`` of the tokens for an input of ``shape`` (image or clip)."""
        p = self.config.patch_size
        H, W = shape[-2], shape[-1]
        if H % p or W % p:
            raise ValueError(f"input size {H}x{W} is not a multiple of the patch size {p}")
        assert self.config.temporal is not None
        frames = self.config.temporal.image_frames if len(shape) == 4 else max(shape[1], self.tubelet_size)
        return frames // self.tubelet_size, H // p, W // p

    def _embed(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        grid = self.token_grid(x.shape)
        tokens = self.patch_embed(self.as_clip(x))  # [B, N, D]
        cos, sin = rope_tables(grid, self.head_dim, device=tokens.device)
        return tokens, cos.to(tokens.dtype), sin.to(tokens.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised ``[B, T, 3, H, W]`` clips or ``[B, 3, H, W]`` images -> tokens ``[B, N, D]``."""
        x, cos, sin = self._embed(x)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)

    def forward_layers(self, x: Tensor, n: int) -> list[Tensor]:
        """The last ``n`` blocks' outputs, each through the final norm: ``n x [B, N, D]``."""
        x, cos, sin = self._embed(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin)
            if i >= len(self.blocks) - n:
                outputs.append(self.norm(x))
        return outputs
