"""The README's install command (``pip install torch -e '.[onnx]'``) holds everything the start-up
build needs, so a user serving the checkpoint they have gets the fast path, not eager fp32."""

import re
from pathlib import Path

import pytest

from service.optimize import BUILD_NEEDS

ROOT = Path(__file__).resolve().parents[2]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_the_serve_install_has_what_the_start_up_build_needs():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = _names(project["dependencies"]) | _names(project["optional-dependencies"]["onnx"])
    assert "pip install torch==2.13.0 -e '.[onnx]' && python -m service" in (ROOT / "README.md").read_text()
    assert set(BUILD_NEEDS) <= installed, f"missing from base + onnx: {sorted(set(BUILD_NEEDS) - installed)}"
