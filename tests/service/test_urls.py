"""URL inputs: off by default (tested in test_bad_input), allowed only for allow-listed hosts,
no redirects followed, and the size limit holds for downloads too."""

from __future__ import annotations

import http.server
import threading

import httpx
import numpy as np
import pytest

from tests.service.helpers import open_bytes, rel_err


@pytest.fixture(scope="module")
def image_host(jpeg_bytes):
    """A plain HTTP server on 127.0.0.1: /cat.jpg, /big.bin (3 MB), /moved (302 to /cat.jpg)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/cat.jpg")
                self.end_headers()
                return
            body = {"/cat.jpg": jpeg_bytes[1], "/big.bin": bytes(3_000_000)}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_fetch_with_allow_list(serve, tiny_model_dir, tiny_encoder, image_host, jpeg_bytes):
    srv = serve(tiny_model_dir, allow_url_fetch=True, url_allowlist=("127.0.0.1",), max_body_bytes=2_000_000)

    def embed(url: str) -> httpx.Response:
        return httpx.post(srv.url + "/embed", json={"images": [url]})

    r = embed(image_host + "/cat.jpg")
    assert r.status_code == 200, r.text
    ref = tiny_encoder.embed([open_bytes(jpeg_bytes[1])])["global"][0]
    assert rel_err(np.array(r.json()["data"][0]["embedding"]), ref) < 1e-4
    r = embed(image_host.replace("127.0.0.1", "localhost") + "/cat.jpg")
    assert r.status_code == 400 and "allow-list" in r.json()["error"]["message"]
    r = embed(image_host + "/moved")
    assert r.status_code == 400 and "302" in r.json()["error"]["message"]
    r = embed(image_host + "/missing.jpg")
    assert r.status_code == 400 and "404" in r.json()["error"]["message"]
    r = embed(image_host + "/big.bin")
    assert r.status_code == 413 and r.json()["error"]["index"] == 0
