"""The official I-JEPA training checkpoint (``*.pth.tar``) -> our encoder state dict and architecture.

The file is a dict with ``encoder`` (context encoder), ``predictor``, ``target_encoder``,
``opt``, ``scaler``, ``epoch``...; each model's keys carry DDP's ``module.`` prefix. Our
parameter names are the official ones, so the mapping only strips the prefix. The head count is
not stored: it follows from the width (``jepa.config.HEADS_BY_WIDTH``). Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from jepa.config import Architecture, heads_for_width
from jepa.errors import ConfigError

ENCODER_KEYS = ("target_encoder", "encoder")
PREFIX = "module."  # DistributedDataParallel wraps every official model
_BLOCK_INDEX = re.compile(r"blocks\.(\d+)\.")


def looks_like_meta(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and any(k in checkpoint for k in ENCODER_KEYS)


def convert_meta(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip the ``module.`` prefix; no other renames."""
    return {key.removeprefix(PREFIX): value for key, value in state_dict.items()}


def infer_architecture(state_dict: Mapping[str, Any], num_heads: int | None = None) -> Architecture:
    """Read width, depth, patch size, MLP width and image size off the tensors' shapes."""
    try:
        proj = state_dict["patch_embed.proj.weight"]  # [D, C, p, p]
        pos = state_dict["pos_embed"]  # [1, N, D]
        mlp_dim = state_dict["blocks.0.mlp.fc1.weight"].shape[0]  # [mlp_dim, D]
    except KeyError as e:
        raise ConfigError(f"not an I-JEPA ViT state dict: key {e.args[0]!r} is missing") from e
    if len(proj.shape) != 4 or len(pos.shape) != 3:
        raise ConfigError(f"patch_embed.proj.weight {tuple(proj.shape)} or pos_embed {tuple(pos.shape)}: wrong rank")
    width, in_chans, patch, _ = proj.shape
    side = math.isqrt(pos.shape[1])
    if side * side != pos.shape[1]:
        raise ConfigError(f"pos_embed has {pos.shape[1]} positions, not a square grid")
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := _BLOCK_INDEX.match(key)))  # blocks.0 exists
    return Architecture(
        embed_dim=width,
        depth=depth,
        num_heads=num_heads or heads_for_width(width),
        mlp_dim=mlp_dim,
        patch_size=patch,
        image_size=side * patch,
        in_chans=in_chans,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
    )
