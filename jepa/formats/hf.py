"""Hugging Face ``IJepaModel`` directories -> our encoder state dict, architecture and preprocessing.

HF stores separate query/key/value projections under renamed keys; we fuse them into one ``qkv``
and rename the rest. Both the layout ``save_pretrained`` writes (``encoder.layer.N.attention.
attention.query``) and transformers 5's in-memory layout (``layers.N.attention.q_proj``) are
accepted. Pure functions, no I/O. Note that HF's (and timm's) conversions of Meta's checkpoints
hold the *context* encoder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from jepa.config import Architecture, Interpolation, Preprocess
from jepa.errors import ConfigError

_BLOCK = r"(?:encoder\.layer|layers)\.(\d+)\."  # saved | in-memory (transformers 5)

# (HF key prefix, our key prefix); ``\1`` is the block index. The leaf (``weight``/``bias``) is kept.
RENAMES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"embeddings\.position_embeddings$", "pos_embed"),
    (_BLOCK + r"layernorm_before\.", r"blocks.\1.norm1."),
    (_BLOCK + r"layernorm_after\.", r"blocks.\1.norm2."),
    (_BLOCK + r"attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (_BLOCK + r"attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (_BLOCK + r"intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (_BLOCK + r"mlp\.fc1\.", r"blocks.\1.mlp.fc1."),
    (_BLOCK + r"output\.dense\.", r"blocks.\1.mlp.fc2."),
    (_BLOCK + r"mlp\.fc2\.", r"blocks.\1.mlp.fc2."),
    (r"layernorm\.", "norm."),
)
_RENAMES = tuple((re.compile(src), dst) for src, dst in RENAMES)
# Separate projections, fused in q, k, v order into ``blocks.N.attn.qkv``.
_QKV = re.compile(_BLOCK + r"attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)$")
_QKV_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}

STRIPPED_PREFIX = "ijepa."  # IJepaForImageClassification wraps the model
DROPPED_PREFIXES = ("pooler.", "classifier.", "embeddings.mask_token")  # not part of the encoder's forward

# PIL resampling codes used in ``preprocessor_config.json``.
_PIL_ORDER: tuple[Interpolation, ...] = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")
PIL_RESAMPLE: dict[int, Interpolation] = dict(enumerate(_PIL_ORDER))


def rename(key: str, renames: tuple[tuple[re.Pattern[str], str], ...] = _RENAMES) -> str:
    """One HF key -> ours; keys we do not know come back unchanged, so the strict load names them."""
    for pattern, dst in renames:
        if m := pattern.match(key):
            return m.expand(dst) + key[m.end() :]
    return key


def convert_hf(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename HF keys to ours and fuse q/k/v into ``qkv`` (rows in q, k, v order)."""
    return convert_separate_qkv(state_dict, STRIPPED_PREFIX, DROPPED_PREFIXES, _QKV, _RENAMES)


def convert_separate_qkv(
    state_dict: Mapping[str, Any],
    stripped_prefix: str,
    dropped_prefixes: tuple[str, ...],
    qkv_pattern: re.Pattern[str],
    renames: tuple[tuple[re.Pattern[str], str], ...],
) -> dict[str, Any]:
    """The shape of every HF ViT conversion: strip a wrapper prefix, drop what the encoder does not
    use, collect the separate projections (``qkv_pattern``'s groups: block, the part's name in one
    of the following groups, leaf) and rename the rest."""
    out: dict[str, Any] = {}
    qkv: dict[str, dict[int, Any]] = {}
    for key, value in state_dict.items():
        key = key.removeprefix(stripped_prefix)
        if key.startswith(dropped_prefixes):
            continue
        if m := qkv_pattern.match(key):
            block, *names, leaf = m.groups()
            part = next(name for name in names if name)
            qkv.setdefault(f"blocks.{block}.attn.qkv.{leaf}", {})[_QKV_ORDER[part]] = value
        else:
            out[rename(key, renames)] = value
    return {**out, **fuse_qkv(qkv)}


def fuse_qkv(parts_by_name: Mapping[str, Mapping[int, Any]]) -> dict[str, Any]:
    """``{qkv name: {0: q, 1: k, 2: v}}`` -> ``{qkv name: cat(q, k, v)}``; raises naming a missing part."""
    import torch

    out = {}
    for name, parts in parts_by_name.items():
        if len(parts) != 3:
            missing = [p for p, i in (("query", 0), ("key", 1), ("value", 2)) if i not in parts]
            raise ConfigError(f"{name}: the separate {', '.join(missing)} projection is missing")
        out[name] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def _square(value: Any, name: str) -> int:
    """HF allows ``image_size``/``patch_size`` as an int or an ``[h, w]`` pair; we need squares."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ConfigError(f"{name} {value} is not square (only square sizes are supported)")
        value = value[0]
    return int(value)


def architecture_from_hf(config: Mapping[str, Any], pos_positions: int | None = None) -> Architecture:
    """HF ``config.json`` -> Architecture; the position table's length decides the trained grid."""
    if config.get("model_type") != "ijepa":
        raise ConfigError(f"model_type is {config.get('model_type')!r}, expected 'ijepa'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"hidden_act {config['hidden_act']!r} is not supported (only exact 'gelu')")
    patch = _square(config.get("patch_size", 16), "patch_size")
    image_size = _square(config.get("image_size", 224), "image_size")
    if pos_positions is not None:
        side = math.isqrt(pos_positions)
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


def preprocess_from_hf(processor: Mapping[str, Any] | None, image_size: int) -> Preprocess:
    """``preprocessor_config.json`` -> Preprocess; without one, the ViT processor's defaults at ``image_size``.

    Settings we cannot reproduce exactly (no resize, no 1/255 rescale, an output size other than
    the model's ``image_size``) raise rather than silently preprocess differently from HF.
    """
    p = dict(processor or {})
    if not p.get("do_resize", True) or not p.get("do_rescale", True):
        raise ConfigError("do_resize=false / do_rescale=false are not supported")
    if not math.isclose(float(p.get("rescale_factor", 1 / 255)), 1 / 255):
        raise ConfigError(f"rescale_factor {p['rescale_factor']} is not supported (only 1/255)")
    if int(p.get("resample", 2)) not in PIL_RESAMPLE:
        raise ConfigError(f"unknown resample code {p['resample']}")
    normalize = p.get("do_normalize", True)
    common = {
        "interpolation": PIL_RESAMPLE[int(p.get("resample", 2))],
        "mean": tuple(p.get("image_mean", (0.5, 0.5, 0.5))) if normalize else (0.0, 0.0, 0.0),
        "std": tuple(p.get("image_std", (0.5, 0.5, 0.5))) if normalize else (1.0, 1.0, 1.0),
    }
    size = p.get("size", image_size)
    size = {"height": size, "width": size} if isinstance(size, int) else size
    crop = p.get("crop_size") if p.get("do_center_crop") else None
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if size.get("longest_edge") is not None:
        raise ConfigError("size.longest_edge (aspect-preserving resize) is not supported")
    if "shortest_edge" in size:
        if crop is None:
            raise ConfigError("size.shortest_edge without a centre crop gives non-square images (not supported)")
        out, resize = (crop["height"], crop["width"]), "shorter_crop"
        common["resize_size"] = int(size["shortest_edge"])
    else:
        out, resize = (size["height"], size["width"]), "squash"
        if crop is not None and (crop["height"], crop["width"]) != out:
            raise ConfigError(f"a crop {crop} after squashing to {out} is not supported")
    if out != (image_size, image_size):
        raise ConfigError(f"the processor makes {out[0]}x{out[1]} images but the model takes {image_size}x{image_size}")
    return Preprocess(resize=resize, **common)
