"""Hugging Face ``IJepaModel`` directories -> our encoder state dict and config.

HF stores separate ``query``/``key``/``value`` projections under renamed keys; we fuse them into
one ``qkv`` and rename the rest. Both the saved layout (``encoder.layer.N.attention.attention.query``)
and the in-memory layout of newer transformers (``layers.N.attention.q_proj``) are accepted.
Note that the HF (and timm) conversions of Meta's checkpoints hold the *context* encoder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jepa.config import Architecture, Interpolation, Preprocess
from jepa.errors import ConfigError

# (HF pattern, our name); ``{i}`` is the block index.
RENAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.patch_embeddings.projection", "patch_embed.proj"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("encoder.layer.{i}.layernorm_before", "blocks.{i}.norm1"),
    ("encoder.layer.{i}.attention.output.dense", "blocks.{i}.attn.proj"),
    ("encoder.layer.{i}.layernorm_after", "blocks.{i}.norm2"),
    ("encoder.layer.{i}.intermediate.dense", "blocks.{i}.mlp.fc1"),
    ("encoder.layer.{i}.output.dense", "blocks.{i}.mlp.fc2"),
    ("layers.{i}.layernorm_before", "blocks.{i}.norm1"),
    ("layers.{i}.attention.o_proj", "blocks.{i}.attn.proj"),
    ("layers.{i}.layernorm_after", "blocks.{i}.norm2"),
    ("layers.{i}.mlp.fc1", "blocks.{i}.mlp.fc1"),
    ("layers.{i}.mlp.fc2", "blocks.{i}.mlp.fc2"),
    ("layernorm", "norm"),
)
# Separate q/k/v projections, fused in this order into ``blocks.{i}.attn.qkv``.
QKV_PARTS: tuple[tuple[str, ...], ...] = (
    (
        "encoder.layer.{i}.attention.attention.query",
        "encoder.layer.{i}.attention.attention.key",
        "encoder.layer.{i}.attention.attention.value",
    ),
    ("layers.{i}.attention.q_proj", "layers.{i}.attention.k_proj", "layers.{i}.attention.v_proj"),
)
DROPPED_PREFIXES = ("pooler.", "classifier.")
STRIPPED_PREFIXES = ("ijepa.",)

# PIL resampling codes used in ``preprocessor_config.json``.
PIL_RESAMPLE: dict[int, Interpolation] = {
    0: "nearest",
    1: "lanczos",
    2: "bilinear",
    3: "bicubic",
    4: "box",
    5: "hamming",
}


def _rename(key: str) -> str | None:
    for src, dst in RENAMES:
        src_re = re.escape(src).replace(r"\{i\}", r"(\d+)")
        m = re.fullmatch(src_re + r"(\.weight|\.bias)?", key)
        if m:
            groups = m.groups()
            name = dst.replace("{i}", groups[0]) if "{i}" in src else dst
            return name + (groups[-1] or "")
    return None


def convert_hf(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename HF keys to ours and fuse q/k/v; unknown keys pass through so the strict load names them."""
    import torch

    out: dict[str, Any] = {}
    qkv: dict[tuple[str, int, str], dict[int, Any]] = {}
    for key, value in state_dict.items():
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key.startswith(DROPPED_PREFIXES):
            continue
        part = _qkv_part(key)
        if part is not None:
            block, which, leaf = part
            qkv.setdefault((f"blocks.{block}.attn.qkv", block, leaf), {})[which] = value
            continue
        out[_rename(key) or key] = value
    for (name, _, leaf), parts in qkv.items():
        if set(parts) != {0, 1, 2}:
            missing = [("query", "key", "value")[j] for j in range(3) if j not in parts]
            raise ConfigError(f"{name}.{leaf}: missing separate {', '.join(missing)} projection(s)")
        out[f"{name}.{leaf}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def _qkv_part(key: str) -> tuple[int, int, str] | None:
    for parts in QKV_PARTS:
        for which, pattern in enumerate(parts):
            m = re.fullmatch(re.escape(pattern).replace(r"\{i\}", r"(\d+)") + r"\.(weight|bias)", key)
            if m:
                return int(m.group(1)), which, m.group(2)
    return None


def architecture_from_hf(config: Mapping[str, Any], pos_positions: int | None = None) -> Architecture:
    """HF ``config.json`` -> Architecture; the position table's length decides the trained grid."""
    if config.get("model_type") != "ijepa":
        raise ConfigError(f"model_type is {config.get('model_type')!r}, expected 'ijepa'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"hidden_act {config['hidden_act']!r} is not supported (only exact 'gelu')")
    patch = int(config.get("patch_size", 16))
    image_size = int(config.get("image_size", 224))
    if pos_positions is not None:
        side = round(pos_positions**0.5)
        if side * side != pos_positions:
            raise ConfigError(f"position table of {pos_positions} entries is not a square grid")
        image_size = side * patch
    return Architecture(
        embed_dim=int(config["hidden_size"]),
        depth=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        mlp_dim=int(config["intermediate_size"]),
        patch_size=patch,
        image_size=image_size,
        in_chans=int(config.get("num_channels", 3)),
        norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        qkv_bias=bool(config.get("qkv_bias", True)),
    )


def preprocess_from_hf(processor: Mapping[str, Any] | None) -> Preprocess:
    """``preprocessor_config.json`` -> Preprocess; without one, the ViT processor's defaults."""
    processor = processor or {}
    size = processor.get("size") or {"height": 224, "width": 224}
    resample = PIL_RESAMPLE.get(int(processor.get("resample", 2)), "bilinear")
    mean = tuple(processor.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(processor.get("image_std", (0.5, 0.5, 0.5)))
    if "shortest_edge" in size:
        return Preprocess(
            resize="shorter_crop", resize_size=int(size["shortest_edge"]), interpolation=resample, mean=mean, std=std
        )
    return Preprocess(resize="squash", interpolation=resample, mean=mean, std=std)
