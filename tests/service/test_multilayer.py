"""``outputs=multilayer`` through the whole service: torch and ONNX Runtime backends, JSON floats,
base64 and binary bodies, compared with ``jepa``'s own embed; and a graph exported before the
output existed answers 422 for it while serving everything else."""

from __future__ import annotations

import base64
import io
import shutil

import httpx
import numpy as np
import onnx
import pytest
from safetensors.numpy import load as load_safetensors

from tests.service.helpers import open_bytes, rel_err

ML = {"outputs": "global,multilayer"}


def post(url: str, blobs: list[bytes], params: dict[str, str], accept: str | None = None) -> httpx.Response:
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    headers = {"Accept": accept} if accept else {}
    return httpx.post(url + "/embed", files=files, params=params, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_encoder, jpeg_bytes) -> dict[str, np.ndarray]:
    return tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]], outputs=("global", "multilayer"))


@pytest.mark.parametrize("where", ["torch", "onnxruntime"])
def test_multilayer_json_floats_and_base64(serve, tiny_model_dir, onnx_model_dir, jpeg_bytes, reference, where):
    srv = serve(tiny_model_dir, backend="torch") if where == "torch" else serve(onnx_model_dir, backend="onnxruntime")
    info = httpx.get(srv.url + "/info").json()
    assert info["backend"]["name"] == where and "multilayer" in info["outputs"] and info["multilayer_dim"] == 384
    r = post(srv.url, jpeg_bytes[:3], ML)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert all(set(d) >= {"embedding", "multilayer_embedding"} and d.get("patch_embeddings") is None for d in data)
    got = np.array([d["multilayer_embedding"] for d in data], dtype=np.float32)
    assert got.shape == (3, 384) and rel_err(got, reference["multilayer"]) < 1e-4
    r = post(srv.url, jpeg_bytes[:3], {**ML, "encoding": "base64"})
    rows = [np.frombuffer(base64.b64decode(d["multilayer_embedding"]), "<f4") for d in r.json()["data"]]
    np.testing.assert_array_equal(np.stack(rows), got)


@pytest.mark.parametrize("accept", ["application/vnd.safetensors", "application/x-npz"])
def test_multilayer_in_binary_bodies(serve, tiny_model_dir, jpeg_bytes, reference, accept):
    srv = serve(tiny_model_dir, backend="torch")
    r = post(srv.url, jpeg_bytes[:3], {"outputs": "multilayer,patch"}, accept)
    assert r.status_code == 200, r.text
    arrays = load_safetensors(r.content) if "safetensors" in accept else dict(np.load(io.BytesIO(r.content)))
    assert set(arrays) == {"patch_embeddings", "multilayer_embedding"}
    assert arrays["multilayer_embedding"].shape == (3, 384) and arrays["patch_embeddings"].shape == (3, 16, 192)
    assert rel_err(arrays["multilayer_embedding"], reference["multilayer"]) < 1e-4


def test_npy_cannot_hold_multilayer(serve, tiny_model_dir, jpeg_bytes):
    srv = serve(tiny_model_dir, backend="torch")
    r = post(srv.url, jpeg_bytes[:1], ML, "application/x-npy")
    assert r.status_code == 406 and r.json()["error"]["type"] == "not_acceptable"


@pytest.fixture(scope="module")
def old_graph_dir(onnx_only_dir, tmp_path_factory) -> str:
    """A directory whose model.onnx has no multilayer output, as graphs exported before it existed."""
    out = tmp_path_factory.mktemp("old_graph")
    shutil.copytree(onnx_only_dir, out, dirs_exist_ok=True)
    model = onnx.load(str(out / "model.onnx"))
    keep = [o for o in model.graph.output if o.name != "multilayer_embedding"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(out / "model.onnx"))
    return str(out)


def test_graph_without_multilayer_answers_422_and_serves_the_rest(serve, old_graph_dir, jpeg_bytes, reference):
    srv = serve(old_graph_dir, backend="onnxruntime")
    assert httpx.get(srv.url + "/info").json()["outputs"] == ["global", "patch"]
    r = post(srv.url, jpeg_bytes[:1], ML)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_parameters" and "multilayer" in error["message"]
    assert "python -m export" in error["message"] and "model.onnx" in error["message"]
    r = post(srv.url, jpeg_bytes[:3], {"outputs": "global,patch"})
    assert (
        r.status_code == 200
        and rel_err(np.array([d["embedding"] for d in r.json()["data"]]), reference["global"]) < 1e-4
    )
