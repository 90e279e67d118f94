"""An asynchronous HTTP load generator: closed-loop clients posting real JPEGs.

Each of ``concurrency`` clients keeps one HTTP/1.1 keep-alive connection, sends one request,
waits for the answer, and sends the next, cycling through the images, until the time or request
budget runs out. Latencies are measured per request on the client; throughput counts images that
came back with HTTP 200. With ``procs > 1`` the clients are spread over several processes, so a
fast server (a GPU) is not limited by one Python event loop.

Why not an httpx client per request: on the 2-core benchmark machine the load generator shares
the CPUs with the server it measures, and building and parsing every message with httpx took
CPU the server then lacked (more per request than the service's own event loop).
Every request of a run is one of a few fixed messages, so they are encoded once (by httpx's own
multipart encoder, so the bytes are what a real client sends) and written to the socket; answers
are read by status line and ``Content-Length`` or chunks (``_read_response``). ``client_cpu_ms``
in the result reports what the generator itself used per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import httpx
import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class RequestSpec:
    """How to send images: ``images_per_request`` files in the multipart field ``image`` to ``url``."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    images_per_request: int = 1


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    ok: int
    rejected: int  # deliberate 503s (overload)
    errors: int  # anything else that is not a 200, plus transport errors
    wall_s: float
    images_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_bytes: float
    statuses: dict[str, int]
    client_cpu_ms: float  # CPU time of the load generator per request (it shares the machine)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Samples:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    nbytes: int = 0
    ok: int = 0  # requests answered 200
    images: int = 0  # images in those requests
    cpu_s: float = 0.0  # process CPU time the timed run used


def encode_requests(spec: RequestSpec, images: Sequence[bytes]) -> list[bytes]:
    """Every distinct request of a run as raw HTTP/1.1 bytes (request ``i`` carries images ``i*k ...``)."""
    if not spec.url.startswith("http://"):
        raise ValueError(f"the load generator speaks plain HTTP/1.1 only, not {spec.url}")
    k = spec.images_per_request
    count = len(images) // math.gcd(len(images), k)  # after this many requests the cycle repeats
    out = []
    for r in range(count):
        files = [("image", (f"{j}.jpg", images[j % len(images)], "image/jpeg")) for j in range(r * k, r * k + k)]
        req = httpx.Request("POST", spec.url, params=spec.params, headers=spec.headers, files=files)
        body = req.read()
        target = req.url.raw_path.decode("ascii")
        head = [f"POST {target} HTTP/1.1", f"Host: {req.url.netloc.decode('ascii')}"]
        head += [f"{name}: {value}" for name, value in req.headers.items() if name.lower() != "host"]
        out.append(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    return out


class ProtocolError(Exception):
    """The server's answer was not the HTTP/1.1 this client reads (or the connection dropped)."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """``(status, body bytes, keep-alive)``; reads a ``Content-Length`` or chunked body to its end."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        size = int(headers["content-length"])
        await reader.readexactly(size)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        size = 0
        while chunk := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(chunk + 2)
            size += chunk
        await reader.readuntil(b"\r\n")  # no trailers expected
    else:
        raise ProtocolError("answer without Content-Length or chunked encoding")
    return int(parts[1]), size, keep_alive


async def _client(
    spec: RequestSpec, requests: Sequence[bytes], start: int, stop: _Stop, out: _Samples, timeout_s: float
) -> None:
    url = httpx.URL(spec.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    i, k = start, spec.images_per_request
    try:
        while stop.take():
            message = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(url.host, port)
                reader, writer = conn
                writer.write(message)
                status, size, keep_alive = await asyncio.wait_for(_read_response(reader), timeout_s)
                key = str(status)
                if not keep_alive:
                    writer.close()
                    conn = None
            except asyncio.TimeoutError:
                key, size = "ReadTimeout", 0
                conn = _drop(conn)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError) as e:
                key, size = type(e).__name__, 0
                conn = _drop(conn)
            out.latencies.append(time.perf_counter() - t0)
            out.statuses[key] = out.statuses.get(key, 0) + 1
            if key == "200":
                out.ok += 1
                out.images += k
                out.nbytes += size
    finally:
        _drop(conn)


def _drop(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()


class _Stop:
    """Shared budget: a deadline and/or a request count; ``take()`` is False once either is spent."""

    def __init__(self, duration_s: float | None, max_requests: int | None) -> None:
        self.deadline = time.perf_counter() + duration_s if duration_s else math.inf
        self.left = max_requests if max_requests is not None else math.inf

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def _run_async(
    spec: RequestSpec,
    images: Sequence[bytes],
    concurrency: int,
    duration_s: float | None,
    max_requests: int | None,
    warmup: int,
    timeout_s: float,
) -> tuple[_Samples, float]:
    requests = encode_requests(spec, images)
    if warmup:
        await asyncio.gather(
            *(_client(spec, requests, k, _Stop(None, 1), _Samples(), timeout_s) for k in range(warmup))
        )
    out, stop = _Samples(), _Stop(duration_s, max_requests)
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(_client(spec, requests, k, stop, out, timeout_s) for k in range(concurrency)))
    out.cpu_s = time.process_time() - cpu0
    return out, time.perf_counter() - t0


def _run_in_process(args: tuple) -> tuple[_Samples, float]:
    return _event_loop_run(_run_async(*args))


def _event_loop_run(coro: Coroutine[object, object, T]) -> T:
    """uvloop when installed (uvicorn's own fast loop; less client CPU), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_load(
    spec: RequestSpec,
    images: Sequence[bytes],
    concurrency: int,
    *,
    duration_s: float | None = 10.0,
    max_requests: int | None = None,
    warmup: int | None = None,
    procs: int = 1,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Drive the server with ``concurrency`` closed-loop clients; see the module docstring."""
    warm = min(concurrency, 8) if warmup is None else warmup
    if procs <= 1:
        parts = [_event_loop_run(_run_async(spec, images, concurrency, duration_s, max_requests, warm, timeout_s))]
    else:
        import multiprocessing

        per = [concurrency // procs + (k < concurrency % procs) for k in range(procs)]
        per = [c for c in per if c]
        budget = [None if max_requests is None else max(1, max_requests * c // concurrency) for c in per]
        jobs = [
            (spec, images, c, duration_s, b, max(1, warm // len(per)), timeout_s)
            for c, b in zip(per, budget, strict=True)
        ]
        with multiprocessing.get_context("spawn").Pool(len(per)) as pool:
            parts = pool.map(_run_in_process, jobs)
    return _summarise(concurrency, parts)


def _summarise(concurrency: int, parts: list[tuple[_Samples, float]]) -> LoadResult:
    lat = np.array([x for s, _ in parts for x in s.latencies]) * 1000.0
    statuses: dict[str, int] = {}
    for s, _ in parts:
        for k, v in s.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    ok = sum(s.ok for s, _ in parts)
    images = sum(s.images for s, _ in parts)
    wall = max(w for _, w in parts)
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: math.nan)
    return LoadResult(
        concurrency=concurrency,
        requests=int(lat.size),
        ok=ok,
        rejected=statuses.get("503", 0),
        errors=int(lat.size) - ok - statuses.get("503", 0),
        wall_s=wall,
        images_s=images / wall if wall > 0 else 0.0,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        mean_bytes=sum(s.nbytes for s, _ in parts) / ok if ok else 0.0,
        statuses=statuses,
        client_cpu_ms=1000 * sum(s.cpu_s for s, _ in parts) / lat.size if lat.size else math.nan,
    )
