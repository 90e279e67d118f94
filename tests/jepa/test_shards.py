"""Hugging Face directories whose weights ``save_pretrained`` split into shards load like single files."""

import json
import re
import shutil

import pytest
import torch

import jepa
from jepa.errors import CheckpointError
from jepa.formats import shards
from service.optimize import cache_key

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, patch_size=8,
             image_size=32)  # fmt: skip


@pytest.fixture
def sharded(tmp_path, make_hf_model, save_hf_dir):
    """A random IJepaModel saved in shards of 50 kB (several files and transformers' own index)."""
    hf_model = make_hf_model(seed=5, **SMALL)
    path = tmp_path / "hf"
    hf_model.save_pretrained(path, max_shard_size="50KB")
    save_hf_dir(hf_model, tmp_path / "single")
    shutil.copy(tmp_path / "single" / "preprocessor_config.json", path)
    return hf_model, path, tmp_path / "single"


def test_a_sharded_directory_loads_the_same_encoder_as_one_file(sharded):
    hf_model, path, single = sharded
    files = shards.weight_files(path)
    assert len(files) > 1 and not (path / "model.safetensors").exists()
    model, reference = jepa.load_encoder(path), jepa.load_encoder(single)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours, theirs = model(x), hf_model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours, reference(x).detach())
    assert model.config.provenance.weights_sha256 == shards.weights_sha256(files)


def test_the_weights_identity_follows_every_shard(sharded):
    _, path, _ = sharded
    before = cache_key(path)[0]
    last = shards.weight_files(path)[-1]
    data = bytearray(last.read_bytes())
    data[-1] ^= 1  # one bit of one shard's last tensor
    last.write_bytes(bytes(data))
    assert cache_key(path)[0] != before


def test_a_missing_shard_is_named(sharded):
    _, path, _ = sharded
    missing = shards.weight_files(path)[0]
    missing.unlink()
    with pytest.raises(CheckpointError, match=f"names shard {missing.name}.*partial download"):
        jepa.load_encoder(path)


@pytest.mark.parametrize("name", ["../model-00001-of-00002.safetensors", "/etc/passwd", "weights.bin", 7])
def test_an_index_naming_files_outside_the_directory_is_refused(sharded, name):
    _, path, _ = sharded
    index = path / shards.INDEX_FILE
    data = json.loads(index.read_text())
    data["weight_map"][next(iter(data["weight_map"]))] = name
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"is not a \.safetensors file name"):
        jepa.load_encoder(path)


def test_a_tensor_in_the_wrong_shard_is_refused(sharded):
    _, path, _ = sharded
    index = path / shards.INDEX_FILE
    data = json.loads(index.read_text())
    files = sorted(set(data["weight_map"].values()))
    key = next(k for k, v in data["weight_map"].items() if v == files[0])
    data["weight_map"][key] = files[1]
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="index puts elsewhere"):
        jepa.load_encoder(path)


def test_no_weights_at_all_names_both_layouts(tmp_path, make_hf_model, save_hf_dir):
    path = save_hf_dir(make_hf_model(seed=1, **SMALL), tmp_path / "hf")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape("no model.safetensors (nor model.safetensors.index.json")):
        jepa.load_encoder(path)


def test_a_sharded_vjepa2_directory_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.VJEPA2Config(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, crop_size=32,
                                       patch_size=16, tubelet_size=2, pred_hidden_size=24, pred_num_attention_heads=2,
                                       pred_num_hidden_layers=1, frames_per_clip=4)  # fmt: skip
    torch.manual_seed(0)
    hf_model = transformers.VJEPA2Model(config).eval()
    hf_model.save_pretrained(tmp_path / "v", max_shard_size="50KB")
    assert len(shards.weight_files(tmp_path / "v")) > 1
    model = jepa.load_encoder(tmp_path / "v")
    clip = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        ref = hf_model(pixel_values_videos=clip, skip_predictor=True).last_hidden_state
        torch.testing.assert_close(model(clip), ref, rtol=1e-4, atol=1e-5)
