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


def by_hand(model, x: torch.Tensor, keep: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's stages written out: embed, add positions, keep tokens, blocks, final norm."""
    tokens = model.patch_embed(x) + (model.pos_embed if pos is None else pos)
    if keep is not None:
        tokens = torch.stack([tokens[b, keep[b]] for b in range(len(keep))])
    for block in model.blocks:
        tokens = block(tokens)
    return model.norm(tokens)


def test_keep_indices_select_tokens(tiny_model_dir):
    """The context encoder sees only the kept tokens, each with its own position: the same as
    running the blocks on those tokens alone, and not the full output at those positions."""
    model = jepa.load_encoder(tiny_model_dir)
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 5, 9], [1, 2, 15]])
    with torch.no_grad():
        out = model(x, keep=keep)
        full = model(x)
        torch.testing.assert_close(out, by_hand(model, x, keep), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out, torch.stack([full[b, keep[b]] for b in range(2)]), atol=1e-3)
        every = torch.stack([torch.randperm(16) for _ in range(2)])  # all tokens, shuffled: attention does not care
        torch.testing.assert_close(model(x, keep=every), torch.stack([full[b, every[b]] for b in range(2)]),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


def test_other_input_size_interpolates_positions(tiny_model_dir):
    """At 48x64 the 4x4 position table is resampled bicubically to 6x8 (the official code's and HF's
    interpolate_pos_encoding), written out here with torch's interpolate."""
    import torch.nn.functional as F

    model = jepa.load_encoder(tiny_model_dir)
    x = torch.randn(1, 3, 48, 64)
    table = model.pos_embed.reshape(1, 4, 4, 192).permute(0, 3, 1, 2)
    pos = F.interpolate(table, size=(6, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 48, 192)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 6 * 8, 192)
        torch.testing.assert_close(out, by_hand(model, x, pos=pos), rtol=1e-5, atol=1e-5)


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
