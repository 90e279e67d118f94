"""Every importer's failure modes raise CheckpointError naming the file and the problem; nothing is returned."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import jepa
from jepa import CheckpointError
from jepa.formats.native import sha256_file

HF_SHAPE = dict(
    hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128, patch_size=8, image_size=32
)


def refused(source: Path, match: str, named: Path | None = None, **kwargs: object) -> CheckpointError:
    """Loading ``source`` raises (so no model comes back) a CheckpointError matching ``match`` that
    names the file at fault (``named``, by default ``source`` itself)."""
    with pytest.raises(CheckpointError, match=match) as info:
        jepa.load_encoder(source, **kwargs)
    named = named or source
    assert info.value.path == str(named) and str(info.value).startswith(f"{named}: "), info.value
    return info.value


def copy_native(src: Path, dst: Path, edit_state=None, edit_config=None) -> Path:
    """A copy of a model directory with edited weights/config; the recorded sha256 is kept valid."""
    shutil.copytree(src, dst)
    if edit_state is not None:
        state = load_file(dst / "model.safetensors")
        edit_state(state)
        save_file(state, str(dst / "model.safetensors"))
    config = json.loads((dst / "config.json").read_text())
    config["provenance"]["weights_sha256"] = sha256_file(dst / "model.safetensors")
    if edit_config is not None:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture
def hf_dir(tmp_path, make_hf_model, save_hf_dir) -> Path:
    return save_hf_dir(make_hf_model(seed=0, **HF_SHAPE), tmp_path / "hf")


@pytest.fixture
def meta_file(tmp_path, tiny_model_dir) -> Path:
    """An official-layout checkpoint holding the tiny model as both encoders."""
    state = {f"module.{k}": v for k, v in load_file(tiny_model_dir / "model.safetensors").items()}
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"encoder": state, "target_encoder": dict(state), "predictor": {}, "opt": {}, "epoch": 1}, path)
    return path


# Our model directory.


def test_native_missing_key(tmp_path, tiny_model_dir):
    bad = copy_native(tiny_model_dir, tmp_path / "m", edit_state=lambda s: s.pop("blocks.1.mlp.fc2.bias"))
    err = refused(bad, "do not match the architecture.*missing keys: blocks.1.mlp.fc2.bias")
    assert err.missing == ["blocks.1.mlp.fc2.bias"] and err.unexpected == []


def test_native_unexpected_key(tmp_path, tiny_model_dir):
    bad = copy_native(tiny_model_dir, tmp_path / "m", edit_state=lambda s: s.update({"cls_token": torch.zeros(1)}))
    assert refused(bad, "unexpected keys: cls_token").unexpected == ["cls_token"]


def test_native_wrong_shape(tmp_path, tiny_model_dir):
    bad = copy_native(tiny_model_dir, tmp_path / "m", edit_config=lambda c: c["architecture"].update(mlp_dim=512))
    refused(bad, r"shape mismatch: blocks.0.mlp.fc1.weight: file \(768, 192\) vs model \(512, 192\)")


def test_native_truncated_safetensors(tmp_path, tiny_model_dir):
    bad = copy_native(tiny_model_dir, tmp_path / "m")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    refused(bad, "sha256 .* does not match", named=weights)  # the recorded hash catches it first
    refused(bad, "unreadable safetensors file", named=weights, verify=False)  # and the reader without it


def test_native_config_that_is_not_json(tmp_path, tiny_model_dir):
    bad = copy_native(tiny_model_dir, tmp_path / "m")
    (bad / "config.json").write_text("{not json")
    refused(bad, "unreadable JSON", named=bad / "config.json")


# Hugging Face directories.


def test_hf_missing_value_projection(hf_dir):
    state = load_file(hf_dir / "model.safetensors")
    del state["encoder.layer.1.attention.attention.value.weight"]
    save_file(state, str(hf_dir / "model.safetensors"))
    refused(hf_dir, "blocks.1.attn.qkv.weight: the separate value projection is missing", hf_dir / "model.safetensors")


def test_hf_projections_of_different_shapes(hf_dir):
    state = load_file(hf_dir / "model.safetensors")
    state["encoder.layer.0.attention.attention.key.weight"] = torch.zeros(64, 10)  # cannot be fused
    save_file(state, str(hf_dir / "model.safetensors"))
    refused(hf_dir, "Sizes of tensors must match", hf_dir / "model.safetensors")


def test_hf_missing_and_unexpected_keys(hf_dir):
    state = load_file(hf_dir / "model.safetensors")
    del state["layernorm.bias"]
    state["encoder.layer.0.extra.weight"] = torch.zeros(3)
    save_file(state, str(hf_dir / "model.safetensors"))
    err = refused(hf_dir, "missing keys: norm.bias; unexpected keys: encoder.layer.0.extra.weight")
    assert err.missing == ["norm.bias"] and err.unexpected == ["encoder.layer.0.extra.weight"]


def test_hf_wrong_shape(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["intermediate_size"] = 96
    (hf_dir / "config.json").write_text(json.dumps(config))
    refused(hf_dir, r"shape mismatch: blocks.0.mlp.fc1.weight: file \(128, 64\) vs model \(96, 64\)")


def test_hf_wrong_model_type(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["model_type"] = "vit"
    (hf_dir / "config.json").write_text(json.dumps(config))
    refused(hf_dir, "Hugging Face IJepa or VJEPA2 config .*found 'vit'", named=hf_dir / "config.json")


def test_hf_truncated_safetensors(hf_dir):
    weights = hf_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused(hf_dir, "unreadable safetensors file", named=weights)


def test_hf_without_weights(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    refused(hf_dir, "no model.safetensors")


def test_hf_processor_we_cannot_reproduce(hf_dir):
    processor = json.loads((hf_dir / "preprocessor_config.json").read_text())
    processor["size"] = {"height": 64, "width": 64}
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(processor))
    refused(hf_dir, "makes 64x64 images but the model takes 32x32", named=hf_dir / "preprocessor_config.json")


@pytest.mark.parametrize(
    ("processor", "problem"),
    [
        ({"do_rescale": False}, "do_rescale=false"),
        ({"size": {"shortest_edge": 32}}, "shortest_edge without a centre crop"),
        ({"size": {"shortest_edge": 32, "longest_edge": 64}}, "longest_edge"),
        ({"resample": 9}, "unknown resample code 9"),
    ],
)
def test_hf_processor_settings_we_refuse(hf_dir, processor, problem):
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(processor))
    refused(hf_dir, problem, named=hf_dir / "preprocessor_config.json")


# Directories that are neither format.


def test_empty_directory(tmp_path):
    refused(tmp_path, "no config.json: not a jepa or Hugging Face model directory .found: nothing")


def test_directory_of_other_files(tmp_path):
    (tmp_path / "weights.bin").write_bytes(os.urandom(100))
    (tmp_path / "notes.txt").write_text("hello")
    refused(tmp_path, r"found: notes.txt, weights.bin")


def test_config_of_something_else(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["ResNet"]}))
    refused(tmp_path, "neither our format", named=tmp_path / "config.json")


def test_missing_path(tmp_path):
    refused(tmp_path / "nope.pth.tar", "no such file or directory")


# Official checkpoints and files that are not checkpoints.


def test_meta_missing_target_encoder(tmp_path, meta_file):
    checkpoint = torch.load(meta_file, weights_only=True)
    del checkpoint["target_encoder"]
    torch.save(checkpoint, meta_file)
    refused(meta_file, "checkpoint has no 'target_encoder' entry")
    assert jepa.load_encoder(meta_file, encoder="encoder").config.embed_dim == 192  # the other one is still there


def test_meta_missing_key(meta_file):
    checkpoint = torch.load(meta_file, weights_only=True)
    del checkpoint["target_encoder"]["module.norm.weight"]
    torch.save(checkpoint, meta_file)
    assert refused(meta_file, "missing keys: norm.weight").missing == ["norm.weight"]


def test_meta_wrong_shape(meta_file):
    checkpoint = torch.load(meta_file, weights_only=True)
    checkpoint["target_encoder"]["module.blocks.1.attn.proj.weight"] = torch.zeros(192, 100)
    torch.save(checkpoint, meta_file)
    refused(meta_file, r"shape mismatch: blocks.1.attn.proj.weight: file \(192, 100\) vs model \(192, 192\)")


def test_meta_entry_that_is_not_a_state_dict(meta_file):
    torch.save({"target_encoder": [1, 2, 3], "epoch": 1}, meta_file)
    refused(meta_file, "'target_encoder' is a list, not a state dict")


def test_meta_without_encoder_tensors(meta_file):
    torch.save({"target_encoder": {"module.head.weight": torch.zeros(2)}}, meta_file)
    refused(meta_file, "not an I-JEPA ViT state dict: key 'patch_embed.proj.weight' is missing")


def test_truncated_pth_tar(meta_file):
    data = meta_file.read_bytes()
    meta_file.write_bytes(data[: len(data) // 2])
    refused(meta_file, "not a readable PyTorch checkpoint")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on raw pickles
@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), b"this is a text file\nnot a checkpoint\n", pickle.dumps([1, 2, 3])],
    ids=["random-bytes", "text", "raw-pickle-of-list"],
)
def test_files_that_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "model.pth.tar"
    path.write_bytes(content)
    refused(path, "not a readable PyTorch checkpoint")


def test_torch_saved_list_is_not_a_checkpoint(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth.tar")
    refused(tmp_path / "list.pth.tar", "not a JEPA checkpoint: expected 'target_encoder' or 'encoder', found list")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused_not_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    with open(tmp_path / "evil.pth.tar", "wb") as f:
        pickle.dump({"target_encoder": Boom()}, f)
    torch.save({"target_encoder": Boom()}, tmp_path / "evil2.pth.tar")
    refused(tmp_path / "evil.pth.tar", "not a readable PyTorch checkpoint")
    refused(tmp_path / "evil2.pth.tar", "not a readable PyTorch checkpoint")
    assert not (tmp_path / "ran").exists()


def test_safetensors_file_passed_directly(tiny_model_dir):
    refused(tiny_model_dir / "model.safetensors", "a bare safetensors file has no config; pass its directory")
