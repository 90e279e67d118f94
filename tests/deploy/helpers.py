"""Helpers for the deployment checks: repository paths, YAML loading, and finding CLI tools."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_DIR = DEPLOY / "k8s"


def load_yaml(path: Path) -> Any:
    import yaml

    with path.open() as f:
        return yaml.safe_load(f)


def read_pyproject() -> dict[str, Any]:
    """pyproject.toml as a dict (tomllib on 3.11+, else tomli, which pytest itself needs on 3.10)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def find_tool(name: str, env_var: str | None = None) -> str | None:
    """An executable from ``env_var``, the running interpreter's bin folder, or PATH (in that order)."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def settings_fields() -> set[str]:
    """The service's setting names (``JEPA_<NAME>``), or skip until the service package exists."""
    settings = pytest.importorskip("service.settings", reason="service.settings not in this checkout")
    return {name.upper() for name in settings.Settings.model_fields}
