"""Every input form and output encoding against a real server, and parity with ``Encoder.embed``."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from service.client import AsyncJepaClient, JepaClient, ServiceError
from tests.service.helpers import ThreadServer, open_bytes, rel_err, settings_for


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ThreadServer(settings_for(tiny_model_dir, backend="torch")) as srv:
        yield srv


@pytest.fixture(scope="module")
def expected(tiny_encoder, jpeg_bytes):
    """``embed`` on the same files the tests upload: {"global": [B, D], "patch": [B, N, D]}."""
    return tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]])


def test_health_ready_info_docs(server, tiny_model_dir):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready"}
    info = httpx.get(server.url + "/info").json()
    assert info["model"] == "tiny-test" and info["dim"] == 192 and info["grid"] == [4, 4]
    assert info["backend"]["name"] == "torch" and info["backend"]["device"] == "cpu"
    assert len(info["weights_sha256"]) == 64 and info["limits"]["max_batch_size"] == 8
    assert httpx.get(server.url + "/docs").status_code == 200
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "multipart/form-data" in schema["paths"]["/embed"]["post"]["requestBody"]["content"]


def test_multipart_many_images_matches_embed(server, jpeg_bytes, expected):
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpeg_bytes[:3])]
    r = httpx.post(server.url + "/embed", files=files, params={"outputs": "global,patch"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-test" and body["dim"] == 192 and body["grid"] == [4, 4]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    patches = np.array([d["patch_embeddings"] for d in body["data"]], dtype=np.float32)
    assert rel_err(got, expected["global"]) < 1e-4
    assert patches.shape == (3, 16, 192) and rel_err(patches, expected["patch"]) < 1e-4


def test_raw_body(server, jpeg_bytes, expected):
    r = httpx.post(server.url + "/embed", content=jpeg_bytes[1], headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert rel_err(np.array(r.json()["data"][0]["embedding"]), expected["global"][1]) < 1e-4


def test_json_base64_and_data_uri(server, jpeg_bytes, expected):
    images = [
        base64.b64encode(jpeg_bytes[0]).decode(),
        "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes[2]).decode(),
    ]
    r = httpx.post(server.url + "/embed", json={"images": images, "outputs": ["global"]})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]])
    assert rel_err(got, expected["global"][[0, 2]]) < 1e-4
    assert "patch_embeddings" not in r.json()["data"][0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_base64_encoding(server, jpeg_bytes, expected, dtype):
    images = [base64.b64encode(b).decode() for b in jpeg_bytes[:2]]
    req = {"images": images, "outputs": ["global", "patch"], "encoding": "base64", "dtype": dtype}
    r = httpx.post(server.url + "/embed", json=req)
    assert r.status_code == 200, r.text
    item = r.json()["data"][1]
    emb = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f2" if dtype == "float16" else "<f4")
    patch = np.frombuffer(base64.b64decode(item["patch_embeddings"]), dtype=emb.dtype).reshape(16, 192)
    tol = 1e-4 if dtype == "float32" else 2e-3
    assert rel_err(emb.astype(np.float32), expected["global"][1]) < tol
    assert rel_err(patch.astype(np.float32), expected["patch"][1]) < tol


def test_normalize(server, jpeg_bytes, expected):
    r = httpx.post(server.url + "/embed", content=jpeg_bytes[0], headers={"Content-Type": "image/jpeg"},
                   params={"normalize": "true"})  # fmt: skip
    emb = np.array(r.json()["data"][0]["embedding"])
    assert abs(np.linalg.norm(emb) - 1) < 1e-5
    ref = expected["global"][0] / np.linalg.norm(expected["global"][0])
    assert rel_err(emb, ref) < 1e-4


def test_binary_safetensors_npz_npy(server, jpeg_bytes, expected):
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpeg_bytes[:3])]
    url = server.url + "/embed"
    r = httpx.post(
        url, files=files, params={"outputs": "global,patch"}, headers={"Accept": "application/vnd.safetensors"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.safetensors"
    arrays = load_safetensors(r.content)
    assert arrays["embedding"].shape == (3, 192) and arrays["patch_embeddings"].shape == (3, 16, 192)
    assert rel_err(arrays["embedding"], expected["global"]) < 1e-4
    assert rel_err(arrays["patch_embeddings"], expected["patch"]) < 1e-4
    r_meta = httpx.post(url, files=files, headers={"Accept": "application/vnd.safetensors"})
    header_len = int.from_bytes(r_meta.content[:8], "little")  # safetensors: u64 header size, JSON header
    meta = json.loads(r_meta.content[8 : 8 + header_len])["__metadata__"]
    assert meta["model"] == "tiny-test" and meta["grid"] == "4,4"

    r = httpx.post(url, files=files, params={"outputs": "global,patch"}, headers={"Accept": "application/x-npz"})
    npz = np.load(io.BytesIO(r.content))
    assert rel_err(npz["patch_embeddings"], expected["patch"]) < 1e-4

    r = httpx.post(url, files=files, params={"dtype": "float16"}, headers={"Accept": "application/x-npy"})
    arr = np.load(io.BytesIO(r.content))
    assert arr.dtype == np.float16 and arr.shape == (3, 192)
    assert rel_err(arr.astype(np.float32), expected["global"]) < 2e-3

    r = httpx.post(url, files=files, params={"outputs": "global,patch"}, headers={"Accept": "application/x-npy"})
    assert r.status_code == 406 and r.json()["error"]["type"] == "not_acceptable"


def test_client_sync_and_async(server, jpeg_bytes, photo_paths, tiny_encoder, photos, expected):
    with JepaClient(server.url) as client:
        emb = client.embed(jpeg_bytes[:3])
        assert emb.shape == (3, 192) and rel_err(emb, expected["global"]) < 1e-4
        pooled, patch = client.embed(photo_paths[:2], patches=True)
        ref = tiny_encoder.embed([open_bytes(p.read_bytes()) for p in photo_paths[:2]])
        assert rel_err(pooled, ref["global"]) < 1e-4 and rel_err(patch, ref["patch"]) < 1e-4
        single = client.embed(photos[0])  # a PIL image, sent as PNG
        assert single.shape == (1, 192) and rel_err(single, tiny_encoder.embed([photos[0]])["global"]) < 1e-4
        with pytest.raises(ServiceError) as err:
            client.embed([b"not an image"])
        assert err.value.status == 400 and err.value.index == 0

    async def go() -> np.ndarray:
        async with AsyncJepaClient(server.url) as client:
            return await client.embed(jpeg_bytes[:3])

    assert rel_err(asyncio.run(go()), expected["global"]) < 1e-4


@pytest.mark.parametrize("outputs", [("global",), ("global", "multilayer"), ("global", "patch", "multilayer")])
def test_client_embeddings_returns_every_output_asked_for_by_name(server, jpeg_bytes, tiny_encoder, outputs):
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:2]], outputs=outputs)
    with JepaClient(server.url) as client:
        result = client.embeddings(jpeg_bytes[:2], outputs)
    assert result.present() == frozenset(outputs)
    for name in outputs:
        assert rel_err(result.get(name), ref[name]) < 1e-4

    async def go():
        async with AsyncJepaClient(server.url) as client:
            return await client.embeddings(jpeg_bytes[:2], outputs)

    assert asyncio.run(go()).present() == frozenset(outputs)


@pytest.mark.parametrize("outputs", [("patch",), ("global", "tokens"), ()])
def test_client_refuses_outputs_the_service_has_not(outputs):
    with JepaClient("http://127.0.0.1:9") as client, pytest.raises(ValueError, match="outputs must include"):
        client.embeddings([b"x"], outputs)


def test_metrics_count_requests_images_and_stages(server, jpeg_bytes):
    before = server.metric("jepa_images_total", 'outcome="ok"')
    files = [("image", ("a.jpg", jpeg_bytes[0], "image/jpeg"))] * 2
    assert httpx.post(server.url + "/embed", files=files).status_code == 200
    assert server.metric("jepa_images_total", 'outcome="ok"') == before + 2
    text = httpx.get(server.url + "/metrics").text
    for stage in ("decode", "queue", "inference", "encode"):
        assert f'jepa_stage_seconds_count{{stage="{stage}"}}' in text
    assert "jepa_request_seconds_bucket" in text and "jepa_queue_depth" in text
    assert 'jepa_model_info{backend="torch"' in text
