"""Overload: a queue far smaller than the offered load. Excess requests get 503 with Retry-After at
once (without waiting for inference); every request that was accepted succeeds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from hardening_util import metric_matching, multipart, start_service

CLIENTS = 48


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # A queue of 4 images, and batches that wait 300 ms to fill: while a batch forms, the queue is
    # full after one 4-image request, so nearly every concurrent request must be turned away.
    args = ("--max-queue", "4", "--max-images-per-request", "4", "--max-wait-ms", "300", "--max-batch-size", "64")
    args += ("--no-batch-probe",)  # batches wait to fill up to 64: the queue limit is what is tested
    srv = start_service(tiny_model_dir, tmp_path_factory.mktemp("overload"), *args)
    yield srv
    srv.stop()


async def one(http: httpx.AsyncClient, files) -> tuple[int, float, httpx.Headers, dict]:
    t0 = time.perf_counter()
    r = await http.post("/embed", files=files)
    return r.status_code, time.perf_counter() - t0, r.headers, r.json()


async def burst(url: str, files) -> list:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=CLIENTS)) as http:
        return await asyncio.gather(*(one(http, files) for _ in range(CLIENTS)))


def test_excess_gets_503_with_retry_after_and_accepted_succeed(server, jpeg_bytes) -> None:
    files = multipart(jpeg_bytes[:4])
    results = asyncio.run(burst(server.url, files))
    codes = [code for code, _, _, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= CLIENTS // 2, codes
    assert codes.count(200) >= 1, codes
    for code, _, headers, body in results:
        if code == 503:
            assert body["error"]["type"] == "overloaded"
            assert int(headers["retry-after"]) >= 0
        else:
            assert len(body["data"]) == 4 and all(len(d["embedding"]) == body["dim"] for d in body["data"])
    # Turned away at admission: a 503 never waits for a batch (which itself waits 300 ms to fill).
    rejected = sorted(t for code, t, _, _ in results if code == 503)
    accepted = sorted(t for code, t, _, _ in results if code == 200)
    assert rejected[len(rejected) // 2] < accepted[-1]
    assert metric_matching(server.url, "jepa_requests_total", "overloaded") == codes.count(503)
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    # Once the burst is over, a request is accepted again.
    assert httpx.post(server.url + "/embed", files=files, timeout=60).status_code == 200


def test_refused_before_decoding(server, jpeg_bytes) -> None:
    """Room is reserved before a request is decoded, so a refused request costs no decode: the
    burst's 503s add nothing to the decode count (which only admitted requests increase)."""
    decoded = metric_matching(server.url, "jepa_stage_seconds_count", 'stage="decode"')
    ok = metric_matching(server.url, "jepa_requests_total", 'outcome="ok"')
    results = asyncio.run(burst(server.url, multipart(jpeg_bytes[:4])))
    codes = [code for code, _, _, _ in results]
    assert codes.count(503) >= CLIENTS // 2, codes
    accepted = metric_matching(server.url, "jepa_requests_total", 'outcome="ok"') - ok
    assert accepted == codes.count(200)
    assert metric_matching(server.url, "jepa_stage_seconds_count", 'stage="decode"') - decoded == accepted
