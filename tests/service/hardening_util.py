"""Helpers for the hardening tests (test_hardening_*.py): a real service process and real images.

Each test module starts ``python -m service`` on a loopback port with the settings it needs
(:class:`bench.server_proc.ServerProcess`), so signals, crashes and memory are those of a real
process. Nothing of the service is mocked; faults come from real inputs or real model files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.server_proc import ServerProcess

QUIET = ("--log-level", "warning")


def start_service(model: Path, tmp: Path, *args: str, name: str = "service") -> ServerProcess:
    """A started service on ``model``; its log goes to ``tmp/<name>.log`` (shown if it fails to start)."""
    return ServerProcess(["--model", str(model), *QUIET, *args], log_path=tmp / f"{name}.log").start()


def multipart(images: Sequence[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]


def reference_globals(model: Path, jpegs: Sequence[bytes]) -> np.ndarray:
    """fp32 ``load_encoder(model).embed`` global embeddings ``[B, D]`` of the JPEG files."""
    import jepa

    return jepa.load_encoder(model).embed([Image.open(io.BytesIO(b)) for b in jpegs])["global"]


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample of the service's Prometheus text (0 when the series does not exist yet)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    key = name + (f"{{{labels}}}" if labels else "")
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def metric_matching(url: str, name: str, label_part: str) -> float:
    """Sum of the series of ``name`` whose labels contain ``label_part`` (e.g. ``overloaded``)."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and label_part in line.split("}")[0]:
            total += float(line.split()[-1])
    return total


def small_jpeg(photo: Image.Image, side: int = 64, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    photo.resize((side, side)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
