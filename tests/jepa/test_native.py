import json

import pytest
import torch

import jepa
from jepa import CheckpointError


def test_save_then_load_reproduces_outputs_exactly(tmp_path):
    torch.manual_seed(1)
    model = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=2)
    path = jepa.save_model_dir(model, tmp_path / "m")
    loaded = jepa.load_encoder(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    config = json.loads((path / "config.json").read_text())
    assert len(config["provenance"]["weights_sha256"]) == 64
    assert not loaded.training


def test_keep_indices_select_tokens(tiny_model_dir):
    model = jepa.load_encoder(tiny_model_dir)
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 5, 9], [1, 2, 15]])
    with torch.no_grad():
        out = model(x, keep=keep)
    assert out.shape == (2, 3, 192)


def test_other_input_size_interpolates_positions(tiny_model_dir):
    model = jepa.load_encoder(tiny_model_dir)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 64))
    assert out.shape == (1, 6 * 8, 192)


def test_corrupted_weights_are_refused_by_hash(tmp_path, tiny_model_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        jepa.load_encoder(bad)


def test_unknown_config_key_is_refused(tmp_path, tiny_model_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["architecture"]["embed_dimm"] = 3
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="embed_dimm"):
        jepa.load_encoder(bad)


def test_unknown_size_lists_valid_ones():
    with pytest.raises(jepa.ConfigError, match="tiny, small, base, large, huge, giant"):
        jepa.build_encoder("medium")


def test_saved_files_are_world_readable(tmp_path):
    model = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=1)
    path = jepa.save_model_dir(model, tmp_path / "m")
    for name in ("config.json", "model.safetensors"):
        assert (path / name).stat().st_mode & 0o044 == 0o044, name
