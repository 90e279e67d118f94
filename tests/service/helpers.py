"""Helpers the service tests import: real servers on loopback (a thread or a subprocess), ONNX
graphs from the tiny model (one poisoned to fail at run time), image encoding and error measures.
Fixtures live in conftest.py; tests import these names from here, never from a conftest."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from service.app import create_app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


class ThreadServer:
    """A real uvicorn server for ``settings`` on a free 127.0.0.1 port, run in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def metric(self, name: str, labels: str = "") -> float:
        """One sample's value from /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics").text
        for line in text.splitlines():
            if line.startswith(name + (labels and "{" + labels + "}") + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def settings_for(model: Path | str, **overrides: object) -> Settings:
    # The start-up batch probe caps batches by this machine's timings; batching tests need the cap
    # they set, so it is off here (the tests of the probe turn it on).
    base: dict[str, object] = {
        "model": str(model),
        "device": "cpu",
        "max_batch_size": 8,
        "jpeg_draft": False,
        "batch_probe": False,
    }
    return Settings(**{**base, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_subprocess(
    args: list[str], *, env: dict[str, str] | None = None, prelude: str = ""
) -> tuple[subprocess.Popen, str]:
    """``python -m service ARGS`` (after ``prelude`` code) on a free port; returns once /ready is 200."""
    port = free_port()
    code = f"{prelude}\nimport sys\nfrom service.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, *args, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def export_graph(model_dir: Path, out: Path, **options: object) -> Path:
    """The model as an ONNX graph through the project's exporter (``dtype``, ``uint8_input``)."""
    import jepa
    from export.onnx import export_onnx

    return export_onnx(jepa.load_encoder(model_dir), out, **options)


def add_poison(graph_path: Path) -> None:
    """Make the graph fail at run time when any image in the batch is (almost) all white.

    A real ONNX Runtime failure, not a mock: the per-image mean of ``pixel_values`` is reduced to
    a flag, the flag picks index 0 or 1000 of a one-element table, and ``Gather`` with index 1000
    raises inside ONNX Runtime. Normal batches multiply the global embedding by 1.0.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(graph_path))
    g = model.graph
    producer = next(n for n in g.node if "global_embedding" in n.output)
    producer.output[list(producer.output).index("global_embedding")] = "global_raw"
    for node in g.node:  # other outputs computed from the global one (multilayer) keep the raw value
        for k, name in enumerate(node.input):
            if name == "global_embedding":
                node.input[k] = "global_raw"
    g.initializer.extend([
        helper.make_tensor("poison_table", TensorProto.FLOAT, [1], [1.0]),
        helper.make_tensor("poison_threshold", TensorProto.FLOAT, [], [2.3]),
        helper.make_tensor("poison_offset", TensorProto.INT64, [], [1000]),
    ])  # fmt: skip
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
        g.initializer.append(helper.make_tensor("poison_axes", TensorProto.INT64, [3], [1, 2, 3]))
        mean = helper.make_node("ReduceMean", ["pixel_values", "poison_axes"], ["img_mean"], keepdims=0)
    else:
        mean = helper.make_node("ReduceMean", ["pixel_values"], ["img_mean"], axes=[1, 2, 3], keepdims=0)
    g.node.extend([
        mean,
        helper.make_node("ReduceMax", ["img_mean"], ["max_mean"], keepdims=0),
        helper.make_node("Greater", ["max_mean", "poison_threshold"], ["is_white"]),
        helper.make_node("Cast", ["is_white"], ["white_i64"], to=TensorProto.INT64),
        helper.make_node("Mul", ["white_i64", "poison_offset"], ["poison_index"]),
        helper.make_node("Gather", ["poison_table", "poison_index"], ["poison_scale"], axis=0),
        helper.make_node("Mul", ["global_raw", "poison_scale"], ["global_embedding"]),
    ])  # fmt: skip
    onnx.checker.check_model(model)
    onnx.save(model, str(graph_path))


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def open_bytes(data: bytes) -> Image.Image:
    """What ``embed`` would be given for these bytes: the decoded image (first frame)."""
    return Image.open(io.BytesIO(data))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())
