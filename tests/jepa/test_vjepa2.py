"""V-JEPA 2: our encoder reproduces ``transformers``' ``VJEPA2Model`` encoder from every source.

Random weights (perturbed so no tensor hides behind its init), several shapes (head widths that
leave channels unrotated, tubelets of 2 and 3, no qkv bias, ViT-g's MLP ratio), clips and images,
at the trained size and another one. Meta ``.pt`` files are written from the same weights in
Meta's layout (``module.backbone.`` keys under ``target_encoder``/``encoder``).
"""

from __future__ import annotations

import json

import pytest
import torch

import jepa
from jepa.errors import CheckpointError

transformers = pytest.importorskip("transformers")

# (hidden, heads, depth, crop, patch, tubelet, extra): head dims 16, 20 (2 channels left unrotated), 22, 24.
SHAPES = [
    dict(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, crop_size=32, patch_size=16, tubelet_size=2),
    dict(hidden_size=80, num_attention_heads=4, num_hidden_layers=2, crop_size=24, patch_size=8, tubelet_size=3),
    dict(hidden_size=44, num_attention_heads=2, num_hidden_layers=1, crop_size=32, patch_size=8, tubelet_size=2,
         mlp_ratio=48 / 11, qkv_bias=False),
    dict(hidden_size=96, num_attention_heads=4, num_hidden_layers=3, crop_size=48, patch_size=16, tubelet_size=2,
         layer_norm_eps=1e-5),
]  # fmt: skip
PREDICTOR = dict(pred_hidden_size=24, pred_num_attention_heads=2, pred_num_hidden_layers=1, frames_per_clip=8)


def randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def make_hf(seed: int = 0, **shape: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = transformers.VJEPA2Model(transformers.VJEPA2Config(**PREDICTOR, **shape))
    randomize(model, seed)
    return model.eval()


def hf_at(hf_model: torch.nn.Module, crop: int) -> torch.nn.Module:
    """The same weights in a VJEPA2Model configured for ``crop``: HF decomposes token ids on its
    configured grid, so this is its output for that input size (RoPE has no table to resize)."""
    config = transformers.VJEPA2Config(**{**hf_model.config.to_dict(), "crop_size": crop})
    other = transformers.VJEPA2Model(config).eval()
    other.load_state_dict(hf_model.state_dict())
    return other


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def reference(hf_model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(pixel_values_videos=x, skip_predictor=True).last_hidden_state


def assert_parity(model: torch.nn.Module, hf_model: torch.nn.Module) -> None:
    """Clips (two lengths) and images, at the trained size and at a larger one."""
    crop, patch = hf_model.config.crop_size, hf_model.config.patch_size
    tubelet, image_frames = hf_model.config.tubelet_size, model.config.temporal.image_frames
    gen = torch.Generator().manual_seed(1)
    for size, ref_model in ((crop, hf_model), (crop + 2 * patch, hf_at(hf_model, crop + 2 * patch))):
        for frames in (tubelet, 4 * tubelet):
            clip = torch.randn(2, frames, 3, size, size, generator=gen)
            with torch.no_grad():
                assert rel_err(model(clip), reference(ref_model, clip)) < 1e-4, (size, frames)
        images = torch.randn(3, 3, size, size, generator=gen)
        as_clip = images.unsqueeze(1).expand(-1, image_frames, -1, -1, -1)
        with torch.no_grad():
            ours = model(images)
        assert ours.shape == (3, image_frames // tubelet * (size // patch) ** 2, model.config.embed_dim)
        assert rel_err(ours, reference(ref_model, as_clip)) < 1e-4, (size, "image")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"w{s['hidden_size']}t{s['tubelet_size']}")
def test_hf_directory_matches_transformers(tmp_path, shape):
    hf_model = make_hf(seed=3, **shape)
    hf_model.save_pretrained(tmp_path / "hf")
    model = jepa.load_encoder(tmp_path / "hf")
    assert model.config.family == "vjepa2"
    assert model.config.temporal.tubelet_size == shape["tubelet_size"]
    assert model.config.temporal.trained_frames == PREDICTOR["frames_per_clip"]
    assert model.config.image_size == shape["crop_size"]
    assert_parity(model, hf_model)


def meta_checkpoint(hf_model: torch.nn.Module, context_model: torch.nn.Module) -> dict:
    """A training checkpoint as Meta's app writes it: DDP + wrapper prefixes, both encoders, extras."""
    from jepa.formats.vjepa2 import convert_hf

    def wrap(m: torch.nn.Module) -> dict:
        state = convert_hf(m.state_dict())
        return {f"module.backbone.{k}": v for k, v in state.items()}

    return {
        "encoder": wrap(context_model),
        "target_encoder": wrap(hf_model),
        "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(2, 2)},
        "opt": {"state": {}, "param_groups": []},
        "epoch": 3,
    }


@pytest.mark.parametrize("shape", SHAPES[:2], ids=["t2", "t3"])
def test_meta_checkpoint_serves_the_target_encoder_by_default(tmp_path, shape):
    target, context = make_hf(seed=5, **shape), make_hf(seed=6, **shape)
    path = tmp_path / "vitl.pt"
    torch.save(meta_checkpoint(target, context), path)
    heads = shape["num_attention_heads"]
    model = jepa.load_encoder(path, num_heads=heads, image_size=shape["crop_size"])
    assert model.config.provenance.source.endswith(":target_encoder")
    assert_parity(model, target)
    other = jepa.load_encoder(path, encoder="encoder", num_heads=heads, image_size=shape["crop_size"])
    assert_parity(other, context)


def test_meta_checkpoint_heads_follow_the_release_widths(tmp_path):
    """ViT-g in V-JEPA 2 has 22 heads (I-JEPA's giant 16): read off the width when not given."""
    model = jepa.build_video_encoder("giant", image_size=32, depth=1)
    state = {f"module.backbone.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "vitg.pt"
    torch.save({"target_encoder": state}, path)
    loaded = jepa.load_encoder(path, image_size=32)
    assert loaded.config.architecture.num_heads == 22
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_native_directory_round_trips_family_and_geometry(tmp_path):
    temporal = jepa.Temporal(tubelet_size=2, frames_per_clip=8, frame_step=3, image_frames=4, trained_frames=16)
    model = jepa.build_video_encoder("tiny", image_size=32, depth=2, temporal=temporal)
    jepa.save_model_dir(model, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["family"] == "vjepa2" and raw["temporal"]["frame_step"] == 3
    loaded = jepa.load_encoder(tmp_path / "m")
    assert loaded.config.temporal == temporal and type(loaded).__name__ == "VideoEncoder"
    x = torch.randn(2, 8, 3, 32, 48)  # non-square clip
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded(x[:, 0]), model(x[:, 0]))


def test_ijepa_directories_without_a_family_still_load(tmp_path):
    model = jepa.build_encoder("tiny", image_size=32, depth=1)
    jepa.save_model_dir(model, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    raw.pop("family"), raw.pop("temporal")  # as written before families existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    (tmp_path / "m" / "config.json").chmod(0o644)
    assert jepa.load_encoder(tmp_path / "m", verify=False).config.family == "ijepa"


def _hf_dir(tmp_path, **change: object):
    hf_model = make_hf(seed=1, **SHAPES[0])
    hf_model.save_pretrained(tmp_path / "hf")
    if change:
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    return tmp_path / "hf"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"hidden_act": "silu"}, "hidden_act"),
        ({"num_attention_heads": 5}, "config.json"),  # 48 is not divisible by 5
        ({"hidden_size": 96}, "shape mismatch"),
        ({"num_hidden_layers": 3}, "missing keys"),
        ({"tubelet_size": 3}, "shape mismatch"),
    ],
)
def test_wrong_hf_configs_raise_checkpoint_errors_naming_the_file(tmp_path, change, words):
    path = _hf_dir(tmp_path, **change)
    with pytest.raises(CheckpointError, match=words) as info:
        jepa.load_encoder(path)
    assert str(tmp_path / "hf") in str(info.value)


def test_hf_weights_missing_a_projection_raise(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _hf_dir(tmp_path)
    state = load_file(path / "model.safetensors")
    del state["encoder.layer.1.attention.key.weight"]
    save_file(state, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*key"):
        jepa.load_encoder(path)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.pop("module.backbone.blocks.0.mlp.fc1.weight"), "blocks.0.mlp.fc1.weight"),
        (lambda s: s.update({"module.backbone.extra.weight": torch.zeros(1)}), "unexpected keys: extra.weight"),
        (lambda s: s.update({"module.backbone.norm.weight": torch.zeros(3)}), "shape mismatch"),
        (lambda s: s.update({"module.backbone.norm.bias": "not a tensor"}), "not tensors"),
    ],
)
def test_wrong_meta_checkpoints_raise_checkpoint_errors_naming_the_file(tmp_path, edit, words):
    model = jepa.build_video_encoder("tiny", image_size=32, depth=2)
    state = {f"module.backbone.{k}": v for k, v in model.state_dict().items()}
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save({"target_encoder": state, "encoder": state}, path)
    with pytest.raises(CheckpointError, match=words) as info:
        jepa.load_encoder(path)
    assert str(path) in str(info.value)


def test_meta_checkpoint_without_the_requested_encoder_raises(tmp_path):
    model = jepa.build_video_encoder("tiny", image_size=32, depth=1)
    path = tmp_path / "only_target.pt"
    torch.save({"target_encoder": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    assert jepa.load_encoder(path).config.family == "vjepa2"
    with pytest.raises(CheckpointError, match="no 'encoder' entry"):
        jepa.load_encoder(path, encoder="encoder")


def test_native_config_with_family_but_no_geometry_is_rejected(tmp_path):
    model = jepa.build_video_encoder("tiny", image_size=32, depth=1)
    jepa.save_model_dir(model, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    raw.pop("temporal")
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="temporal geometry"):
        jepa.load_encoder(tmp_path / "m")


@pytest.mark.parametrize("shape", [(2, 3, 3, 32, 32), (2, 32, 32), (1, 3, 3, 30, 32)])
def test_bad_input_shapes_raise_value_errors(shape):
    model = jepa.build_video_encoder("tiny", image_size=32, depth=1)
    with pytest.raises(ValueError):
        model(torch.randn(*shape))


def test_hf_video_classifier_directory_serves_its_encoder(tmp_path):
    """``VJEPA2ForVideoClassification`` wraps the model as ``vjepa2.`` beside a pooler and a head."""
    config = transformers.VJEPA2Config(**PREDICTOR, **SHAPES[0], num_labels=3)
    torch.manual_seed(4)
    classifier = transformers.VJEPA2ForVideoClassification(config).eval()
    randomize(classifier, 4)
    classifier.save_pretrained(tmp_path / "clf")
    model = jepa.load_encoder(tmp_path / "clf")
    assert_parity(model, classifier.vjepa2)
