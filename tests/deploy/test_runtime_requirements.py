"""deploy/requirements-runtime.txt must stay pyproject.toml's dependencies minus torch.

The service image installs the project's wheel with --no-deps plus this file, so a dependency added
to pyproject.toml but not here would be missing from the image (and torch must never get in).
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import DEPLOY, REPO, read_pyproject


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


def _optional_imports(tree: ast.AST) -> set[int]:
    """ids of the import statements inside a ``try`` that catches ImportError: optional imports
    with a fallback or a clear error (scikit-image's photos in jepa/photos.py; OpenVINO in
    service/backends/openvino.py, which the image does not install), safe where the module is missing."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            imports = (n for stmt in node.body for n in ast.walk(stmt))
            guarded |= {id(n) for n in imports if isinstance(n, (ast.Import, ast.ImportFrom))}
    return guarded


def _third_party_imports(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level modules imported anywhere in ``packages`` (lazy imports too, optional ones not)
    -> files importing them."""
    found: dict[str, set[str]] = {}
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            optional = _optional_imports(tree)
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {n.split(".")[0] for n in names}:
                    if top not in sys.stdlib_module_names and top not in (*packages, "__future__"):
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _with_dependencies(names: set[str]) -> set[str]:
    """``names`` plus everything they require (per installed metadata), canonicalised."""
    todo, seen = [canonicalize_name(n) for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_every_import_of_the_served_packages_is_installed_in_the_image() -> None:
    """The image installs the wheel with --no-deps: a module that jepa/ or service/ imports but no
    listed requirement provides would be missing there (torch, and torchvision for GPU decode, may
    only be imported lazily)."""
    provided = _with_dependencies({r.name for r in _requirements_file()} | {"onnxruntime"})
    distributions = metadata.packages_distributions()
    missing = {}
    for module, files in _third_party_imports(("jepa", "service")).items():
        dists = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not dists & (provided | {"torch", "torchvision"}):  # torchvision: --gpu-decode, torch on CUDA only
            missing[module] = sorted(files)
    assert missing == {}, f"imported but not in deploy/requirements-runtime.txt (nor pyproject.toml): {missing}"
