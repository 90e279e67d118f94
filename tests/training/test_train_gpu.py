"""The CUDA paths (bf16 autocast, on-device crops, evaluation on the GPU); skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

import jepa
from training.evaluate import main as evaluate_main
from training.pretrain import main
from training.report import read_log

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_bf16_training_on_cuda_then_evaluate(tiny_config, tmp_path, small_npz, capsys):
    args = ["--config", str(tiny_config), "--meta.device=cuda", "--meta.use_bfloat16=true"]
    assert main([*args, "--optimization.total_steps=6"]) == 0
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert len(losses) == 6 and all(0 < v < 10 for v in losses)
    model = tmp_path / "run" / "model"
    assert jepa.load_encoder(model).config.image_size == 16
    assert evaluate_main([str(model), "--data", str(small_npz), "--device", "cuda", "--linear-iters=10"]) == 0
    assert "| raw pixels |" in capsys.readouterr().out
