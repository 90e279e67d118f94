"""Compute dtypes and devices: bfloat16 on CPU always; CUDA paths (torch and ONNX Runtime) when a GPU is there."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.service.helpers import open_bytes, rel_err


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


def test_torch_backend_normalises_like_the_shared_preprocess(tiny_model_dir, jpeg_bytes):
    """The torch backend takes raw uint8 and normalises on its device; in float32 on a CPU that is
    bit-for-bit ``jepa.preprocess.normalize``, so ``embed`` and the service cannot drift apart."""
    import torch

    from jepa.preprocess import normalize, prepare_image
    from service.backends.torch import TorchBackend
    from service.plan import resolve_plan
    from service.settings import Settings

    backend = TorchBackend(resolve_plan(Settings(model="x", device="cpu", dtype="float32"), str(tiny_model_dir)))
    config = backend.config
    pixels = np.stack([prepare_image(open_bytes(b), config.preprocess, config.image_size) for b in jpeg_bytes[:3]])
    ours = backend.normalize(pixels)
    assert backend.info.input_kind == "uint8" and ours.dtype == torch.float32 and ours.is_contiguous()
    np.testing.assert_array_equal(ours.numpy(), normalize(pixels, config.preprocess))


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


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_cuda_graphs_match_eager(serve, tiny_model_dir, jpeg_bytes, dtype):
    """Replayed graphs give what the eager forward gives, for batches padded up to a captured size
    (3 -> 4) and for a lone image, patch grids and multilayer embeddings included."""
    eager = serve(tiny_model_dir, backend="torch", device="cuda", dtype=dtype, max_wait_ms=200, cuda_graphs=False)
    graphs = serve(tiny_model_dir, backend="torch", device="cuda", dtype=dtype, max_wait_ms=200, cuda_graphs=True)
    assert httpx.get(graphs.url + "/info").json()["backend"]["cuda_graphs"] == [1, 2, 4, 8]
    for blobs in (jpeg_bytes[:3], jpeg_bytes[:1]):
        files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
        url = "/embed?outputs=global,patch,multilayer"
        got, ref = (httpx.post(s.url + url, files=files, timeout=60).json() for s in (graphs, eager))
        for g, r in zip(got["data"], ref["data"], strict=True):
            for key in ("embedding", "patch_embeddings", "multilayer_embedding"):
                assert rel_err(np.array(g[key]), np.array(r[key])) < 1e-3, key


def test_cuda_graphs_only_on_cuda(tiny_model_dir):
    """On by default, but only where they apply: a CPU torch backend runs eagerly and says so."""
    from service.backends.cuda_graphs import bucket_sizes
    from service.backends.torch import TorchBackend
    from service.settings import Settings

    assert bucket_sizes(8) == [1, 2, 4, 8] and bucket_sizes(48) == [1, 2, 4, 8, 16, 32, 48] and bucket_sizes(1) == [1]
    settings = Settings(model="x", device="cpu", dtype="float32")
    assert settings.cuda_graphs
    from service.plan import resolve_plan

    assert TorchBackend(resolve_plan(settings, str(tiny_model_dir))).info.details["cuda_graphs"] is None


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
