"""docker-compose.yml: valid against the Compose Specification, and serving what the README promises.

The schema is vendored (tests/deploy/schemas/, Apache-2.0) so this runs offline without Docker;
where the Docker Compose CLI is installed, `docker compose config` checks the files as well,
including the test override that uses Compose-only YAML tags.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from tests.deploy.helpers import DEPLOY, REPO, find_tool, load_yaml, settings_fields

SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
COMPOSE = REPO / "docker-compose.yml"
GPU = DEPLOY / "compose.gpu.yml"
TEST_OVERRIDE = DEPLOY / "compose.test.yml"


def _validator() -> Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _errors(doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(doc)]


def _service() -> dict[str, Any]:
    return load_yaml(COMPOSE)["services"]["jepa"]


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(a + u for a, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(a) * units[u] for a, u in parts)


@pytest.mark.parametrize("path", [COMPOSE, GPU], ids=lambda p: p.name)
def test_compose_files_match_the_specification(path: Path) -> None:
    assert _errors(load_yaml(path)) == []


def test_schema_rejects_a_broken_compose_file() -> None:
    doc = copy.deepcopy(load_yaml(COMPOSE))
    doc["services"]["jepa"]["restart_policy"] = "always"  # not a service key
    doc["services"]["jepa"]["ports"] = "8000:8000"  # must be a list
    errors = _errors(doc)
    assert any("restart_policy" in e for e in errors) and any(e.startswith("services/jepa/ports") for e in errors)


def test_service_has_healthcheck_restart_limits_and_env_settings() -> None:
    service = _service()
    assert service["healthcheck"]["test"] == ["CMD", "python", "/opt/jepa/healthcheck.py"]
    assert service["restart"] == "unless-stopped"
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and limits["memory"]
    assert service["ports"] == ["${JEPA_PUBLISH:-8000}:8000"]
    env = service["environment"]
    assert env["JEPA_PORT"] == "8000" and env["JEPA_HOST"] == "0.0.0.0"
    assert service["build"]["target"] == "runtime"


def test_stop_grace_covers_the_drain() -> None:
    service = _service()
    value = service["environment"]["JEPA_DRAIN_TIMEOUT_S"]
    default = re.fullmatch(r"\$\{JEPA_DRAIN_TIMEOUT_S:-(\d+(?:\.\d+)?)\}", value)
    assert default, "JEPA_DRAIN_TIMEOUT_S should be ${JEPA_DRAIN_TIMEOUT_S:-<seconds>}"
    drain = float(default[1])
    assert _seconds(service["stop_grace_period"]) > drain


def test_environment_names_are_service_settings() -> None:
    fields = settings_fields()
    for path in (COMPOSE, GPU):
        for name in load_yaml(path)["services"]["jepa"]["environment"]:
            assert name.startswith("JEPA_") and name.removeprefix("JEPA_") in fields, f"{path.name}: {name}"


def test_monitoring_profile_runs_prometheus_on_the_deploy_config() -> None:
    prometheus = load_yaml(COMPOSE)["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert not prometheus["image"].endswith(":latest") and ":" in prometheus["image"]


def test_gpu_override_reserves_an_nvidia_device_and_builds_onnxruntime_gpu() -> None:
    gpu = load_yaml(GPU)["services"]["jepa"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["ORT_PACKAGE"].startswith("onnxruntime-gpu")
    assert gpu["environment"]["JEPA_DEVICE"] == "cuda"


def _docker_compose() -> list[str]:
    docker = find_tool("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    if subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("Docker Compose plugin not installed (deploy/test_docker.sh installs it)")
    return [docker, "compose", "--project-directory", str(REPO)]


@pytest.mark.parametrize(
    "files", [[COMPOSE], [COMPOSE, GPU], [COMPOSE, TEST_OVERRIDE]], ids=["default", "gpu", "test-override"]
)
def test_docker_compose_config_accepts(files: list[Path]) -> None:
    args = [a for f in files for a in ("-f", str(f))]
    env = {"PATH": "/usr/bin:/bin", "JEPA_TEST_PORT": "18000"}
    result = subprocess.run(
        [*_docker_compose(), *args, "--profile", "monitoring", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  jepa:\n    image: x\n    restart_policy: always\n")
    result = subprocess.run(
        [*_docker_compose(), "-f", str(bad), "config", "--quiet"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "restart_policy" in result.stderr
