"""deploy/healthcheck.py (the image's HEALTHCHECK) against a real HTTP server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.helpers import DEPLOY


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/ready" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _probe(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JEPA_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")], env=env, capture_output=True, text=True, timeout=30
    )


def test_healthy_when_ready_answers_200(server: ThreadingHTTPServer) -> None:
    _Ready.status = 200
    assert _probe(server.server_address[1]).returncode == 0


def test_unhealthy_when_ready_answers_503(server: ThreadingHTTPServer) -> None:
    _Ready.status = 503
    result = _probe(server.server_address[1])
    assert result.returncode == 1 and "503" in result.stderr


def test_unhealthy_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _probe(port)  # the port is closed again: connection refused
    assert result.returncode == 1 and "/ready" in result.stderr
