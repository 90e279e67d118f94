from __future__ import annotations

from pathlib import Path

import pytest

from jepa.errors import ConfigError
from training.config import load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_official_vith14_loads_as_is():
    cfg = load_config(CONFIGS / "in1k_vith14_ep300.yaml")
    assert cfg.size == "huge" and cfg.mask.patch_size == 14 and cfg.data.crop_size == 224
    assert cfg.optimization.ema == (0.996, 1.0) and cfg.optimization.warmup == 40
    assert cfg.meta.pred_depth == 12 and cfg.meta.pred_emb_dim == 384 and cfg.meta.read_checkpoint is None
    assert cfg.data.crop_scale == (0.3, 1.0) and cfg.data.pin_mem is True and cfg.meta.copy_data is False


@pytest.mark.parametrize("name", ["cifar10_vit_tiny.yaml", "cifar10_vit_tiny_long.yaml"])
def test_cifar_configs_load_and_point_where_the_data_command_writes(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.crop_size // cfg.mask.patch_size == 8
    assert str(cfg.data.path) == "data/cifar10/cifar10_train_jpeg.npz"
    assert cfg.data.eval_path == "data/cifar10/cifar10_test_jpeg.npz"


def test_overrides(tmp_path):
    overrides = ["--optimization.epochs=3", "--data.crop_scale=[0.5, 1.0]", "--meta.read_checkpoint=x.pt"]
    cfg = load_config(CONFIGS / "in1k_vith14_ep300.yaml", overrides)
    assert cfg.optimization.epochs == 3 and cfg.data.crop_scale == (0.5, 1.0) and cfg.meta.read_checkpoint == "x.pt"


def test_unknown_key_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "in1k_vith14_ep300.yaml").read_text().replace("batch_size:", "batch_sise:"))
    with pytest.raises(ConfigError, match=r"unknown key 'batch_sise' in section 'data'; valid keys: batch_size"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"unknown key.*epoch"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--optimization.epoch=3"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--optimisation.epochs=3"])


def test_bad_values_rejected():
    with pytest.raises(ConfigError, match=r"optimization.epochs: .*valid integer.*'many'"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--optimization.epochs=many"])
    with pytest.raises(ConfigError, match="model_name"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--meta.model_name=vit_enormous"])
    with pytest.raises(ConfigError, match=r"section.key=value"):
        parse_override("--epochs=3")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--data.batch_size=0", r"data.batch_size: .*greater than or equal to 1"),
        ("--mask.num_enc_masks=2", r"mask.num_enc_masks"),
        ("--mask.shape_draw=paper", r"mask.shape_draw: .*'meta' or 'independent'"),
        ("--optimization.schedule=late", r"optimization.schedule"),
        ("--meta.device=tpu", r"meta.device"),
        ("--data.crop_size=225", r"not a multiple of mask.patch_size"),
        ("--data.crop_scale=[0.5, 1.5]", r"crop_scale"),
        ("--data.crop_scale=[0.5]", r"data.crop_scale"),
        ("--data.use_gaussian_blur=true", r"not supported"),
        ("--meta.time_budget_min=0", r"meta.time_budget_min: .*greater than 0"),
    ],
)
def test_values_we_cannot_honour_are_rejected_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", [override])


def test_config_is_frozen_typed_and_round_trips(tmp_path):
    from pydantic import ValidationError

    from training.config import from_dict, save_config

    cfg = load_config(CONFIGS / "cifar10_vit_tiny.yaml", ["--optimization.total_steps=7"])
    with pytest.raises(ValidationError, match="frozen"):
        cfg.optimization.epochs = 3
    assert isinstance(cfg.data.crop_scale, tuple) and isinstance(cfg.optimization.warmup, float)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg == from_dict(cfg.to_dict())
    assert cfg.replace("optimization", total_steps=9).optimization.total_steps == 9
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        cfg.replace("optimization", total_steps=0)


def test_defaults_follow_the_official_training_path():
    cfg = load_config(CONFIGS / "in1k_vith14_ep300.yaml")
    assert cfg.optimization.schedule == "meta" and cfg.mask.shape_draw == "meta"
    assert cfg.mask.full_grid_blocks is False and cfg.mask.min_keep_strict is True
    assert cfg.meta.depth_rescale_init is False
