"""Shutdown: SIGTERM in the middle of load. Every request that was accepted gets its answer (200),
new ones are refused (503, or the connection is refused once the listener closed), no request
sees a dropped connection, and the process exits 0 in bounded time."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from hardening_util import metric, multipart, small_jpeg, start_service

CLIENTS = 16


async def one(http: httpx.AsyncClient, files) -> int | str:
    try:
        return (await http.post("/embed", files=files)).status_code
    except httpx.HTTPError as e:
        return type(e).__name__


async def late_request(url: str, files) -> int | str:
    """A request sent after the signal: must not be accepted. Once the drain is over, uvicorn closes
    the listener (connection refused) and any connection whose request it has not started reading
    (closed unanswered: the request was never taken, the same refusal a moment later; seen once
    in a full-suite run on 2 busy cores)."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            return (await http.post("/embed", files=files)).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return "refused"


async def load_then_sigterm(srv, files) -> tuple[list, float, int | str]:
    async with httpx.AsyncClient(base_url=srv.url, timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        tasks = [asyncio.create_task(one(http, files)) for _ in range(CLIENTS)]
        deadline = time.monotonic() + 20
        while (queued := metric(srv.url, "jepa_queue_depth")) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        srv.proc.send_signal(signal.SIGTERM)
        late = await late_request(srv.url, files)
        return await asyncio.gather(*tasks), queued, late


def test_sigterm_mid_load_answers_accepted_refuses_new_and_exits(tiny_model_dir: Path, tmp_path: Path, photos):
    # Batches wait up to 1 s to fill (up to 32: no batch probe lowering the cap), so the signal
    # arrives while accepted images are still queued.
    args = ("--max-wait-ms", "1000", "--drain-timeout-s", "20", "--no-batch-probe")
    srv = start_service(tiny_model_dir, tmp_path, *args)
    try:
        files = multipart([small_jpeg(photos[2])])
        results, queued_at_signal, late = asyncio.run(load_then_sigterm(srv, files))
        assert queued_at_signal >= 4, "the load never queued; the test did not exercise a drain"
        assert late in (503, "refused"), late
        assert set(results) <= {200, 503}, results  # no reset connections, no 500s
        assert results.count(200) >= queued_at_signal, results  # every image queued at the signal was answered
        t0 = time.monotonic()
        code = srv.proc.wait(timeout=30)
        assert code == 0, f"exit code {code}"
        assert time.monotonic() - t0 < 30
    finally:
        srv.stop()
    log = (tmp_path / "service.log").read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_exits_promptly_on_signal(tiny_model_dir: Path, tmp_path: Path, sig) -> None:
    srv = start_service(tiny_model_dir, tmp_path)
    t0 = time.monotonic()
    srv.proc.send_signal(sig)
    assert srv.proc.wait(timeout=30) == 0
    assert time.monotonic() - t0 < 15
