"""An asynchronous HTTP load generator (httpx): closed-loop clients posting real JPEGs.

Each of ``concurrency`` clients sends one request, waits for the answer, and sends the next,
cycling through the images, until the time or request budget runs out. Latencies are measured
per request on the client; throughput counts images that came back with HTTP 200. With
``procs > 1`` the clients are spread over several processes, so a fast server (a GPU) is not
limited by one Python event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Samples:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    nbytes: int = 0
    ok: int = 0  # requests answered 200
    images: int = 0  # images in those requests


async def _client(
    http: httpx.AsyncClient, spec: RequestSpec, images: Sequence[bytes], start: int, stop: _Stop, out: _Samples
) -> None:
    i, k = start, spec.images_per_request
    while stop.take():
        files = [("image", (f"{j}.jpg", images[j % len(images)], "image/jpeg")) for j in range(i, i + k)]
        i += k
        t0 = time.perf_counter()
        try:
            r = await http.post(spec.url, params=spec.params, headers=spec.headers, files=files)
            key, size = str(r.status_code), len(r.content)
        except httpx.HTTPError as e:
            key, size = type(e).__name__, 0
        out.latencies.append(time.perf_counter() - t0)
        out.statuses[key] = out.statuses.get(key, 0) + 1
        if key == "200":
            out.ok += 1
            out.images += k
            out.nbytes += size


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
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
        if warmup:
            await asyncio.gather(*(_client(http, spec, images, k, _Stop(None, 1), _Samples()) for k in range(warmup)))
        out, stop = _Samples(), _Stop(duration_s, max_requests)
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(http, spec, images, k, stop, out) for k in range(concurrency)))
        return out, time.perf_counter() - t0


def _run_in_process(args: tuple) -> tuple[_Samples, float]:
    return asyncio.run(_run_async(*args))


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
        parts = [asyncio.run(_run_async(spec, images, concurrency, duration_s, max_requests, warm, timeout_s))]
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
    )
