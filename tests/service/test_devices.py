"""Compute dtypes and devices: bfloat16 on CPU always; CUDA paths (torch and ONNX Runtime) when a GPU is there."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.service.conftest import open_bytes, rel_err


def embed(url: str, blobs: list[bytes]) -> np.ndarray:
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    r = httpx.post(url + "/embed", files=files, timeout=60)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]])


def test_bfloat16_on_cpu(serve, tiny_model_dir, tiny_encoder, jpeg_bytes):
    srv = serve(tiny_model_dir, backend="torch", dtype="bfloat16")
    assert httpx.get(srv.url + "/info").json()["backend"]["dtype"] == "bfloat16"
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:2]])["global"]
    err = rel_err(embed(srv.url, jpeg_bytes[:2]), ref)
    assert 0 < err < 0.1  # really computed in bfloat16 (not equal), and still close


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("dtype", "tol"), [("float32", 1e-3), ("float16", 2e-2), ("bfloat16", 1e-1)])
def test_torch_cuda(serve, tiny_model_dir, tiny_encoder, jpeg_bytes, dtype, tol):
    srv = serve(tiny_model_dir, backend="torch", device="cuda", dtype=dtype)
    info = httpx.get(srv.url + "/info").json()["backend"]
    assert info["device"].startswith("cuda") and info["dtype"] == dtype
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]])["global"]
    assert rel_err(embed(srv.url, jpeg_bytes[:3]), ref) < tol


def ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers() and cuda_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not ort_cuda_available(), reason="needs onnxruntime-gpu and a CUDA device")
def test_onnxruntime_cuda(serve, onnx_model_dir, tiny_encoder, jpeg_bytes):
    srv = serve(onnx_model_dir, backend="onnxruntime", device="cuda")
    info = httpx.get(srv.url + "/info").json()["backend"]
    assert info["device"] == "cuda" and info["providers"][0] == "CUDAExecutionProvider"
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]])["global"]
    assert rel_err(embed(srv.url, jpeg_bytes[:3]), ref) < 1e-3
