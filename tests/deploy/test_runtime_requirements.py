"""deploy/requirements-runtime.txt must stay pyproject.toml's dependencies minus torch.

The service image installs the project's wheel with --no-deps plus this file, so a dependency added
to pyproject.toml but not here would be missing from the image (and torch must never get in).
"""

from __future__ import annotations

from packaging.requirements import Requirement

from tests.deploy.conftest import DEPLOY, read_pyproject


def _requirements_file() -> list[Requirement]:
    lines = (DEPLOY / "requirements-runtime.txt").read_text().splitlines()
    return [Requirement(line) for line in (raw.split("#", 1)[0].strip() for raw in lines) if line]


def test_runtime_requirements_are_pyproject_dependencies_minus_torch() -> None:
    project = [Requirement(r) for r in read_pyproject()["project"]["dependencies"]]
    expected = {str(r) for r in project if r.name != "torch"}
    assert any(r.name == "torch" for r in project), "pyproject.toml no longer lists torch: update this test"
    assert {str(r) for r in _requirements_file()} == expected


def test_runtime_requirements_have_no_torch_and_no_onnxruntime() -> None:
    names = {r.name.lower() for r in _requirements_file()}
    assert "torch" not in names
    # ONNX Runtime comes from the Dockerfile's ORT_PACKAGE (CPU or GPU build, never both).
    assert not {n for n in names if n.startswith("onnxruntime")}
