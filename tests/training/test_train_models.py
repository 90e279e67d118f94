"""Initialisation: the official path re-initialises every Linear after the model's depth rescaling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from training.config import load_config
from training.models import build_models

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def _proj_std(module, layer: int) -> float:
    return float(module.blocks[layer].attn.proj.weight.detach().std())


@pytest.mark.parametrize("rescale", [False, True])
def test_depth_rescaling_only_with_the_option(rescale):
    overrides = ["--meta.model_name=vit_small", "--meta.encoder_depth=8", "--meta.pred_depth=2",
                 f"--meta.depth_rescale_init={str(rescale).lower()}"]  # fmt: skip
    encoder, predictor, target = build_models(load_config(CONFIGS / "in1k_vith14_ep300.yaml", overrides))
    last = 7  # block 8: the rescaling divides by sqrt(16) = 4
    expected = 0.02 / math.sqrt(2 * (last + 1)) if rescale else 0.02
    assert _proj_std(encoder, last) == pytest.approx(expected, rel=0.05)
    assert float(encoder.blocks[last].mlp.fc2.weight.detach().std()) == pytest.approx(expected, rel=0.05)
    assert _proj_std(encoder, 0) == pytest.approx(0.02 / math.sqrt(2) if rescale else 0.02, rel=0.05)
    assert float(encoder.patch_embed.proj.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    biases = [m.bias.detach() for m in encoder.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(float(b.abs().max()) == 0 for b in biases)
    assert _proj_std(target, last) == _proj_std(encoder, last)
    pred_proj = float(predictor.predictor_blocks[1].attn.proj.weight.detach().std())
    assert pred_proj == pytest.approx(0.02 / 2 if rescale else 0.02, rel=0.05)
