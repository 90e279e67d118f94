"""End to end with a real Docker engine: `docker compose up`, embed a real photo, `docker compose down`.

Needs an engine, the Compose plugin and a built image; deploy/test_docker.sh arranges all three
(on a machine without registry access too) and runs this file with JEPA_DOCKER_IMAGE set. Without
that variable every test here skips.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.helpers import DEPLOY, REPO

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("JEPA_DOCKER_IMAGE", "")
MODEL_DIR = REPO / "models" / os.environ.get("JEPA_DOCKER_MODEL", "ijepa-vit-tiny-cifar10")
PROJECT = "jepa-embed-test"
READY_TIMEOUT_S = 180.0


def _run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Stack:
    """The compose project under test and the loopback port its service listens on."""

    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(REPO / "docker-compose.yml"), "-f", str(DEPLOY / "compose.test.yml")]
        cmd = ["docker", "compose", "--project-directory", str(REPO), "-p", PROJECT, *files, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def container(self) -> str:
        ids = self.compose("ps", "-a", "-q", "jepa").stdout.split()
        assert len(ids) == 1, f"expected one jepa container, got {ids}"
        return ids[0]

    def inspect(self, template: str) -> str:
        return _run("docker", "inspect", "--format", template, self.container()).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not IMAGE:
        pytest.skip("JEPA_DOCKER_IMAGE not set: run deploy/test_docker.sh")
    if _run("docker", "image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} not found (deploy/test_docker.sh builds it)")
    env = {**os.environ, "JEPA_IMAGE": IMAGE, "JEPA_TEST_PORT": str(_free_port())}
    stack = Stack(port=int(env["JEPA_TEST_PORT"]), env=env)
    stack.compose("down", "--remove-orphans", check=False)
    stack.compose("up", "-d", "--no-build")
    try:
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", check=False).stdout
        stack.compose("down", "--remove-orphans", "--timeout", "60", check=False)
        print(logs[-4000:])


def _wait_ready(stack: Stack) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if stack.inspect("{{.State.Status}}") == "exited":
            raise AssertionError(f"container exited before /ready: {stack.compose('logs', check=False).stdout}")
        try:
            response = httpx.get(f"{stack.url}/ready", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"/ready not 200 after {READY_TIMEOUT_S}s: {last}")


def test_image_is_torch_free_and_runs_as_non_root() -> None:
    if not IMAGE:
        pytest.skip("JEPA_DOCKER_IMAGE not set: run deploy/test_docker.sh")
    no_torch = _run("docker", "run", "--rm", "--entrypoint", "python", IMAGE, "-c", "import torch", check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    assert _run("docker", "run", "--rm", "--entrypoint", "id", IMAGE, "-u").stdout.strip() == "10001"
    ort = _run("docker", "run", "--rm", "--entrypoint", "python", IMAGE, "-c", "import onnxruntime, service")
    assert ort.returncode == 0
    size = int(_run("docker", "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"image {IMAGE}: {size / 1e6:.0f} MB")


def test_compose_serves_the_default_model_like_load_encoder(stack: Stack, photo_paths: list[Path]) -> None:
    import httpx
    from PIL import Image

    import jepa

    _wait_ready(stack)
    photo = photo_paths[0]  # a real PNG photo: no JPEG draft decoding, so both sides see the same pixels
    body = {"images": [base64.b64encode(photo.read_bytes()).decode()]}
    response = httpx.post(f"{stack.url}/embed", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served = np.asarray(response.json()["data"][0]["embedding"], dtype=np.float64)

    with Image.open(photo) as im:
        expected = jepa.load_encoder(MODEL_DIR).embed([im.convert("RGB")])["global"][0].astype(np.float64)
    cosine = served @ expected / (np.linalg.norm(served) * np.linalg.norm(expected))
    rel_err = np.abs(served - expected).max() / np.abs(expected).max()
    print(f"container vs load_encoder: cosine {cosine:.7f}, max rel err {rel_err:.2e}")
    assert served.shape == expected.shape
    assert cosine > 0.999 and rel_err < 1e-3


def test_bad_input_gets_a_json_error_not_a_crash(stack: Stack) -> None:
    import httpx

    _wait_ready(stack)
    response = httpx.post(
        f"{stack.url}/embed", content=b"not an image", headers={"content-type": "image/png"}, timeout=30
    )
    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert httpx.get(f"{stack.url}/ready", timeout=5).status_code == 200


def test_healthcheck_reports_healthy_and_metrics_are_served(stack: Stack) -> None:
    import httpx

    _wait_ready(stack)
    deadline = time.monotonic() + 60
    while stack.inspect("{{.State.Health.Status}}") != "healthy":
        assert time.monotonic() < deadline, json.loads(stack.inspect("{{json .State.Health}}"))
        time.sleep(1)
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "# TYPE" in metrics.text


def test_the_image_serves_the_viewer_page(stack: Stack) -> None:
    """The page's static files are package data in the wheel the image installs (service/ui.py)."""
    import httpx

    _wait_ready(stack)
    for path, media in [("/ui", "text/html"), ("/ui/ui.js", "text/javascript"), ("/ui/math.js", "text/javascript")]:
        response = httpx.get(stack.url + path, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(media), path


IDLE_STOP_LIMIT_S = 3.0  # an idle drain is immediate; telemetry threads doing DNS made it 5 to 10 s


def test_compose_stop_drains_and_exits_cleanly(stack: Stack) -> None:
    _wait_ready(stack)
    started = time.monotonic()
    stack.compose("stop", "--timeout", "60")
    took = time.monotonic() - started
    print(f"idle docker compose stop took {took:.2f} s")
    assert took < IDLE_STOP_LIMIT_S, f"stopping an idle container took {took:.1f} s"
    state = json.loads(stack.inspect("{{json .State}}"))
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    stack.compose("down", "--remove-orphans")
    assert stack.compose("ps", "-a", "-q").stdout.strip() == ""
