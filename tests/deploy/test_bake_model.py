"""The Dockerfile's BAKE_MODEL path without Docker: the export stage's own RUN line, run by sh with
the build args as its environment, against a loopback stand-in Hub (no hub is reachable from
builds here). Paths under / are moved into a temporary folder; everything else is the line as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO
from tests.jepa.hub_standin import StandIn


def export_stage_run_line() -> str:
    """The export stage's RUN that calls ``python -m export``, continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("RUN") and "-m export" in line]
    assert len(lines) == 1, lines
    return lines[0].removeprefix("RUN ").strip()


def run_line(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    line = re.sub(r"(?<=[\s\"])/models", f"{tmp_path}/models", export_stage_run_line())
    line = line.replace("/tmp/hf", f"{tmp_path}/hf")
    bin_dir = Path(sys.executable).parent  # `python` in the line is the project's interpreter, as in the image
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, **env}
    full["PATH"] = f"{bin_dir}:{full['PATH']}"
    return subprocess.run(["sh", "-c", line], cwd=REPO, env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bake_model_downloads_and_exports_the_named_model(tmp_path, tiny_model_dir):
    hub = StandIn().start()
    try:
        files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.suffix in (".json", ".safetensors")}
        repo = hub.add_repo("someone/jepa-tiny", files)
        env = {"BAKE_MODEL": "someone/jepa-tiny", "DEFAULT_MODEL": "baked", "EXPORT_FLAGS": "",
               "HF_ENDPOINT": hub.endpoint}  # fmt: skip
        r = run_line(tmp_path, env)
    finally:
        hub.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "models" / "baked"
    assert (out / "model.onnx").is_file() and not (tmp_path / "hf").exists()  # the cache is not kept
    config = json.loads((out / "config.json").read_text())
    assert config["provenance"]["source"] == f"hf:someone/jepa-tiny@{repo.commit}"


def test_without_bake_model_the_line_exports_the_context_directory_and_needs_no_network():
    line = export_stage_run_line()
    assert '"${BAKE_MODEL:-models/${DEFAULT_MODEL}}"' in line
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ARG BAKE_MODEL=""' in dockerfile and "COPY models/ /src/models/" in dockerfile
