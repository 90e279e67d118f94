"""The viewer page's routes and files without a browser (the page itself: test_ui.py): small,
local assets with their types, the redirect, ``--no-ui``, and a wheel that carries the files."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from service.__main__ import parse_settings
from service.settings import Settings
from service.ui import STATIC_DIR
from tests.service.helpers import REPO


def test_assets_are_small_local_and_served_with_their_types(serve, tiny_model_dir: Path) -> None:
    files = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
    assert {p.name for p in files} == {"index.html", "ui.css", "ui.js", "math.js"}
    total = sum(p.stat().st_size for p in files)
    assert total < 100_000, f"the page's assets weigh {total} bytes"
    for path in files:  # no CDN, no other origin: everything the page loads comes from this server
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
    server = serve(tiny_model_dir)
    served = 0
    for path, media in [("/ui", "text/html"), ("/ui/ui.js", "text/javascript"), ("/ui/math.js", "text/javascript"),
                        ("/ui/ui.css", "text/css")]:  # fmt: skip
        r = httpx.get(server.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), path
        assert "script-src 'self'" in r.headers["content-security-policy"]
        served += len(r.content)
    assert served == total
    missing = httpx.get(server.url + "/ui/secret.py")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert httpx.get(server.url + "/ui/..%2Fui.py").status_code == 404


def test_a_wheel_carries_the_page(tmp_path: Path) -> None:
    """The Docker image installs the project's wheel: the page must be package data in it."""
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    for package in ("jepa", "training", "export", "service"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."]
    if importlib.util.find_spec("setuptools") is not None:  # build offline with the installed setuptools
        cmd.insert(-1, "--no-build-isolation")
    subprocess.run(cmd, cwd=src, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {f"service/static/ui/{p.name}" for p in STATIC_DIR.iterdir()} <= names


def test_root_redirects_to_the_page(serve, tiny_model_dir: Path) -> None:
    server = serve(tiny_model_dir)
    r = httpx.get(server.url + "/")
    assert r.status_code == 307 and r.headers["location"] == "ui"
    page = httpx.get(server.url + "/", follow_redirects=True)
    assert page.status_code == 200 and "<title>" in page.text and str(page.url).endswith("/ui")


def test_no_ui_turns_the_page_off(serve, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_settings(["--no-ui"]).ui is False and parse_settings([]).ui is True
    monkeypatch.setenv("JEPA_UI", "false")
    assert Settings().ui is False
    server = serve(tiny_model_dir, ui=False)
    for path in ("/", "/ui", "/ui/ui.js"):
        r = httpx.get(server.url + path)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found", path
    assert httpx.get(server.url + "/health").status_code == 200
