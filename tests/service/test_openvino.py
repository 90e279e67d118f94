"""The OpenVINO backend and the CPU engine choice: OpenVINO matches ONNX Runtime fp32 on every
output, a real server serves it, the choice follows the recorded measurement (pure functions on
given figures), and the engine trial measures a real model directory. Real OpenVINO, real ONNX
Runtime, real photos; skipped where openvino is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from jepa.contract import ENGINES_FILE, EngineRun, EnginesRecord, read_engines
from jepa.errors import CheckpointError
from jepa.preprocess import normalize, prepare_image
from service.backends import load_backend
from service.cpu_features import parse_cpuinfo
from service.engine_choice import choose_cpu_engine, engine_versions
from service.plan import resolve_plan
from service.settings import Settings
from tests.service.helpers import REPO, free_port, open_bytes, rel_err, start_subprocess

pytest.importorskip("openvino")

from service.backends.openvino import OpenVinoMissingError, precision_hint

AMX = parse_cpuinfo("model name : amx\nflags : avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_int8\n")
AVX2 = parse_cpuinfo("model name : old cpu\nflags : avx2 fma\n")
ALL = frozenset({"global", "patch", "multilayer"})


def backend_for(model: Path, **settings: object):
    return load_backend(resolve_plan(Settings(model=str(model), device="cpu", **settings), str(model)))


def photo_batch(backend, photos, n: int) -> np.ndarray:
    config = backend.config
    pixels = np.stack([prepare_image(photos[i % len(photos)], config.preprocess, config.image_size) for i in range(n)])
    return normalize(pixels, config.preprocess)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def backends(onnx_only_dir):
    ov, ort = backend_for(onnx_only_dir, backend="openvino"), backend_for(onnx_only_dir, dtype="float32")
    yield ov, ort
    ov.close()
    ort.close()


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_openvino_matches_onnxruntime_fp32_on_every_output(backends, photos, batch):
    ov, ort = backends
    assert ov.info.name == "openvino" and ort.info.name == "onnxruntime" and ov.outputs == ort.outputs == ALL
    x = photo_batch(ov, photos, batch)
    got, ref = ov.run(x, ALL), ort.run(x, ALL)
    for output in sorted(ALL):
        assert got.get(output).shape == ref.get(output).shape
        assert row_cosines(got.get(output), ref.get(output)).min() >= 0.999, output
    only_global = ov.run(x, frozenset({"global"}))
    assert only_global.present() == {"global"}  # a patch grid nobody asked for does not leave the backend


def test_the_precision_shown_is_the_one_the_cpu_runs(backends, onnx_only_dir, photos):
    from service.cpu_features import cpu_isa

    ov, ort = backends
    assert ov.info.dtype == ("bfloat16" if cpu_isa().native_bf16 else "float32")  # never an emulated bf16
    assert ov.requests.prop("ENABLE_CPU_PINNING") is False  # the cores are shared with decode
    assert ov.info.details["streams"] == 1 and ov.info.details["workers"] == 1
    f32 = backend_for(onnx_only_dir, backend="openvino", dtype="float32")
    try:
        assert f32.info.dtype == "float32"
        x = photo_batch(f32, photos, 4)
        assert rel_err(f32.run(x, ALL).global_embedding, ort.run(x, ALL).global_embedding) < 1e-4
    finally:
        f32.close()


def test_precision_hint_never_emulates_bf16():
    assert precision_hint("auto", AVX2) == "f32" and precision_hint("auto", AMX) is None
    assert precision_hint("float32", AMX) == "f32" and precision_hint("bfloat16", AVX2) == "bf16"
    with pytest.raises(ValueError, match="not an OpenVINO precision"):
        precision_hint("int8", AMX)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_and_streams_give_the_same_results(onnx_only_dir, backends, photos, workers):
    """N workers: N streams sharing the threads, each worker with its own infer request."""
    ort = backends[1]
    ov = backend_for(onnx_only_dir, backend="openvino", inference_workers=workers, inference_threads=2)
    try:
        details = ov.info.details
        # OpenVINO runs at most one stream per thread: a third worker's batch waits for a free stream
        assert details["streams"] == min(workers, 2) and details["workers"] == workers and details["threads"] == 2
        x = photo_batch(ov, photos, 3)
        ref = ort.run(x, ALL).patch_embeddings
        for alone in (False, True):
            assert row_cosines(ov.run(x, ALL, alone).patch_embeddings, ref).min() >= 0.999
    finally:
        ov.close()


def test_default_workers(onnx_only_dir):
    """One stream on every thread for OpenVINO; two half-width workers for ONNX Runtime."""
    for threads in (1, 2, 4):
        plan = resolve_plan(Settings(model="x", device="cpu", backend="openvino", inference_threads=threads),
                            str(onnx_only_dir))  # fmt: skip
        assert plan.workers == 1 and not plan.wide and plan.wide_threads == threads
    ort = resolve_plan(Settings(model="x", device="cpu", inference_threads=2, backend="onnxruntime"),
                       str(onnx_only_dir))  # fmt: skip
    assert ort.workers == 2 and ort.wide


def test_bad_settings_and_missing_graph_are_clear_errors(tiny_model_dir):
    with pytest.raises(ValueError, match="only supported by the onnxruntime backend"):
        Settings(model="x", backend="openvino", dtype="int8")
    with pytest.raises(ValueError, match="CPU only"):
        Settings(model="x", backend="openvino", device="cuda")
    with pytest.raises(CheckpointError, match="ONNX graph not found"):
        backend_for(tiny_model_dir, backend="openvino")


def test_a_server_with_backend_openvino(serve, onnx_only_dir, tiny_encoder, jpeg_bytes):
    srv = serve(onnx_only_dir, backend="openvino")
    info = httpx.get(srv.url + "/info").json()["backend"]
    assert info["name"] == "openvino" and info["graph"] == "model.onnx" and info["device"] == "cpu"
    assert info["dtype"] in ("float32", "bfloat16") and info["why"].startswith("asked for explicitly")
    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpeg_bytes[:3])]
    r = httpx.post(srv.url + "/embed", files=files, params={"outputs": "global,patch,multilayer"}, timeout=30)
    assert r.status_code == 200, r.text
    ref = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:3]])
    data = r.json()["data"]
    for key, output in (("embedding", "global"), ("patch_embeddings", "patch")):
        got = np.array([d[key] for d in data], dtype=np.float32)
        assert row_cosines(got, ref[output]).min() >= 0.999, key
    assert len(data[0]["multilayer_embedding"]) == httpx.get(srv.url + "/info").json()["multilayer_dim"]


def test_backend_openvino_without_openvino_exits_with_a_message(onnx_only_dir, monkeypatch):
    code = "import sys\nsys.modules['openvino'] = None\nfrom service.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    args = ["--model", str(onnx_only_dir), "--backend", "openvino", "--port", str(free_port())]
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert r.returncode == 2 and "openvino is not installed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(OpenVinoMissingError, match="cannot be imported"):  # the backend's own guard
        backend_for(onnx_only_dir, backend="openvino")


# -- the choice, on given figures --


def record(ov: dict[int, float], base: dict[int, float], cosine: float = 0.99999, isa=AMX, cpus: int = 2,
           versions: dict[str, str] | None = None, spread: float = 0.01) -> EnginesRecord:  # fmt: skip
    """A record with the given medians, each engine's three rounds at median * (1 - spread, 1, 1 + spread)."""

    def run(engine: str, graph: str, precision: str, rates: dict[int, float], workers: int) -> EngineRun:
        rounds = {b: (r * (1 - spread), r, r * (1 + spread)) for b, r in rates.items()}
        return EngineRun(engine=engine, graph=graph, precision=precision, workers=workers, threads=cpus,
                         images_s=rates, rounds=rounds)  # fmt: skip

    return EnginesRecord(
        created="2026-11-30T00:00:00+00:00", isa=isa.as_dict(), cpus=cpus,
        versions=versions or {"openvino": "1", "onnxruntime": "2"}, photos="scikit-image",
        reference="model.onnx on onnxruntime", cosine_min={"global": cosine, "patch": cosine},
        baseline=run("onnxruntime", "model.int8.onnx", "int8", base, 2),
        openvino=run("openvino", "model.onnx", "bfloat16", ov, 1),
    )  # fmt: skip


VERSIONS = {"openvino": "1", "onnxruntime": "2"}


@pytest.mark.parametrize(("rec", "isa", "installed", "engine", "why"), [
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}), AMX, True, "openvino", "verified"),
    (record({1: 40.0, 8: 94.0}, {1: 43.1, 8: 47.3}), AMX, True, "onnxruntime", "slower for a lone image"),
    (record({1: 40.0, 8: 94.0}, {1: 43.1, 8: 47.3}, spread=0.05), AMX, True, "openvino", "verified"),  # drift
    (record({1: 55.0, 8: 45.0}, {1: 43.1, 8: 47.3}), AMX, True, "onnxruntime", "not faster under load"),
    (record({1: 13.3, 8: 14.9}, {1: 43.1, 8: 47.3}), AMX, True, "onnxruntime", "not faster under load"),
    (record({1: 55.0}, {1: 43.1}), AMX, True, "onnxruntime", "not faster under load"),  # never timed under load
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}, cosine=0.99), AMX, True, "onnxruntime", "below 0.999"),
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}, cosine=float("nan")), AMX, True, "onnxruntime", "below"),
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}), AVX2, True, "onnxruntime", "another CPU"),
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}, cpus=4), AMX, True, "onnxruntime", "4 threads"),
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}, versions={"openvino": "0", "onnxruntime": "2"}), AMX, True,
     "onnxruntime", "other versions of openvino"),
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}), AMX, True, "onnxruntime", "measured with workers"),
    (None, AMX, True, "onnxruntime", "not measured"),
    (record({1: 55.0, 8: 94.0}, {1: 43.1, 8: 47.3}), AMX, False, "onnxruntime", "not installed"),
])  # fmt: skip
def test_the_choice_follows_the_measurement(rec, isa, installed, engine, why):
    workers = {"openvino": 1, "onnxruntime": 1 if "workers" in why else 2}
    choice = choose_cpu_engine(rec, isa, 2, VERSIONS, installed, workers)
    assert choice.engine == engine and why in choice.why, choice
    if rec is not None and installed:
        assert choice.measured["openvino"]["images_s"] == rec.openvino.images_s  # /info shows the figures


# -- the trial on a real model directory --


@pytest.fixture(scope="module")
def measured_dir(onnx_model_dir, tmp_path_factory) -> Path:
    """The tiny exported model with an engines.json the trial measured on this machine."""
    from service.engine_trial import main

    out = tmp_path_factory.mktemp("measured")
    for name in ("config.json", "model.onnx", "model.int8.onnx"):
        shutil.copy(onnx_model_dir / name, out / name)
    assert main([str(out), "--rounds", "1", "--seconds", "0.2", "--max-batch-size", "4"]) == 0
    return out


def test_the_trial_records_a_check_and_timings(measured_dir):
    from service.cpu_features import cpu_isa
    from service.settings import usable_cpus

    rec = read_engines(measured_dir)
    assert rec is not None and rec.isa == cpu_isa().as_dict() and rec.cpus == usable_cpus()
    assert rec.versions == engine_versions() and rec.photos in ("scikit-image", "synthetic")
    assert set(rec.cosine_min) == {"global", "patch", "multilayer"} and rec.cosine_min["global"] >= 0.999
    # no export.json records the int8 graph here, so the service would serve fp32: that is the baseline
    assert rec.baseline.graph == "model.onnx" and rec.baseline.precision == "float32"
    assert rec.openvino.engine == "openvino" and rec.openvino.workers == 1
    for run in (rec.baseline, rec.openvino):
        assert set(run.images_s) == {1, 4} and all(v > 0 for v in run.images_s.values())


def test_auto_serves_what_the_record_says(measured_dir):
    from service.cpu_features import cpu_isa

    plan = resolve_plan(Settings(model=str(measured_dir), device="cpu"), str(measured_dir))
    workers = {"openvino": 1, "onnxruntime": 2 if plan.wide_threads >= 2 else 1}
    expected = choose_cpu_engine(read_engines(measured_dir), cpu_isa(), plan.wide_threads, engine_versions(), True,
                                 workers)  # fmt: skip
    assert plan.engine_choice == expected.as_dict() and plan.backend == expected.engine
    assert plan.graph == measured_dir / "model.onnx"  # OpenVINO's graph, and fp32 ONNX Runtime's without export.json
    # explicit settings are never overridden by the record
    explicit = resolve_plan(Settings(model="x", device="cpu", backend="onnxruntime"), str(measured_dir))
    assert explicit.backend == "onnxruntime" and explicit.engine_choice is None
    assert resolve_plan(Settings(model="x", device="cpu", dtype="float32"), str(measured_dir)).backend == "onnxruntime"


def test_a_record_from_another_machine_is_not_trusted(measured_dir, tmp_path):
    other = tmp_path / "copied"
    shutil.copytree(measured_dir, other)
    rec = read_engines(other)
    rec.model_copy(update={"isa": AVX2.as_dict()}).write(other)
    plan = resolve_plan(Settings(model=str(other), device="cpu"), str(other))
    assert plan.backend == "onnxruntime" and "another CPU" in plan.engine_choice["why"]
    (other / ENGINES_FILE).write_text("{not json")
    plan = resolve_plan(Settings(model=str(other), device="cpu"), str(other))
    assert plan.backend == "onnxruntime" and "unreadable" in plan.engine_choice["why"]


def test_a_failed_trial_leaves_no_record_and_says_why(onnx_model_dir, tmp_path):
    from service.optimize import engine_trial

    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(onnx_model_dir / "config.json", stage / "config.json")  # no graphs: the trial cannot run
    outcome = engine_trial(stage, Settings(model="x", device="cpu"))
    assert outcome.startswith("failed (exit 2)") and "ONNX graph not found" in outcome, outcome
    assert not (stage / ENGINES_FILE).exists()


def test_a_fresh_server_with_two_openvino_workers_starts(onnx_only_dir, jpeg_bytes):
    """Warm-up calls both workers at once; OpenVINO's Python binding initialises its numpy API on
    the first call, and two first calls at once deadlocked a fresh process (seen with ViT-S/16):
    the backend makes its first call on the constructing thread. A fresh process, so nothing
    earlier in this one has made that call already."""
    args = ["--model", str(onnx_only_dir), "--device", "cpu", "--backend", "openvino", "--inference-workers", "2"]
    for _ in range(3):  # a race: a few fresh starts
        proc, url = start_subprocess(args)
        try:
            assert httpx.get(url + "/info").json()["backend"]["streams"] == 2
            files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpeg_bytes[:4])]
            assert httpx.post(url + "/embed", files=files, timeout=30).status_code == 200
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
