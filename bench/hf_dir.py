"""Write one of our model directories as a Hugging Face ``IJepaModel`` directory.

The naive baseline loads a local HF directory the way a user would (hubs are unreachable here),
so this turns our weights into one: the inverse of :mod:`jepa.formats.hf`, checked by loading the
result back through transformers and comparing outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from jepa.formats import hf


def hf_config(encoder) -> dict:
    """transformers' ``IJepaConfig`` fields for our architecture."""
    arch = encoder.config.architecture
    return {
        "model_type": "ijepa",
        "hidden_size": arch.embed_dim,
        "num_hidden_layers": arch.depth,
        "num_attention_heads": arch.num_heads,
        "intermediate_size": arch.mlp_dim,
        "hidden_act": "gelu",
        "patch_size": arch.patch_size,
        "image_size": arch.image_size,
        "num_channels": arch.in_chans,
        "layer_norm_eps": arch.norm_eps,
        "qkv_bias": arch.qkv_bias,
    }


def processor_config(encoder) -> dict:
    """``preprocessor_config.json``: the ViT processor (squash resize) with our mean/std/resampling."""
    pre = encoder.config.preprocess
    resample = {v: k for k, v in hf.PIL_RESAMPLE.items()}[pre.interpolation]
    size = encoder.config.image_size
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": resample,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
    }


# transformers' separate q/k/v projections (saved layout | in-memory layout of transformers 5).
_QKV = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(\w+)$")
_PART = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}


def hf_state_dict(encoder, hf_keys: list[str]) -> dict[str, torch.Tensor]:
    """Our state dict under ``hf_keys`` (the target model's own keys), splitting the fused qkv.

    The inverse of :func:`jepa.formats.hf.convert_hf`, which the result is checked against.
    """
    ours = encoder.state_dict()
    out = {}
    for key in hf_keys:
        if m := _QKV.match(key):
            block, long_name, short_name, leaf = m.groups()
            fused = ours[f"blocks.{block}.attn.qkv.{leaf}"]
            out[key] = fused.chunk(3, dim=0)[_PART[long_name or short_name]].clone()
        elif (name := hf.rename(key)) in ours:
            out[key] = ours[name].clone()
        else:
            raise KeyError(f"no source tensor for Hugging Face key {key!r}")
    back = hf.convert_hf(out)
    if set(back) != set(ours) or any(not torch.equal(back[k], ours[k]) for k in ours):
        raise RuntimeError("Hugging Face state dict does not convert back to ours")
    return out


def write_hf_dir(encoder, path: str | Path) -> Path:
    """Save ``encoder`` as an HF ``IJepaModel`` directory and check it reproduces our tokens."""
    from transformers import IJepaConfig, IJepaModel

    path = Path(path)
    model = IJepaModel(IJepaConfig(**{k: v for k, v in hf_config(encoder).items() if k != "model_type"}))
    model.load_state_dict(hf_state_dict(encoder, list(model.state_dict())), strict=True)
    model.eval()
    pixels = torch.randn(2, 3, encoder.config.image_size, encoder.config.image_size)
    with torch.inference_mode():
        err = (model(pixel_values=pixels).last_hidden_state - encoder(pixels)).abs().max().item()
    if err > 1e-3:
        raise RuntimeError(f"Hugging Face copy differs from our encoder by {err:.3g} (max abs)")
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(processor_config(encoder), indent=2))
    return path
