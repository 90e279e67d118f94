"""The process around the app: CLI and env settings, API key, and the SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from service.__main__ import parse_settings
from service.settings import DEFAULT_MODEL_DIR, Settings
from tests.service.helpers import REPO, start_subprocess


def test_cli_flags_and_env_map_to_settings(monkeypatch):
    monkeypatch.setenv("JEPA_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("JEPA_URL_ALLOWLIST", "images.example.com, cdn.example.com")
    monkeypatch.setenv("JEPA_ALLOW_URL_FETCH", "true")
    s = parse_settings(["--model", "m", "--backend", "torch", "--max-wait-ms", "5", "--no-jpeg-draft"])
    assert (s.model, s.backend, s.max_wait_ms, s.jpeg_draft) == ("m", "torch", 5.0, False)
    assert s.max_batch_size == 16  # env
    assert s.url_allowlist == ("images.example.com", "cdn.example.com")
    s = parse_settings(["--model", "m", "--max-batch-size", "4"])
    assert s.max_batch_size == 4  # the flag wins over the env


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="extra"):
        Settings(model="m", max_batch=3)
    with pytest.raises(ValueError, match="url_allowlist"):
        Settings(model="m", allow_url_fetch=True)
    with pytest.raises(ValueError, match="max_queue"):
        Settings(model="m", max_queue=4, max_images_per_request=8)


def run_cli(args: list[str], cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    env.pop("JEPA_MODEL", None)
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_cli_without_model_says_how_to_pass_one(tmp_path):
    """Where no default model exists (an installed package has no models/ beside it), the CLI says
    how to pass one. The packages are copied out of the checkout, whose models/ holds the default."""
    import shutil

    install = tmp_path / "site"
    for package in ("jepa", "service"):
        shutil.copytree(REPO / package, install / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "cwd").mkdir()
    assert not (install / DEFAULT_MODEL_DIR).exists()
    r = run_cli([], tmp_path / "cwd", env={"PYTHONPATH": str(install)})
    assert r.returncode == 2, r.stderr
    assert "--model PATH" in r.stderr and "JEPA_MODEL" in r.stderr and DEFAULT_MODEL_DIR in r.stderr


def test_cli_with_a_missing_or_broken_model(tmp_path):
    r = run_cli(["--model", str(tmp_path / "nope")], tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "config.json").write_text('{"format": "jepa-encoder"}')
    r = run_cli(["--model", str(tmp_path), "--port", "0"], tmp_path)
    assert r.returncode != 0 and "invalid config" in r.stderr and "Application startup failed" in r.stderr


def test_cli_rejects_bad_flags_and_env(tmp_path):
    r = run_cli(["--model", str(tmp_path), "--backend", "tensorflow"], tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run_cli(["--model", str(tmp_path)], tmp_path, env={"JEPA_MAX_BATCH_SIZE": "0"})
    assert r.returncode == 2 and "max_batch_size" in r.stderr


def test_api_key(serve, tiny_model_dir, jpeg_bytes):
    srv = serve(tiny_model_dir, api_key="s3cret", metrics_require_key=True)

    def embed(headers):
        return httpx.post(srv.url + "/embed", content=jpeg_bytes[1], headers={"Content-Type": "image/jpeg", **headers})

    r = embed({})
    assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert embed({"Authorization": "Bearer wrong"}).status_code == 401
    assert embed({"Authorization": "s3cret"}).status_code == 401
    assert embed({"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(srv.url + "/health").status_code == 200 and httpx.get(srv.url + "/ready").status_code == 200
    assert httpx.get(srv.url + "/info").status_code == 401
    assert httpx.get(srv.url + "/metrics").status_code == 401
    assert httpx.get(srv.url + "/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    open_metrics = serve(tiny_model_dir, api_key="s3cret")
    assert httpx.get(open_metrics.url + "/metrics").status_code == 200


def queue_depth(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("jepa_queue_depth "):
            return float(line.split()[1])
    return 0.0


def test_sigterm_drains_without_losing_accepted_requests(tiny_model_dir, jpeg_bytes):
    proc, url = start_subprocess(["--model", str(tiny_model_dir), "--backend", "torch", "--device", "cpu",
                                  "--max-wait-ms", "6000", "--max-batch-size", "64", "--no-batch-probe",
                                  "--shutdown-delay-s", "2"])  # fmt: skip
    try:
        results: list[httpx.Response] = []

        def send() -> None:
            results.append(httpx.post(url + "/embed", content=jpeg_bytes[1], headers={"Content-Type": "image/jpeg"},
                                      timeout=30))  # fmt: skip

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while queue_depth(url) < 6:  # all six accepted and waiting for the batch to fill
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with httpx.Client() as probe:  # a connection opened before the signal, as a load balancer's would be
            probe.get(url + "/health")
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            ready = probe.get(url + "/ready")
            refused = probe.post(url + "/embed", content=jpeg_bytes[1], headers={"Content-Type": "image/jpeg"})
        for t in threads:
            t.join(timeout=30)
        assert ready.status_code == 503 and "draining" in ready.json()["error"]["message"]
        assert refused.status_code == 503 and refused.headers.get("Retry-After")
        assert [r.status_code for r in results] == [200] * 6  # no accepted request lost
        # draining ran the queue without waiting out the 6 s max_wait, and the answers came before the 2 s delay ended
        assert all(r.elapsed.total_seconds() < 5.0 for r in results)
        assert time.perf_counter() - start < 5.0
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_thread_budget_is_split_among_workers(tmp_path):
    from service.settings import cgroup_cpu_quota, usable_cpus

    s = Settings(model="m", inference_threads=4)
    assert (s.thread_budget(), s.threads_per_worker(2), s.threads_per_worker(1), s.threads_per_worker(8)) == (
        4,
        2,
        4,
        1,
    )
    auto = Settings(model="m")
    assert auto.threads_per_worker(1) == 0  # one worker, nothing set: the library's own default
    assert auto.threads_per_worker(2) == max(1, usable_cpus() // 2)
    # a container's CPU limit (cgroup v2, then v1) caps the count the affinity mask shows
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1) is None and cgroup_cpu_quota(tmp_path / "missing") is None
