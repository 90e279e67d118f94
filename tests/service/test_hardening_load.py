"""Load: 64 concurrent clients against a real server for a bounded number of requests.

Zero errors other than deliberate 503s; every answer checked against fp32 ``embed()``; the server
alive and ready afterwards, with an empty queue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from hardening_util import metric, multipart, reference_globals, start_service

CLIENTS = 64
REQUESTS_PER_CLIENT = 4


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # Full-scale decode (no JPEG draft) so answers can be compared exactly with embed().
    srv = start_service(tiny_model_dir, tmp_path_factory.mktemp("load"), "--no-jpeg-draft")
    yield srv
    srv.stop()


async def client_loop(http: httpx.AsyncClient, k: int, jpegs: list[bytes], out: list) -> None:
    for r in range(REQUESTS_PER_CLIENT):
        # Clients send 1-3 images per request, starting at different photos.
        idx = [(k + r + j) % len(jpegs) for j in range(1 + (k + r) % 3)]
        resp = await http.post("/embed", files=multipart([jpegs[i] for i in idx]))
        out.append((idx, resp.status_code, resp.headers, resp.json()))


async def run_clients(url: str, jpegs: list[bytes]) -> list:
    out: list = []
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client_loop(http, k, jpegs, out) for k in range(CLIENTS)))
    return out


def test_64_clients_get_correct_answers_and_server_survives(server, tiny_model_dir: Path, jpeg_bytes) -> None:
    ref = reference_globals(tiny_model_dir, jpeg_bytes)
    results = asyncio.run(run_clients(server.url, jpeg_bytes))
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    statuses = [status for _, status, _, _ in results]
    assert set(statuses) <= {200, 503}, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(200) > 0
    for idx, status, headers, body in results:
        if status == 503:
            assert body["error"]["type"] in ("overloaded", "not_ready") and "retry-after" in headers
            continue
        got = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
        assert [item["index"] for item in body["data"]] == list(range(len(idx)))
        np.testing.assert_allclose(got, ref[idx], rtol=1e-4, atol=1e-4)
    assert server.proc.poll() is None
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    assert metric(server.url, "jepa_queue_depth") == 0
    ok = metric(server.url, "jepa_requests_total", 'outcome="ok"')
    assert ok == statuses.count(200)
