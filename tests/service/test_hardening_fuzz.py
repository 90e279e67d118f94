"""Fuzzing a real server: schemathesis against its own OpenAPI schema, and a corpus of broken images.

Every answer must be a documented status with a body matching the schema (never a 500), and the
server must still be alive and ready afterwards.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import httpx
import pytest
from hardening_util import start_service

MAX_EXAMPLES = 25  # per operation; bounded so the test stays fast


def checks() -> list:
    """No 500s and no response that breaks the schema. Not "positive data acceptance": the schema
    cannot say that a string must hold a decodable image, so a schema-valid request may rightly get
    a 400. Imported here, so only the schemathesis tests skip where it is not installed."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = start_service(tiny_model_dir, tmp_path_factory.mktemp("fuzz"), "--max-images-per-request", "4")
    yield srv
    srv.stop()


def operations(url: str) -> list:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def fuzz_operation(op, url: str) -> dict[int, int]:
    """Run ``MAX_EXAMPLES`` generated requests; each is checked against the schema (500s included)."""
    from hypothesis import HealthCheck, given, settings

    seen: dict[int, int] = {}
    checked = checks()

    @given(op.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:
        response = case.call(base_url=url, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=checked)

    run()
    return seen


def test_schema_lists_every_route(server) -> None:
    paths = {(op.method.upper(), op.path) for op in operations(server.url)}
    for route in (("POST", "/embed"), ("GET", "/health"), ("GET", "/ready"), ("GET", "/info"), ("GET", "/metrics")):
        assert route in paths


@pytest.mark.parametrize(
    "route",
    ["POST /embed", "GET /health", "GET /ready", "GET /info", "GET /metrics"],
)
def test_schemathesis_finds_no_500_and_no_schema_violation(server, route: str) -> None:
    method, path = route.split()
    (op,) = [op for op in operations(server.url) if op.method.upper() == method and op.path == path]
    seen = fuzz_operation(op, server.url)
    assert not any(code >= 500 for code in seen), seen
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200


def broken_corpus(jpeg: bytes, png: bytes, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """Truncations at every 10% of a JPEG and a PNG, and random byte flips of each."""
    rng = random.Random(seed)
    out = []
    for name, data, mime in (("jpeg", jpeg, "image/jpeg"), ("png", png, "image/png")):
        out += [(f"{name} cut at {p}%", data[: len(data) * p // 100], mime) for p in range(0, 100, 10)]
        for k in range(8):
            flipped = bytearray(data)
            for _ in range(1 + k * 4):
                pos = rng.randrange(len(flipped))
                flipped[pos] ^= 1 << rng.randrange(8)
            out.append((f"{name} with {1 + k * 4} flipped bits #{k}", bytes(flipped), mime))
    return out


def test_malformed_images_never_crash_or_hang(server, photos) -> None:
    jpeg, png = io.BytesIO(), io.BytesIO()
    photos[0].save(jpeg, format="JPEG", quality=90)
    photos[1].save(png, format="PNG")
    allowed = {200, 400, 413, 415, 422}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for label, body, mime in broken_corpus(jpeg.getvalue(), png.getvalue()):
            r = client.post("/embed", content=body, headers={"Content-Type": mime})
            assert r.status_code in allowed, (label, r.status_code, r.text[:300])
            if r.status_code != 200:
                assert r.json()["error"]["type"], label
            # multipart too: the same bytes as one file among good ones fails only that index
            files = [("image", ("ok.jpg", jpeg.getvalue(), "image/jpeg")), ("image", ("bad", body, mime))]
            r = client.post("/embed", files=files)
            assert r.status_code in allowed, (label, r.status_code, r.text[:300])
            if r.status_code == 400:
                assert r.json()["error"].get("index") == 1, (label, r.text[:300])
    assert server.proc.poll() is None
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
