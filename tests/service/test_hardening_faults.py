"""Faults: an inference error fails only its batch; a client that leaves mid-request leaves no work
behind; a pathological image's decode is cut off by the decode timeout. The server keeps serving."""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
from faulty_graph import write_faulty_graph
from hardening_util import metric, multipart, small_jpeg, start_service
from PIL import Image


def white_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 255, 255)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def faulty_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnxruntime")  # only the tests on this server need them
    pytest.importorskip("onnx")
    tmp = tmp_path_factory.mktemp("faulty")
    model = tmp / "model"
    shutil.copytree(tiny_model_dir, model)
    write_faulty_graph(model / "model.faulty.onnx", image_size=32, patch=8, dim=192)
    args = ("--backend", "onnxruntime", "--onnx-file", "model.faulty.onnx", "--max-batch-size", "1")
    srv = start_service(model, tmp, *args)
    yield srv
    srv.stop()


def test_inference_error_fails_only_its_batch(faulty_server, photos) -> None:
    good = small_jpeg(photos[0])
    with httpx.Client(base_url=faulty_server.url, timeout=60) as client:
        assert client.post("/embed", files=multipart([good])).status_code == 200
        r = client.post("/embed", files=multipart([white_jpeg()]))
        assert r.status_code == 500 and r.json()["error"]["type"] == "inference_error", r.text
        assert client.post("/embed", files=multipart([good])).status_code == 200
        assert client.get("/ready").status_code == 200  # an ordinary error latches nothing


def test_poisoned_batch_among_concurrent_good_ones(faulty_server, photos) -> None:
    goods = [small_jpeg(p) for p in photos]

    async def run() -> list[tuple[str, int]]:
        async with httpx.AsyncClient(base_url=faulty_server.url, timeout=60) as http:
            bodies = [("good", g) for g in goods * 3] + [("poison", white_jpeg())]

            async def one(kind: str, body: bytes) -> tuple[str, int]:
                return kind, (await http.post("/embed", files=multipart([body]))).status_code

            return await asyncio.gather(*(one(k, b) for k, b in bodies))

    results = asyncio.run(run())
    assert [code for kind, code in results if kind == "poison"] == [500]
    assert all(code == 200 for kind, code in results if kind == "good"), results


@pytest.fixture(scope="module")
def slow_batch_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # Batches wait up to 1.5 s to fill, so requests sit in the queue long enough for clients to leave.
    srv = start_service(
        tiny_model_dir, tmp_path_factory.mktemp("disconnect"), "--max-wait-ms", "1500", "--no-batch-probe"
    )
    yield srv
    srv.stop()


def raw_request(port: int, jpeg: bytes) -> socket.socket:
    """Send one complete multipart POST /embed on a raw socket and return it unread."""
    boundary = "hardeningboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + body)
    return sock


def test_client_disconnect_leaves_no_stuck_work(slow_batch_server, photos) -> None:
    url, jpeg = slow_batch_server.url, small_jpeg(photos[1])
    socks = [raw_request(slow_batch_server.port, jpeg) for _ in range(8)]
    deadline = time.monotonic() + 10
    while metric(url, "jepa_queue_depth") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(url, "jepa_queue_depth") >= 1, "requests never reached the queue"
    for s in socks:
        s.close()  # the clients leave while their images wait for a batch
    deadline = time.monotonic() + 10
    while metric(url, "jepa_requests_total", 'outcome="client_closed"') < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(url, "jepa_requests_total", 'outcome="client_closed"') == 8
    time.sleep(2.0)  # longer than max_wait: the batch those images were in has had its chance to run
    assert metric(url, "jepa_queue_depth") == 0
    assert metric(url, "jepa_batch_size_sum") == 0, "images of clients that left were still run"
    t0 = time.monotonic()
    r = httpx.post(url + "/embed", files=multipart([jpeg]), timeout=30)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 10
    assert httpx.get(url + "/ready", timeout=10).status_code == 200


def slow_png(side: int = 6000) -> bytes:
    """A small file that takes long to decode: a flat 36 MP PNG (under the 40 MP limit), deflated."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def test_slow_decode_is_cut_off_by_the_timeout(tiny_model_dir: Path, tmp_path: Path, photos) -> None:
    srv = start_service(tiny_model_dir, tmp_path, "--decode-timeout-s", "0.05")
    try:
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/embed", content=slow_png(), headers={"Content-Type": "image/png"}, timeout=60)
        elapsed = time.monotonic() - t0
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_image" and "longer than" in r.json()["error"]["message"]
        assert elapsed < 10
        ok = httpx.post(srv.url + "/embed", files=multipart([small_jpeg(photos[0])]), timeout=60)
        assert ok.status_code == 200, ok.text
        assert httpx.get(srv.url + "/ready", timeout=10).status_code == 200
    finally:
        srv.stop()
