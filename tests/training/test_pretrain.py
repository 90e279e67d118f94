"""End-to-end pretraining on CPU with a tiny model: output, resume after SIGKILL, failures, NaN."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import jepa
from training.pretrain import main
from training.report import read_log

REPO = Path(__file__).resolve().parents[2]


def _cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.pretrain", "--config", str(config), *extra]


def _losses(folder: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(folder / "log.jsonl") if r["type"] == "train"}


def test_run_writes_model_dir_log_plot_and_config(tiny_config, tmp_path):
    assert main(["--config", str(tiny_config), "--optimization.total_steps=4"]) == 0
    run = tmp_path / "run"
    model = jepa.load_encoder(run / "model")
    assert model.config.provenance.training_run == "tiny" and model.config.image_size == 16
    assert (run / "training.png").stat().st_size > 1000
    assert "total_steps: 4" in (run / "config.yaml").read_text()
    assert sorted(_losses(run)) == [0, 1, 2, 3]
    assert [p.name for p in sorted(run.glob("ckpt-*.pt"))] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tiny_config, tmp_path):
    common = ["--optimization.epochs=5", "--logging.checkpoint_every=4"]  # 8 steps/epoch -> 40 steps
    ref = tmp_path / "ref"
    subprocess.run(_cmd(tiny_config, *common, f"--logging.folder={ref}"), cwd=REPO, check=True, timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_config, *common, f"--logging.folder={run}"), cwd=REPO)
    deadline = time.time() + 300
    while not (run / "ckpt-00000012.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists(), "the run finished before it could be killed"
    subprocess.run(_cmd(tiny_config, *common, f"--logging.folder={run}", "--resume"), cwd=REPO, check=True, timeout=600)
    want, got = _losses(ref), _losses(run)
    assert sorted(got) == list(range(40))
    np.testing.assert_allclose([got[s] for s in range(40)], [want[s] for s in range(40)], rtol=1e-5, atol=1e-7)
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_resume_without_checkpoint_is_an_error(tiny_config, capsys):
    assert main(["--config", str(tiny_config), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_corrupt_checkpoint_is_an_error_not_a_restart(tiny_config, tmp_path, capsys):
    assert main(["--config", str(tiny_config), "--optimization.total_steps=2"]) == 0
    ckpt = tmp_path / "run" / "ckpt-00000002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["--config", str(tiny_config), "--optimization.total_steps=4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and str(ckpt) in err
    assert not (tmp_path / "run" / "ckpt-00000004.pt").exists()


def test_nan_loss_names_the_step_and_saves_nothing(tiny_config, tmp_path, capsys):
    args = ["--config", str(tiny_config), "--optimization.start_lr=.inf", "--optimization.lr=.inf"]
    assert main([*args, "--logging.checkpoint_every=1"]) == 2
    err = capsys.readouterr().err
    assert "at step 1" in err and "without saving" in err
    assert not list((tmp_path / "run").glob("ckpt-*.pt")) and not (tmp_path / "run" / "model").exists()


def test_time_budget_fixes_the_step_count(tiny_config, tmp_path):
    assert main(["--config", str(tiny_config), "--meta.time_budget_min=0.15", "--meta.measure_steps=4"]) == 0
    budget = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "budget"]
    assert len(budget) == 1 and budget[0]["step"] == 4
    total = budget[0]["total_steps"]
    assert f"total_steps: {total}" in (tmp_path / "run" / "config.yaml").read_text()
    assert max(_losses(tmp_path / "run")) == total - 1


@pytest.mark.slow
def test_two_process_gloo_ranks_stay_in_sync(tiny_config, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "training.pretrain", "--config", str(tiny_config), "--optimization.total_steps=4"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, cwd=REPO, check=True, timeout=600, env=env)
    syncs = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "sync"]
    assert [r["step"] for r in syncs] == [2, 4]
    for r in syncs:
        assert len(r["checksums"]) == 2 and r["checksums"][0] == r["checksums"][1]
    assert syncs[0]["checksums"][0] != syncs[1]["checksums"][0], "the parameters did not change"
    assert jepa.load_encoder(tmp_path / "run" / "model").config.architecture.depth == 1
