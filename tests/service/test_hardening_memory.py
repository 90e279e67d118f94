"""Memory: after 10,000 small requests the server's resident memory must not keep growing.

A warm-up of 1,000 requests first fills allocator pools and caches; then 10,000 more, mixing the
body forms and output encodings, must add less than ``GROWTH_BOUND_MIB`` to the RSS. A leak of
even one patch grid per request (16 x 192 float32 = 12 KiB here) would add ~120 MiB.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from pathlib import Path

import httpx
import pytest
from hardening_util import small_jpeg, start_service

from bench.server_proc import rss_kib

WARMUP, REQUESTS, CLIENTS = 1_000, 10_000, 16
GROWTH_BOUND_MIB = 48


def request_kinds(jpeg: bytes) -> list[dict]:
    """Keyword arguments for ``httpx.post``: multipart, raw body, JSON base64; float, base64, binary."""
    b64 = base64.b64encode(jpeg).decode()
    return [
        {"files": [("image", ("a.jpg", jpeg, "image/jpeg"))]},
        {"content": jpeg, "headers": {"Content-Type": "image/jpeg"}, "params": {"outputs": "global,patch"}},
        {"json": {"images": [b64, b64], "outputs": ["global", "patch"], "encoding": "base64"}},
        {
            "files": [("image", ("a.jpg", jpeg, "image/jpeg"))],
            "params": {"outputs": "global,patch"},
            "headers": {"Accept": "application/vnd.safetensors"},
        },
        {"content": b"not an image", "headers": {"Content-Type": "image/jpeg"}},  # the error path too
    ]


async def drive(url: str, kinds: list[dict], count: int) -> dict[int, int]:
    counter = itertools.count()
    codes: dict[int, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while (i := next(counter)) < count:
            r = await http.post("/embed", **kinds[i % len(kinds)])
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return codes


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rss_does_not_grow_over_10000_requests(tiny_model_dir: Path, tmp_path: Path, photos) -> None:
    srv = start_service(tiny_model_dir, tmp_path)
    try:
        kinds = request_kinds(small_jpeg(photos[0], side=48))
        asyncio.run(drive(srv.url, kinds, WARMUP))
        before = rss_kib(srv.pid) / 1024
        codes = asyncio.run(drive(srv.url, kinds, REQUESTS))
        after = rss_kib(srv.pid) / 1024
        assert set(codes) == {200, 400}, codes
        assert codes[400] == REQUESTS // len(kinds), codes
        growth = after - before
        print(f"RSS {before:.1f} MiB -> {after:.1f} MiB after {REQUESTS} requests ({growth:+.1f} MiB)")
        assert growth < GROWTH_BOUND_MIB, f"RSS grew {growth:.1f} MiB over {REQUESTS} requests"
    finally:
        srv.stop()
