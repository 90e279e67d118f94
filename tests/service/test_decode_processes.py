"""``--decode-processes``: decoding in worker processes gives the threads' pixels exactly, names
bad images the same way, and survives a worker that dies."""

from __future__ import annotations

import os
import signal

import httpx
import numpy as np

from tests.service.helpers import open_bytes


def post(url: str, blobs: list[bytes]) -> httpx.Response:
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    return httpx.post(url + "/embed", files=files, timeout=60)


def embeddings(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]])


def test_processes_match_threads_and_name_bad_images(serve, tiny_model_dir, jpeg_bytes):
    threads = serve(tiny_model_dir, dtype="float32", backend="torch")
    procs = serve(tiny_model_dir, dtype="float32", backend="torch", decode_processes=2)
    assert httpx.get(procs.url + "/info").json()["limits"]["decode_processes"] == 2
    np.testing.assert_array_equal(embeddings(post(procs.url, jpeg_bytes)), embeddings(post(threads.url, jpeg_bytes)))
    r = post(procs.url, [jpeg_bytes[0], jpeg_bytes[1][: len(jpeg_bytes[1]) // 2]])
    assert r.status_code == 400 and r.json()["error"]["index"] == 1, r.text
    assert "truncated or corrupt" in r.json()["error"]["message"]


def test_a_dead_worker_is_replaced(serve, tiny_model_dir, jpeg_bytes, tiny_encoder):
    srv = serve(tiny_model_dir, dtype="float32", backend="torch", decode_processes=2)
    decoder = srv.app.state.jepa.decode_processes
    before = decoder.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)  # what a decoder crash or the OOM killer does
    got = embeddings(post(srv.url, jpeg_bytes[:2]))  # broken pool noticed, replaced, image retried
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:2]])["global"]
    assert np.abs(got - ref).max() < 1e-4
    assert not set(decoder.worker_pids()) & set(before)
