"""The access log: one line per request with method, path, status, images, bytes, ms and request
id; plain by default, JSON lines with ``--access-log json``; never the image bytes or the API key."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import httpx
import pytest
from hardening_util import start_service

from tests.service.helpers import ThreadServer, encode, settings_for

SECRET = "s3cret-key-that-must-not-be-logged"
PLAIN = re.compile(
    r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) images=(?P<images>\d+) in=(?P<bytes_in>\d+) "
    r"out=(?P<bytes_out>\d+) ms=(?P<ms>[\d.]+) client=(?P<client>\S+) id=(?P<request_id>\S+)"
)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    with ThreadServer(settings_for(tiny_model_dir, backend="torch", api_key=SECRET)) as srv:
        yield srv


@pytest.fixture(scope="module")
def jpeg(photos) -> bytes:
    return encode(photos[1].resize((40, 40)), "JPEG")


def send_mix(url: str, jpeg: bytes, api_key: str) -> list[httpx.Response]:
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, timeout=60) as client:
        one_jpeg = [("image", ("a.jpg", jpeg, "image/jpeg"))]
        return [
            client.post("/embed", files=one_jpeg * 2, headers={**auth, "X-Request-ID": "trace-42"}),
            client.post("/embed", content=jpeg, headers={**auth, "Content-Type": "image/jpeg"},
                        params={"normalize": "true"}),
            client.post("/embed", content=b"not an image", headers={**auth, "Content-Type": "image/png"}),
            client.post("/embed", content=jpeg,
                        headers={"Content-Type": "image/jpeg", "X-Request-ID": "bad id; drop table"}),
            client.get("/health"),
        ]  # fmt: skip


def check_lines(fields: list[dict], responses: list[httpx.Response], jpeg: bytes) -> None:
    assert [(f["method"], f["path"], int(f["status"])) for f in fields] == [
        ("POST", "/embed", 200), ("POST", "/embed", 200), ("POST", "/embed", 400), ("POST", "/embed", 401),
        ("GET", "/health", 200),
    ]  # fmt: skip
    assert [int(f["images"]) for f in fields] == [2, 1, 1, 0, 0]
    assert int(fields[1]["bytes_in"]) == len(jpeg) and int(fields[0]["bytes_in"]) > 2 * len(jpeg)
    for f, r in zip(fields, responses, strict=True):
        assert int(f["bytes_out"]) == len(r.content)
        assert f["request_id"] == r.headers["x-request-id"]
        assert float(f["ms"]) >= 0
    assert fields[0]["request_id"] == "trace-42"  # the client's own id, kept
    assert re.fullmatch(r"[0-9a-f]{32}", fields[3]["request_id"])  # a malformed one is replaced
    assert len({f["request_id"] for f in fields}) == len(fields)


def test_plain_access_log_has_one_line_per_request(server, jpeg: bytes, caplog) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    responses = send_mix(server.url, jpeg, SECRET)
    lines = [r.getMessage() for r in caplog.records if r.name == "service.access"]
    fields = [PLAIN.fullmatch(line).groupdict() for line in lines]
    check_lines(fields, responses, jpeg)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text and "Bearer" not in text
    assert base64.b64encode(jpeg[:24]).decode()[:16] not in text and "JFIF" not in text
    assert "normalize" not in text  # the path only, never the query string


def test_json_access_log_lines_on_stdout(tiny_model_dir: Path, tmp_path: Path, jpeg: bytes) -> None:
    srv = start_service(tiny_model_dir, tmp_path, "--log-level", "info", "--access-log", "json", name="json")
    try:
        responses = send_mix(srv.url, jpeg, "")
    finally:
        srv.stop()
    out = (tmp_path / "json.log").read_text()
    objects = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    embeds_and_health = [o for o in objects if o["path"] in ("/embed", "/health") and o["request_id"] != "-"]
    # the readiness polls of ServerProcess come first; the last five lines are ours
    fields = embeds_and_health[-5:]
    names = {"method", "path", "status", "images", "bytes_in", "bytes_out", "ms", "client", "request_id"}
    assert set(fields[0]) == names
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 400, 200, 200]  # no API key on this server
    for f, r in zip(fields, responses, strict=True):
        assert f["status"] == r.status_code and f["request_id"] == r.headers["x-request-id"]
    assert [f["images"] for f in fields] == [2, 1, 1, 1, 0]


def test_access_log_off(tiny_model_dir: Path, jpeg: bytes, caplog) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    with ThreadServer(settings_for(tiny_model_dir, backend="torch", access_log="off")) as srv:
        r = httpx.post(srv.url + "/embed", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and "x-request-id" not in r.headers
    assert not [rec for rec in caplog.records if rec.name == "service.access"]
