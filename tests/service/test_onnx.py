"""The ONNX Runtime backend: ``auto`` picks it, results match torch, uint8-input graphs work, and
the whole serving path runs in an interpreter where importing torch fails."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from service.plan import choose_backend, resolve_plan
from service.settings import Settings
from tests.service.helpers import REPO, open_bytes, rel_err, start_subprocess

BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is blocked in this test", name=name)
sys.meta_path.insert(0, _NoTorch())
"""


def embed_files(url: str, blobs: list[bytes], **params: str) -> httpx.Response:
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    return httpx.post(url + "/embed", files=files, params={"outputs": "global,patch", **params}, timeout=30)


def test_auto_choice(tiny_model_dir, onnx_model_dir):
    assert choose_backend(Settings(model="x"), str(tiny_model_dir), "float32")[0] == "torch"
    name, why = choose_backend(Settings(model="x"), str(onnx_model_dir), "float32")
    assert name == "onnxruntime" and "model.onnx found" in why
    assert choose_backend(Settings(model="x"), str(onnx_model_dir), "bfloat16")[0] == "torch"
    assert choose_backend(Settings(model="x", backend="torch"), str(onnx_model_dir), "float32")[0] == "torch"


@pytest.mark.parametrize("graph", ["model.onnx", "model.uint8.onnx"])
def test_onnx_matches_torch_embed(serve, onnx_model_dir, tiny_encoder, jpeg_bytes, graph):
    srv = serve(onnx_model_dir, onnx_file=graph)
    info = httpx.get(srv.url + "/info").json()["backend"]
    assert info["name"] == "onnxruntime" and info["graph"] == graph
    assert info["input"] == ("uint8" if "uint8" in graph else "float")
    r = embed_files(srv.url, jpeg_bytes[:3])
    assert r.status_code == 200, r.text
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]])
    got = np.array([d["embedding"] for d in r.json()["data"]])
    patch = np.array([d["patch_embeddings"] for d in r.json()["data"]])
    assert rel_err(got, ref["global"]) < 1e-4 and rel_err(patch, ref["patch"]) < 1e-4


@pytest.mark.parametrize(("options", "graph", "tol"), [
    ({"dtype": "float16"}, "model.fp16.onnx", 5e-3),
    ({"onnx_file": "model.int8.onnx"}, "model.int8.onnx", 5e-2),
])  # fmt: skip
def test_reduced_precision_graphs(serve, onnx_model_dir, tiny_encoder, jpeg_bytes, options, graph, tol):
    srv = serve(onnx_model_dir, **options)
    assert httpx.get(srv.url + "/info").json()["backend"]["graph"] == graph
    r = embed_files(srv.url, jpeg_bytes[:3])
    assert r.status_code == 200, r.text
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]])["global"]
    got = np.array([d["embedding"] for d in r.json()["data"]])
    err = rel_err(got, ref)
    print(f"{graph}: relative error {err:.2e}")
    assert 0 < err < tol  # really the reduced graph, and still close


def test_missing_graph_is_a_clear_error(onnx_only_dir):
    from jepa.errors import CheckpointError
    from service.backends import load_backend

    with pytest.raises(CheckpointError, match=r"model\.fp16\.onnx"):
        load_backend(resolve_plan(Settings(model="x", backend="onnxruntime", dtype="float16"), str(onnx_only_dir)))


def test_service_modules_import_without_torch():
    code = BLOCK_TORCH + (
        "import service.app, service.__main__, service.backends.onnx, service.client\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n    import torch\nexcept ModuleNotFoundError:\n    print('blocked')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "blocked", r.stderr


def test_onnx_server_runs_without_torch(onnx_only_dir, tiny_encoder, jpeg_bytes):
    proc, url = start_subprocess(
        ["--model", str(onnx_only_dir), "--device", "cpu", "--no-jpeg-draft"], prelude=BLOCK_TORCH
    )
    try:
        info = httpx.get(url + "/info").json()
        assert info["backend"]["name"] == "onnxruntime" and info["model"] == "tiny-test"
        r = embed_files(url, jpeg_bytes[:2])
        assert r.status_code == 200, r.text
        ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:2]])
        assert rel_err(np.array([d["embedding"] for d in r.json()["data"]]), ref["global"]) < 1e-4
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_provider_choice():
    import onnxruntime as ort

    from service.backends.onnx import pick_providers

    assert pick_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert pick_providers("auto")[0] == "CUDAExecutionProvider"
    else:
        assert pick_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match="device cuda asked for"):
            pick_providers("cuda")


def test_fatal_error_classification():
    from service.backends.base import is_fatal

    assert is_fatal(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_fatal(RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access"))
    assert not is_fatal(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))  # that batch only
    assert not is_fatal(RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions"))


def test_cpu_host_never_imports_torch_to_look_for_a_gpu(onnx_only_dir):
    """Without the NVIDIA driver, device auto is settled without importing torch (seconds and
    ~200 MB saved at start-up), though torch is installed here."""
    from service.plan import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("an NVIDIA driver is present: torch is the right way to ask")
    code = (
        "import sys\nfrom service.backends import load_backend\nfrom service.plan import resolve_plan\n"
        "from service.settings import Settings\n"
        f"b = load_backend(resolve_plan(Settings(model='x'), {str(onnx_only_dir)!r}))\n"
        "print(b.info.name, b.info.device, 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["onnxruntime", "cpu", "False"]


def test_two_cpu_workers_give_the_same_embeddings(serve, onnx_only_dir, jpeg_bytes):
    """Split batches, wide lone batches and one worker all agree (same graph, other thread layout)."""
    import asyncio

    async def burst(url: str) -> list[list[float]]:
        async with httpx.AsyncClient(timeout=60) as http:
            rs = await asyncio.gather(
                *(http.post(url + "/embed", files=[("image", ("a.jpg", b, "image/jpeg"))]) for b in jpeg_bytes * 3)
            )
        return [r.json()["data"][0]["embedding"] for r in rs]

    one = serve(onnx_only_dir, device="cpu", inference_workers=1)
    two = serve(onnx_only_dir, device="cpu", inference_workers=2, inference_threads=2, max_wait_ms=50, batch_probe=True)
    info = httpx.get(two.url + "/info").json()
    assert info["backend"]["workers"] == 2 and info["backend"]["threads"] == 1
    assert "1" in info["limits"]["batch_probe_ms_per_image"] and info["limits"]["batch_size_in_use"] >= 1
    ref = asyncio.run(burst(one.url))
    got = asyncio.run(burst(two.url))
    lone = embed_files(two.url, jpeg_bytes[:1]).json()["data"][0]["embedding"]
    assert rel_err(np.array(got), np.array(ref)) < 1e-4 and rel_err(np.array(lone), np.array(ref[0])) < 1e-4
    assert two.metric("jepa_inference_runs_total", 'mode="narrow"') >= 2
    assert two.metric("jepa_inference_runs_total", 'mode="wide"') >= 1
