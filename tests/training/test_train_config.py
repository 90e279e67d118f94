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


def test_cifar_config_loads():
    cfg = load_config(CONFIGS / "cifar10_vit_tiny.yaml")
    assert cfg.data.crop_size // cfg.mask.patch_size == 8


def test_overrides(tmp_path):
    overrides = ["--optimization.epochs=3", "--data.crop_scale=[0.5, 1.0]", "--meta.read_checkpoint=x.pt"]
    cfg = load_config(CONFIGS / "in1k_vith14_ep300.yaml", overrides)
    assert cfg.optimization.epochs == 3 and cfg.data.crop_scale == (0.5, 1.0) and cfg.meta.read_checkpoint == "x.pt"


def test_unknown_key_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "in1k_vith14_ep300.yaml").read_text().replace("batch_size:", "batch_sise:"))
    with pytest.raises(ConfigError, match=r"unknown key.*'data'.*batch_sise"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"unknown key.*epoch"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--optimization.epoch=3"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--optimisation.epochs=3"])


def test_bad_values_rejected():
    with pytest.raises(ConfigError, match=r"optimization.epochs: expected int"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--optimization.epochs=many"])
    with pytest.raises(ConfigError, match="model_name"):
        load_config(CONFIGS / "in1k_vith14_ep300.yaml", ["--meta.model_name=vit_enormous"])
    with pytest.raises(ConfigError, match=r"section.key=value"):
        parse_override("--epochs=3")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent.yaml")
