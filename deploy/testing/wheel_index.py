"""Test-only: lay out a folder of wheels as a PEP 503 "simple" index, for pip inside a build.

The Dockerfile installs torch with ``--index-url $TORCH_INDEX_URL`` (PyTorch's CPU index for real
users). deploy/test_docker.sh points that at a loopback HTTP server over the folder this writes, so
the build uses the CPU wheel already on this machine instead of downloading one.

Usage: python deploy/testing/wheel_index.py WHEEL_DIR  ->  WHEEL_DIR/simple/<project>/index.html
"""

from __future__ import annotations

import html
import re
import sys
from collections import defaultdict
from pathlib import Path


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def write_index(wheel_dir: Path) -> list[str]:
    """Write ``simple/index.html`` and one page per project; return the project names."""
    projects: dict[str, list[str]] = defaultdict(list)
    for wheel in sorted(wheel_dir.glob("*.whl")):
        projects[normalize(wheel.name.split("-")[0])].append(wheel.name)
    if not projects:
        raise SystemExit(f"no wheels in {wheel_dir}")
    simple = wheel_dir / "simple"
    for project, files in projects.items():
        page = simple / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../{html.escape(f)}">{html.escape(f)}</a><br>\n' for f in files)
        page.write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    root = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{root}</body></html>\n")
    return sorted(projects)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(" ".join(write_index(Path(sys.argv[1]))))
