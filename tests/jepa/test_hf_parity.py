"""Our loader reproduces ``transformers``' ``IJepaModel`` for several shapes, saved and in-memory key names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import jepa

transformers = pytest.importorskip("transformers")


def shape(width: int, heads: int, depth: int, mlp: int, patch: int, image: int, **extra: object) -> dict:
    return dict(
        hidden_size=width,
        num_attention_heads=heads,
        num_hidden_layers=depth,
        intermediate_size=mlp,
        patch_size=patch,
        image_size=image,
        **extra,
    )


# Widths, heads, depths, MLP widths, patch and image sizes all differ; both LayerNorm eps; qkv_bias on and off.
SHAPES = [
    shape(64, 4, 2, 128, 8, 32),  # transformers' default layer_norm_eps, 1e-12
    shape(48, 3, 3, 100, 4, 24, layer_norm_eps=1e-6, qkv_bias=False),
    shape(96, 6, 1, 384, 16, 64, layer_norm_eps=1e-6),
    shape(192, 3, 2, 768, 14, 42),
]


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def assert_parity(model: torch.nn.Module, hf_model: torch.nn.Module, size: int, patch: int) -> None:
    """Same last_hidden_state at the trained size and, with interpolated positions, at another one."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    other = torch.randn(2, 3, size + patch, size + 2 * patch)  # non-square, other grid
    with torch.no_grad():
        assert rel_err(model(x), hf_model(pixel_values=x).last_hidden_state) < 1e-4
        ref = hf_model(pixel_values=other, interpolate_pos_encoding=True).last_hidden_state
        assert rel_err(model(other), ref) < 1e-4


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"w{s['hidden_size']}p{s['patch_size']}")
def test_saved_directory_matches_transformers(tmp_path, make_hf_model, save_hf_dir, shape):
    hf_model = make_hf_model(seed=len(tmp_path.name), **shape)
    path = save_hf_dir(hf_model, tmp_path / "hf")
    model = jepa.load_encoder(path)
    arch = model.config.architecture
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.mlp_dim, arch.patch_size, arch.image_size) == (
        shape["hidden_size"],
        shape["num_hidden_layers"],
        shape["num_attention_heads"],
        shape["intermediate_size"],
        shape["patch_size"],
        shape["image_size"],
    )
    assert arch.norm_eps == shape.get("layer_norm_eps", 1e-12)
    assert arch.qkv_bias == shape.get("qkv_bias", True)
    assert_parity(model, hf_model, shape["image_size"], shape["patch_size"])


@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: f"w{s['hidden_size']}")
def test_in_memory_state_dict_names_load_too(tmp_path, make_hf_model, save_hf_dir, shape):
    """transformers 5 renamed the in-memory keys (``layers.N.attention.q_proj``); a file written
    straight from ``model.state_dict()`` holds those names."""
    hf_model = make_hf_model(seed=3, **shape)
    path = save_hf_dir(hf_model, tmp_path / "hf")
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    model = jepa.load_encoder(path)
    assert_parity(model, hf_model, shape["image_size"], shape["patch_size"])


def test_in_memory_and_saved_names_convert_to_the_same_state(tmp_path, make_hf_model):
    from safetensors.torch import load_file

    from jepa.formats.hf import convert_hf

    hf_model = make_hf_model(seed=4, **SHAPES[0])
    hf_model.save_pretrained(tmp_path)
    saved = convert_hf(load_file(tmp_path / "model.safetensors"))
    in_memory = convert_hf(hf_model.state_dict())
    assert saved.keys() == in_memory.keys()
    assert all(torch.equal(saved[k], in_memory[k]) for k in saved)


def test_classification_wrapper_and_pooler_are_stripped(tmp_path, make_hf_model):
    """``IJepaForImageClassification`` saves the encoder under ``ijepa.`` next to a classifier head."""
    shape = SHAPES[0]
    hf_model = make_hf_model(seed=5, **shape)
    wrapper = transformers.IJepaForImageClassification(hf_model.config)
    wrapper.ijepa.load_state_dict(hf_model.state_dict())
    wrapper.save_pretrained(tmp_path / "cls")
    assert json.loads((tmp_path / "cls" / "config.json").read_text())["model_type"] == "ijepa"
    model = jepa.load_encoder(tmp_path / "cls")
    assert_parity(model, hf_model, shape["image_size"], shape["patch_size"])


def test_hf_preprocessing_comes_from_its_processor_config(tmp_path, make_hf_model, save_hf_dir):
    hf_model = make_hf_model(seed=6, **SHAPES[0])
    path = save_hf_dir(hf_model, tmp_path / "hf", resample=3, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6])
    pre = jepa.load_encoder(path).config.preprocess
    assert (pre.resize, pre.interpolation, pre.mean, pre.std) == ("squash", "bicubic", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    (path / "preprocessor_config.json").unlink()  # without one: the ViT processor's defaults
    pre = jepa.load_encoder(path).config.preprocess
    assert (pre.resize, pre.interpolation, pre.mean, pre.std) == ("squash", "bilinear", (0.5,) * 3, (0.5,) * 3)


def test_loaded_hf_model_round_trips_through_our_directory(tmp_path, make_hf_model, save_hf_dir):
    hf_model = make_hf_model(seed=7, **SHAPES[1])
    model = jepa.load_encoder(save_hf_dir(hf_model, tmp_path / "hf"))
    again = jepa.load_encoder(jepa.save_model_dir(model, tmp_path / "ours"))
    assert again.config.preprocess == model.config.preprocess
    assert again.config.architecture == model.config.architecture
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
