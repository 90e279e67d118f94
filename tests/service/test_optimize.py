"""Fast by default (service/optimize.py): a source without verified graphs is exported once at
start-up (the real ``python -m export`` in a child process), served through ONNX Runtime, and found
in the cache on the next start. Real servers on loopback, real exports, real photos."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import jepa
from export.verify import compare
from jepa.contract import read_engines
from service import cache
from service.cpu_features import parse_cpuinfo
from service.optimize import Optimizer, skip_reason
from service.settings import Settings
from tests.service.helpers import REPO, encode, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_hf_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a Hugging Face ``IJepaModel`` directory (what users download)."""
    from bench.hf_dir import write_hf_dir

    return write_hf_dir(jepa.load_encoder(tiny_model_dir), tmp_path_factory.mktemp("tiny_hf") / "tiny-hf")


def launch(args: list[str], cache_dir: Path, *, optimize: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m service ARGS`` on a free port, not waiting for anything."""
    port = free_port()
    env = {**os.environ, "JEPA_OPTIMIZE": str(optimize).lower(), "JEPA_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, "-m", "service", *args, "--device", "cpu", "--no-batch-probe", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def watch(proc: subprocess.Popen[bytes], url: str, until: str = "ready", timeout_s: float = 240) -> list[tuple]:
    """Poll /health and /ready until ``until`` ("ready", or "building": /ready names the build);
    returns every ``(health status, ready status, ready message)`` seen."""
    seen: list[tuple] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read().decode()[-3000:]}")
        try:
            health = httpx.get(url + "/health", timeout=2).status_code
            ready = httpx.get(url + "/ready", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        message = ready.json().get("error", {}).get("message", "") if ready.status_code != 200 else ""
        seen.append((health, ready.status_code, message))
        if (until == "ready" and ready.status_code == 200) or (until == "building" and "building" in message):
            return seen
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"not {until} after {timeout_s}s; last: {seen[-3:]}")


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(10)
    return code, proc.stdout.read().decode() if proc.stdout else ""


def served_globals(url: str, photos) -> np.ndarray:
    files = [("image", (f"{i}.png", encode(im, "PNG"), "image/png")) for i, im in enumerate(photos)]
    r = httpx.post(url + "/embed", files=files, timeout=120)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def recorded_int8_cosine(entry: Path) -> float:
    record = json.loads((entry / "export.json").read_text())
    return record["graphs"]["model.int8.onnx"]["summary"]["photos_global_cos_mean"]


def check_engine_choice(entry: Path, opt: dict, backend: dict) -> None:
    """Where openvino is installed the build measured it (engines.json in the entry, OpenVINO
    verified on photos) and the engine served is the one the record picks; else ONNX Runtime."""
    if importlib.util.find_spec("openvino") is None:
        assert opt["engine_trial"].startswith("skipped") and backend["name"] == "onnxruntime"
    else:
        assert opt["engine_trial"] == "measured" and "engines.json" in opt["files"], opt
        assert read_engines(entry).cosine_min["global"] >= 0.999
        assert backend["engine_choice"]["engine"] == backend["name"], backend["engine_choice"]
    if backend["name"] == "onnxruntime":
        assert backend["dtype"] == ("int8" if recorded_int8_cosine(entry) >= 0.999 else "float32"), backend


def test_hf_dir_is_built_in_the_background_then_served_from_the_cache(tiny_hf_dir, tmp_path, photos):
    root = tmp_path / "cache"
    proc, url = launch(["--model", str(tiny_hf_dir), "--no-jpeg-draft"], root)
    try:
        seen = watch(proc, url)
        # uvicorn listened during the build: liveness yes, readiness 503 naming the step
        assert any(h == 200 and r == 503 and "optimising the model: building ONNX graphs" in m for h, r, m in seen)
        info = httpx.get(url + "/info").json()
        opt, backend = info["optimize"], info["backend"]
        entry = Path(opt["entry"])
        assert opt["status"] == "built" and entry.parent == root and info["model_path"] == str(entry)
        assert opt["source"] == str(tiny_hf_dir) and opt["build_seconds"] > 0 and opt["created"]
        assert opt["isa"]["kind"] and "ONNX Runtime" in opt["why"]
        check_engine_choice(entry, opt, backend)
        reference = jepa.load_encoder(tiny_hf_dir).embed(photos)["global"]
        assert compare(reference, served_globals(url, photos))["cos_min"] >= 0.999
    finally:
        code, log = stop(proc)
    assert code == 0 and "optimize: export + verify model.int8.onnx" in log  # progress was logged
    assert cache.verify(entry, entry.name)[0] is not None
    assert sorted(p.name for p in root.iterdir()) == [entry.name, f"{entry.name}.lock"]  # no stage left

    proc, url = launch(["--model", str(tiny_hf_dir)], root)
    try:
        seen = watch(proc, url)
        again = httpx.get(url + "/info").json()["optimize"]
        assert again["status"] == "cache hit" and again["entry"] == str(entry) and again["created"] == opt["created"]
        assert all("building" not in m for _, _, m in seen)
    finally:
        assert stop(proc)[0] == 0


def test_concurrent_starts_on_one_cache_build_once(tiny_hf_dir, tmp_path):
    root = tmp_path / "shared-volume"
    procs = [launch(["--model", str(tiny_hf_dir)], root) for _ in range(2)]
    try:
        for proc, url in procs:
            watch(proc, url)
        reports = [httpx.get(url + "/info").json()["optimize"] for _, url in procs]
    finally:
        logs = [stop(proc)[1] for proc, _ in procs]
    assert sorted(r["status"] for r in reports) == ["built", "cache hit"], reports
    assert reports[0]["entry"] == reports[1]["entry"]
    entry = Path(reports[0]["entry"])
    assert cache.verify(entry, entry.name)[0] is not None
    assert sum("optimize: building ONNX graphs" in log for log in logs) == 1  # one export ran


def build(settings: Settings) -> dict:
    """The optimisation of one start, in this process (the export still runs as a child)."""
    optimizer = Optimizer(settings, str(settings.model), cuda=False)
    done = optimizer.check() or optimizer.build()
    return {"path": done.model_path, **done.report}


def test_a_corrupt_entry_is_rebuilt_never_served(tiny_hf_dir, tmp_path):
    settings = Settings(model=str(tiny_hf_dir), cache_dir=tmp_path, optimize=True, device="cpu")
    first = build(settings)
    entry = Path(first["entry"])
    graph = entry / "model.int8.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the checksum can tell
    graph.write_bytes(bytes(data))
    assert Optimizer(settings, str(tiny_hf_dir), cuda=False).check() is None  # not served as a hit
    again = build(settings)
    assert again["status"] == "built" and again["entry"] == str(entry)
    assert cache.verify(entry, entry.name)[0] is not None


@pytest.fixture
def unwritable_cache(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A cache_dir that cannot be created (under a regular file, as a read-only root filesystem
    refuses it even to root), and the private /tmp the fallback must use instead."""
    import tempfile

    blocker = tmp_path / "readonly"
    blocker.write_text("a file, not a directory")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return blocker / "cache", tmp


def test_official_checkpoint_builds_under_the_tmp_fallback(tiny_model_dir, tmp_path, unwritable_cache):
    preferred, tmp = unwritable_cache
    state = {f"module.{k}": v for k, v in jepa.load_encoder(tiny_model_dir).state_dict().items()}
    checkpoint = tmp_path / "in1k-tiny-ep300.pth.tar"
    torch.save({"encoder": state, "target_encoder": state, "epoch": 300}, checkpoint)
    report = build(Settings(model=str(checkpoint), cache_dir=preferred, optimize=True, device="cpu"))
    entry = Path(report["entry"])
    assert report["status"] == "built" and entry.parent == cache.tmp_root() and entry.is_relative_to(tmp)
    config = json.loads((entry / "config.json").read_text())
    assert config["name"] == "in1k-tiny-ep300" and config["provenance"]["source"].startswith("meta:")
    record = json.loads((entry / "export.json").read_text())
    assert record["graphs"]["model.onnx"]["summary"]["max_rel"] <= 1e-4  # verified against torch fp32


def test_what_is_not_built_and_why(tiny_model_dir, tiny_hf_dir, onnx_model_dir, onnx_only_dir, tmp_path):
    def reason(model: Path, cuda: bool = False, **kw: object) -> str | None:
        return skip_reason(Settings(**{"model": str(model), "optimize": True, **kw}), model, cuda)

    assert reason(tiny_hf_dir) is None and reason(tiny_model_dir) is None  # no graphs: build
    assert "--no-optimize" in reason(tiny_hf_dir, optimize=False)
    assert "cuda" in reason(tiny_hf_dir, cuda=True)
    for explicit in ({"backend": "torch"}, {"dtype": "bfloat16"}, {"onnx_file": "model.onnx"}):
        assert "explicitly" in reason(tiny_hf_dir, **explicit)
    assert "no weights" in reason(onnx_only_dir)
    avx2 = parse_cpuinfo("flags\t: avx avx2 fma\n")  # bf16 is emulated there: said so, loudly
    emulated = skip_reason(Settings(model="x", optimize=True, dtype="bfloat16"), tiny_hf_dir, False, avx2)
    assert "emulated" in emulated and "explicitly" in emulated
    exported = tmp_path / "exported"
    cmd = [sys.executable, "-m", "export", str(tiny_model_dir), "--out", str(exported), "--int8", "--no-progress"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
    assert "already holds verified graphs" in reason(exported)


def test_no_optimize_serves_the_source_as_before(serve, tiny_hf_dir, tmp_path):
    srv = serve(tiny_hf_dir, optimize=False, cache_dir=tmp_path)
    info = httpx.get(srv.url + "/info").json()
    assert info["backend"]["name"] == "torch" and info["model_path"] == str(tiny_hf_dir)
    assert info["optimize"]["status"] == "skipped" and "--no-optimize" in info["optimize"]["why"]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_the_build_stops_the_export_and_exits_cleanly(tiny_hf_dir, tmp_path):
    root = tmp_path / "cache"
    proc, url = launch(["--model", str(tiny_hf_dir)], root)
    watch(proc, url, until="building")
    code, log = stop(proc)
    assert code == 0, log
    assert not list(root.glob(".stage-*")) and not [p for p in root.iterdir() if p.is_dir()]  # nothing half-built


def test_a_failed_build_of_a_broken_source_exits_non_zero(tiny_hf_dir, tmp_path):
    broken = tmp_path / "broken-hf"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (broken / name).write_bytes((tiny_hf_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 4096)  # hashes fine, loads nowhere
    proc, _ = launch(["--model", str(broken)], tmp_path / "cache")
    code, log = stop_after_exit(proc)
    assert code == 1, log
    assert "optimize: build failed, serving the source as given" in log and "start-up failed" in log


def stop_after_exit(proc: subprocess.Popen[bytes], timeout_s: float = 240) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(10)
    return code, proc.stdout.read().decode() if proc.stdout else ""


def test_a_vjepa2_hf_dir_is_built_and_serves_video_with_default_settings(tmp_path):
    """A V-JEPA 2 ``VJEPA2Model`` directory, as downloaded, with default settings: the build exports
    the clip graph, the engine trial checks OpenVINO on panning clips of the photos (not images),
    and a real MP4 is embedded as PyTorch embeds it."""
    transformers = pytest.importorskip("transformers")
    from service.video import VideoOptions, decode_video
    from tests.service.video_util import make_video

    torch.manual_seed(0)
    hf = tmp_path / "vjepa2-hf"
    config = transformers.VJEPA2Config(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, crop_size=32,
                                       patch_size=16, tubelet_size=2, frames_per_clip=16, pred_hidden_size=24,
                                       pred_num_attention_heads=2, pred_num_hidden_layers=1)  # fmt: skip
    transformers.VJEPA2Model(config).eval().save_pretrained(hf)
    video = make_video("mp4-h264", frames=40)
    proc, url = launch(["--model", str(hf)], tmp_path / "cache")
    try:
        watch(proc, url)
        info = httpx.get(url + "/info").json()
        opt, backend = info["optimize"], info["backend"]
        assert opt["status"] == "built", opt
        check_engine_choice(Path(opt["entry"]), opt, backend)
        r = httpx.post(url + "/embed", content=video, headers={"Content-Type": "video/mp4"}, timeout=120)
        assert r.status_code == 200, r.text
        served = np.array([r.json()["data"][0]["embedding"]], dtype=np.float32)
    finally:
        code, log = stop(proc)
    assert code == 0, log[-3000:]
    from jepa.video_preprocess import normalize_clips

    encoder = jepa.load_encoder(hf)
    model = encoder.config
    clip = decode_video(video, 0, VideoOptions(model.preprocess, model.image_size, model.temporal))[None]
    with torch.no_grad():
        reference = encoder(torch.from_numpy(normalize_clips(clip, model.preprocess))).mean(1).numpy()
    assert compare(reference, served)["cos_min"] >= 0.999
