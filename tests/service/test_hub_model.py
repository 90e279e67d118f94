"""``--model org/name`` on the real service: downloaded at start-up from a loopback stand-in Hub
(HF_ENDPOINT) into HF_HOME, served with results equal to ``Encoder.embed`` on the local directory,
and a clear start-up error (exit 2) when offline with nothing cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.jepa.hub_standin import StandIn
from tests.service.helpers import REPO, open_bytes, rel_err, start_subprocess

REPO_ID = "someone/jepa-tiny"


@pytest.fixture
def hub(tiny_model_dir: Path):
    """Our own model directory format, published on the (stand-in) Hub."""
    standin = StandIn().start()
    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.name in ("config.json", "model.safetensors")}
    standin.add_repo(REPO_ID, {**files, "README.md": b"card"})
    yield standin
    standin.stop()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "JEPA_"))}
    return {**env, **extra}


def test_service_serves_a_hub_id(hub, tmp_path, tiny_encoder, jpeg_bytes):
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc, url = start_subprocess(
        ["--model", REPO_ID, "--backend", "torch", "--device", "cpu", "--no-jpeg-draft", "--dtype", "float32"], env=env
    )
    try:
        info = httpx.get(url + "/info").json()
        snapshot = Path(info["model_path"])
        assert snapshot.is_relative_to(tmp_path / "hf" / "hub" / "models--someone--jepa-tiny" / "snapshots")
        assert info["weights_sha256"] == tiny_encoder.config.provenance.weights_sha256
        r = httpx.post(url + "/embed", files=[("image", ("a.jpg", jpeg_bytes[0], "image/jpeg"))])
        assert r.status_code == 200, r.text
        got = np.array(r.json()["data"][0]["embedding"], dtype=np.float32)
        want = tiny_encoder.embed([open_bytes(jpeg_bytes[0])])["global"][0]
        assert rel_err(got, want) < 1e-4
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_service_offline_without_cache_exits_2_naming_what_to_download(tmp_path):
    env = clean_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "service", "--model", "facebook/ijepa_vith14_1k", "--port", "0"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert (
        "jepa-serve: facebook/ijepa_vith14_1k: no local file or directory of that name, not in the Hub cache"
        in r.stderr
    )
    assert "`python -m jepa download facebook/ijepa_vith14_1k`" in r.stderr
    assert str(tmp_path / "hf" / "hub") in r.stderr


def test_torch_free_service_serves_an_exported_directory_by_hub_id(tmp_path, onnx_only_dir, tiny_encoder, jpeg_bytes):
    """The ONNX Runtime image's case: no torch, the model downloaded on first start into a volume."""
    standin = StandIn().start()
    standin.add_repo("someone/jepa-tiny-onnx", {p.name: p.read_bytes() for p in onnx_only_dir.iterdir()})
    env = {"HF_ENDPOINT": standin.endpoint, "HF_HOME": str(tmp_path / "volume"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    args = ["--model", "someone/jepa-tiny-onnx", "--backend", "onnxruntime", "--device", "cpu", "--no-jpeg-draft",
            "--dtype", "float32"]  # fmt: skip
    proc, url = start_subprocess(args, env=env, prelude='import sys; sys.modules["torch"] = None')
    try:
        assert httpx.get(url + "/info").json()["backend"]["name"] == "onnxruntime"
        r = httpx.post(url + "/embed", files=[("image", ("a.jpg", jpeg_bytes[0], "image/jpeg"))])
        got = np.array(r.json()["data"][0]["embedding"], dtype=np.float32)
        assert rel_err(got, tiny_encoder.embed([open_bytes(jpeg_bytes[0])])["global"][0]) < 1e-4
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        standin.stop()
