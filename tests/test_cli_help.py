"""Every command-line entry point answers ``--help`` with its usage and exit status 0.

``python -m service --help`` once crashed inside argparse (a ``%`` in a setting's description), and
the README sends new users there first. Each CLI's ``main`` is called in-process with ``--help``;
the service and the console scripts declared in pyproject.toml also run as real processes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# module -> the word its usage line must contain
CLIS = {
    "service.__main__": "jepa-serve",
    "export.__main__": "usage:",
    "training.pretrain": "usage:",
    "training.evaluate": "usage:",
    "service.engine_trial": "usage:",
    "bench.ceiling": "usage:",
    "bench.cpu_engines": "usage:",
    "bench.decode_bench": "usage:",
    "bench.export_bench": "usage:",
    "bench.gil_bench": "usage:",
    "bench.gpu_bench": "usage:",
    "bench.naive_server": "usage:",
    "bench.pyspy": "usage:",
    "bench.serve_bench": "usage:",
    "bench.train_throughput": "usage:",
    "bench.video_bench": "usage:",
    "bench.video_seek_bench": "usage:",
}


@pytest.mark.parametrize("module", sorted(CLIS))
def test_main_help_prints_usage_and_exits_0(module: str, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [module, "--help"])  # for a main() that reads sys.argv itself
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"]) if main.__code__.co_argcount else main()
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and CLIS[module] in out, out[:300]
    assert "--help" in out


def test_healthcheck_help_does_not_probe() -> None:
    """The container probe is a script run by path; --help must not try to connect."""
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "healthcheck.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: healthcheck") and not result.stderr


def console_scripts() -> dict[str, str]:
    """The installed project's ``[project.scripts]`` (name -> ``module:function``)."""
    dist = importlib.metadata.distribution("jepa-embed")
    return {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_console_script_help_in_a_real_process(name: str) -> None:
    """Each ``[project.scripts]`` target, run from this checkout as the installed script would run it."""
    module, func = console_scripts()[name].split(":")
    code = f"import sys; from {module} import {func}; sys.exit({func}())"
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:"), result.stdout[:300]


def test_python_m_service_help_lists_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from service.settings import Settings

    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.stdout, name
