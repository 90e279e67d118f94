"""V-JEPA 2 checkpoints -> our :class:`~jepa.vjepa2.VideoEncoder` state dict and config. Pure, no I/O.

Two sources:

- Meta's ``.pt`` files (facebookresearch/vjepa2): a dict with ``encoder`` (context encoder),
  ``target_encoder`` (its EMA), ``predictor``, ``opt``, ``epoch``...; keys wrapped as
  ``module.backbone.`` (DDP around the multi-mask wrapper). Meta's own loaders strip both prefixes
  and serve ``target_encoder`` (``src/hub/backbones.py``, ``evals/*/modelcustom``), as we do by default.
  Our names are Meta's, so only the prefixes go.
- Hugging Face ``VJEPA2Model`` directories (``model_type: vjepa2``): ``encoder.layer.N.attention.
  {query,key,value,proj}`` etc.; we keep the encoder (``encoder.*``), fuse q/k/v and drop the
  predictor (``predictor.*``) and a classifier's pooler/head.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jepa.config import Architecture, Temporal, heads_for_width
from jepa.errors import ConfigError
from jepa.formats.hf import convert_separate_qkv

ENCODER_KEYS = ("target_encoder", "encoder")
META_PREFIXES = ("module.", "backbone.")
# RoPE models have no position table; one left in a state dict is unused (Meta's hub loads non-strictly).
UNUSED_META_KEYS = ("pos_embed",)

_BLOCK = r"encoder\.layer\.(\d+)\."
HF_RENAMES: tuple[tuple[str, str], ...] = (
    (r"encoder\.embeddings\.patch_embeddings\.proj\.", "patch_embed.proj."),
    (_BLOCK + r"norm1\.", r"blocks.\1.norm1."),
    (_BLOCK + r"norm2\.", r"blocks.\1.norm2."),
    (_BLOCK + r"attention\.proj\.", r"blocks.\1.attn.proj."),
    (_BLOCK + r"mlp\.fc1\.", r"blocks.\1.mlp.fc1."),
    (_BLOCK + r"mlp\.fc2\.", r"blocks.\1.mlp.fc2."),
    (r"encoder\.layernorm\.", "norm."),
)
_HF_RENAMES = tuple((re.compile(src), dst) for src, dst in HF_RENAMES)
_HF_QKV = re.compile(_BLOCK + r"attention\.(query|key|value)\.(weight|bias)$")
HF_STRIPPED_PREFIX = "vjepa2."  # VJEPA2ForVideoClassification wraps the model
HF_DROPPED_PREFIXES = ("predictor.", "pooler.", "classifier.")
_BLOCK_INDEX = re.compile(r"blocks\.(\d+)\.")


def looks_like_meta(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and any(k in checkpoint for k in ENCODER_KEYS)


def is_vjepa2_state(state_dict: Mapping[str, Any]) -> bool:
    """A tubelet (5-D) patch embedding marks a V-JEPA 2 encoder; I-JEPA's is 4-D."""
    proj = state_dict.get("patch_embed.proj.weight")
    return proj is not None and len(getattr(proj, "shape", ())) == 5


def convert_meta(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip ``module.`` then ``backbone.``; drop the unused position table."""
    out = {}
    for key, value in state_dict.items():
        for prefix in META_PREFIXES:
            key = key.removeprefix(prefix)
        if key not in UNUSED_META_KEYS:
            out[key] = value
    return out


def convert_hf(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """HF keys -> ours, q/k/v fused into ``qkv`` (rows in q, k, v order), predictor dropped."""
    return convert_separate_qkv(state_dict, HF_STRIPPED_PREFIX, HF_DROPPED_PREFIXES, _HF_QKV, _HF_RENAMES)


def architecture_from_hf(config: Mapping[str, Any]) -> tuple[Architecture, Temporal]:
    """HF ``config.json`` (``model_type: vjepa2``) -> Architecture and Temporal."""
    if config.get("model_type") != "vjepa2":
        raise ConfigError(f"model_type is {config.get('model_type')!r}, expected 'vjepa2'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"hidden_act {config['hidden_act']!r} is not supported (only exact 'gelu')")
    patch = config.get("patch_size", 16)
    if isinstance(patch, list | tuple):
        if len(patch) != 2 or patch[0] != patch[1]:
            raise ConfigError(f"patch_size {patch} is not square")
        patch = patch[0]
    width = int(config.get("hidden_size", 1024))
    arch = Architecture(
        embed_dim=width,
        depth=int(config.get("num_hidden_layers", 24)),
        num_heads=int(config.get("num_attention_heads", 16)),
        mlp_dim=int(width * float(config.get("mlp_ratio", 4.0))),  # as HF's VJEPA2MLP rounds
        patch_size=int(patch),
        image_size=int(config.get("crop_size", 256)),
        in_chans=int(config.get("in_chans", 3)),
        norm_eps=float(config.get("layer_norm_eps", 1e-6)),
        qkv_bias=bool(config.get("qkv_bias", True)),
    )
    tubelet = int(config.get("tubelet_size", 2))
    temporal = Temporal(
        tubelet_size=tubelet,
        trained_frames=int(config.get("frames_per_clip", 64)),
        frames_per_clip=max(16 // tubelet, 1) * tubelet,
        image_frames=max(16 // tubelet, 1) * tubelet,
    )
    return arch, temporal


def infer_architecture(
    state_dict: Mapping[str, Any], num_heads: int | None = None, image_size: int = 256
) -> tuple[Architecture, Temporal]:
    """Width, depth, patch, tubelet and MLP width off the tensors' shapes; heads from the width.

    RoPE stores no grid, so the trained resolution is not in the file: ``image_size`` (256 for the
    L/H/g releases, 384 for ViT-g/16-384) sets the crop the preprocessing makes.
    """
    try:
        proj = state_dict["patch_embed.proj.weight"]  # [D, C, t, p, p]
        mlp_dim = state_dict["blocks.0.mlp.fc1.weight"].shape[0]  # [mlp_dim, D]
    except KeyError as e:
        raise ConfigError(f"not a V-JEPA 2 ViT state dict: key {e.args[0]!r} is missing") from e
    if len(proj.shape) != 5 or proj.shape[3] != proj.shape[4]:
        raise ConfigError(f"patch_embed.proj.weight {tuple(proj.shape)} is not a [D, C, t, p, p] tubelet kernel")
    width, in_chans, tubelet, patch, _ = proj.shape
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := _BLOCK_INDEX.match(key)))  # blocks.0 exists
    arch = Architecture(
        embed_dim=width,
        depth=depth,
        num_heads=num_heads or heads_for_width(width, family="vjepa2"),
        mlp_dim=mlp_dim,
        patch_size=patch,
        image_size=image_size,
        in_chans=in_chans,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
    )
    clip = max(16 // tubelet, 1) * tubelet
    return arch, Temporal(tubelet_size=tubelet, frames_per_clip=clip, image_frames=clip)
