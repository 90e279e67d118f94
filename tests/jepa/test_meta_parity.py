"""Official ``.pth.tar`` checkpoints: target encoder by default, context encoder on request, shapes inferred.

The checkpoint is built here from ``transformers`` IJepa weights with a mapping written out in
this file (not jepa's own HF converter), in the official layout: ``module.``-prefixed keys, fused
qkv, the official parameter names, and the other training entries beside the encoders.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import jepa
from jepa.config import heads_for_width


def official_state(hf_model: torch.nn.Module, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The official ViT state dict (``module.`` prefixed) holding ``hf_model``'s weights.

    Read from a ``save_pretrained`` file, whose key names are the same in transformers 4 and 5.
    """
    hf_model.save_pretrained(tmp_path / "hf_for_meta")
    hf = load_file(tmp_path / "hf_for_meta" / "model.safetensors")
    out = {
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    for i in range(hf_model.config.num_hidden_layers):
        hf_block, ours = f"encoder.layer.{i}.", f"blocks.{i}."
        leaves = ("weight", "bias") if hf_model.config.qkv_bias else ("weight",)
        for leaf in leaves:
            q, k, v = (hf[f"{hf_block}attention.attention.{n}.{leaf}"] for n in ("query", "key", "value"))
            out[f"{ours}attn.qkv.{leaf}"] = torch.cat([q, k, v])
        for leaf in ("weight", "bias"):
            out[f"{ours}norm1.{leaf}"] = hf[f"{hf_block}layernorm_before.{leaf}"]
            out[f"{ours}norm2.{leaf}"] = hf[f"{hf_block}layernorm_after.{leaf}"]
            out[f"{ours}attn.proj.{leaf}"] = hf[f"{hf_block}attention.output.dense.{leaf}"]
            out[f"{ours}mlp.fc1.{leaf}"] = hf[f"{hf_block}intermediate.dense.{leaf}"]
            out[f"{ours}mlp.fc2.{leaf}"] = hf[f"{hf_block}output.dense.{leaf}"]
    return {f"module.{k}": v for k, v in out.items()}


def write_checkpoint(path: Path, target: dict, context: dict, **extra: object) -> Path:
    """A training checkpoint as the official code writes one (``torch.save`` of a dict)."""
    predictor = {"module.predictor_embed.weight": torch.randn(16, 8), "module.mask_token": torch.zeros(1, 1, 16)}
    checkpoint = {
        "encoder": context,
        "predictor": predictor,
        "target_encoder": target,
        "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "weight_decay": 0.04, "params": [0, 1]}]},
        "scaler": None,
        "epoch": 3,
        "loss": 0.25,
        "batch_size": 8,
        "world_size": 1,
        "lr": 1e-3,
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def config_for(width: int, heads: int, **extra: object) -> dict:
    base = dict(num_hidden_layers=2, intermediate_size=200, patch_size=8, image_size=32, layer_norm_eps=1e-6)
    return dict(hidden_size=width, num_attention_heads=heads, **{**base, **extra})


def output(model: torch.nn.Module, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        out = model(pixel_values=x, **kwargs) if type(model).__name__ == "IJepaModel" else model(x)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize(("width", "heads"), [(192, 3), (384, 6)])
def test_target_encoder_by_default_context_on_request(tmp_path, make_hf_model, width, heads):
    target_hf = make_hf_model(seed=1, **config_for(width, heads))
    context_hf = make_hf_model(seed=2, **config_for(width, heads))
    path = write_checkpoint(
        tmp_path / "in1k-vit.pth.tar", official_state(target_hf, tmp_path), official_state(context_hf, tmp_path)
    )
    x = torch.randn(2, 3, 32, 32)
    other = torch.randn(1, 3, 48, 40)

    target = jepa.load_encoder(path)
    assert rel_err(output(target, x), output(target_hf, x)) < 1e-4
    assert rel_err(output(target, other), output(target_hf, other, interpolate_pos_encoding=True)) < 1e-4
    assert target.config.provenance.source.endswith(":target_encoder")

    context = jepa.load_encoder(path, encoder="encoder")
    assert rel_err(output(context, x), output(context_hf, x)) < 1e-4
    assert rel_err(output(context, x), output(target_hf, x)) > 0.1  # really the other encoder


def test_architecture_is_inferred_from_the_tensors(tmp_path, make_hf_model):
    hf_model = make_hf_model(seed=3, **config_for(192, 3, num_hidden_layers=3, intermediate_size=520, patch_size=4))
    state = official_state(hf_model, tmp_path)
    arch = jepa.load_encoder(write_checkpoint(tmp_path / "c.pth.tar", state, state)).config.architecture
    assert (arch.embed_dim, arch.num_heads, arch.depth, arch.mlp_dim, arch.patch_size, arch.image_size) == (
        192,
        3,
        3,
        520,
        4,
        32,
    )
    assert arch.norm_eps == 1e-6 and arch.qkv_bias


def test_official_widths_give_official_head_counts():
    assert {w: heads_for_width(w) for w in (192, 384, 768, 1024, 1280, 1408)} == {
        192: 3,
        384: 6,
        768: 12,
        1024: 16,
        1280: 16,
        1408: 16,
    }


def test_non_official_width_needs_num_heads(tmp_path, make_hf_model):
    hf_model = make_hf_model(seed=4, **config_for(96, 4, qkv_bias=False))
    state = official_state(hf_model, tmp_path)
    path = write_checkpoint(tmp_path / "odd.pth.tar", state, state)
    with pytest.raises(jepa.CheckpointError, match=r"odd\.pth\.tar.*num_heads for width 96"):
        jepa.load_encoder(path)
    model = jepa.load_encoder(path, num_heads=4)
    assert model.config.architecture.num_heads == 4 and not model.config.architecture.qkv_bias
    x = torch.randn(2, 3, 32, 32)
    assert rel_err(output(model, x), output(hf_model, x)) < 1e-4


def test_official_checkpoint_saves_as_our_directory(tmp_path, make_hf_model):
    hf_model = make_hf_model(seed=5, **config_for(192, 3))
    state = official_state(hf_model, tmp_path)
    model = jepa.load_encoder(write_checkpoint(tmp_path / "c.pth.tar", state, state))
    again = jepa.load_encoder(jepa.save_model_dir(model, tmp_path / "ours"))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(output(again, x), output(model, x))
