"""deploy/prometheus/prometheus.yml: `promtool check config` where promtool is installed (Debian's
`prometheus` package; .ci/run extracts it), and always a parse check against the compose file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import DEPLOY, REPO, find_tool, load_yaml

CONFIG = DEPLOY / "prometheus" / "prometheus.yml"


def _promtool() -> str:
    tool = find_tool("promtool", "PROMTOOL")
    if tool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run extracts it)")
    return tool


def test_promtool_accepts_the_config() -> None:
    result = subprocess.run([_promtool(), "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "prometheus.yml"
    bad.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: fast\n")
    result = subprocess.run([_promtool(), "check", "config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_scrapes_the_compose_service_metrics() -> None:
    config = load_yaml(CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "jepa-embed"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    compose = load_yaml(REPO / "docker-compose.yml")["services"]
    container_port = compose["jepa"]["environment"]["JEPA_PORT"]
    assert targets == [f"jepa:{container_port}"]
    assert set(config) <= {"global", "scrape_configs", "rule_files", "alerting"}


def test_k8s_scrape_annotations_match_the_container_port() -> None:
    template = load_yaml(DEPLOY / "k8s" / "deployment.yaml")["spec"]["template"]
    notes = template["metadata"]["annotations"]
    port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert (notes["prometheus.io/scrape"], notes["prometheus.io/port"], notes["prometheus.io/path"]) == (
        "true",
        str(port),
        "/metrics",
    )
