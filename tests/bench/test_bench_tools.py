"""The benchmark's own tools do what their figures assume (behaviour only, no timings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import jepa
from bench.flops import counted_flops, encoder_flops
from bench.loadgen import RequestSpec, run_load
from bench.server_proc import ServerProcess


@pytest.fixture(scope="module")
def hf_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.hf_dir import write_hf_dir

    return write_hf_dir(jepa.load_encoder(tiny_model_dir), tmp_path_factory.mktemp("hf"))


def test_hf_copy_loads_in_transformers_and_back_in_jepa(tiny_model_dir: Path, hf_dir: Path) -> None:
    from transformers import IJepaModel

    ours = jepa.load_encoder(tiny_model_dir)
    theirs = IJepaModel.from_pretrained(hf_dir).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(theirs(pixel_values=x).last_hidden_state, ours(x), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(jepa.load_encoder(hf_dir)(x), ours(x), atol=1e-4, rtol=1e-4)
    processor = json.loads((hf_dir / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == list(ours.config.preprocess.mean)


def test_flop_count_matches_torch_counter_plus_attention() -> None:
    model = jepa.build_encoder("tiny", patch_size=16, image_size=64, depth=2)
    arch = model.config.architecture
    n = (64 // 16) ** 2
    attention = 2.0 * arch.depth * n * 2 * n * arch.embed_dim  # QK^T and AV, not counted for CPU SDPA
    counted = counted_flops(model, 64)  # a CPU model: torch's counter skips the CPU SDPA kernel
    assert encoder_flops(arch) == pytest.approx(counted + attention, rel=1e-6)


def test_load_generator_counts_requests_and_images(hf_dir: Path, tmp_path: Path, jpeg_bytes) -> None:
    with ServerProcess([str(hf_dir)], module="bench.naive_server", log_path=tmp_path / "naive.log") as srv:
        res = run_load(RequestSpec(srv.url + "/embed"), jpeg_bytes, 4, duration_s=None, max_requests=10, warmup=0)
        assert (res.requests, res.ok, res.errors, res.rejected) == (10, 10, 0, 0)
        assert res.p50_ms <= res.p95_ms <= res.p99_ms
        assert 0 < res.client_cpu_ms < res.p99_ms  # the generator's own CPU per request is measured
        bad = run_load(RequestSpec(srv.url + "/embed"), [b"not a jpeg"], 2, duration_s=None, max_requests=4, warmup=0)
        assert (bad.ok, bad.errors, bad.statuses) == (0, 4, {"400": 4})
        several = RequestSpec(srv.url + "/embed", images_per_request=3)
        res = run_load(several, jpeg_bytes, 2, duration_s=None, max_requests=4, warmup=0)
        assert (res.ok, res.errors) == (4, 0) and res.images_s > 0  # 12 images in 4 requests
    gone = run_load(RequestSpec(srv.url + "/embed"), jpeg_bytes, 2, duration_s=None, max_requests=2, warmup=0)
    assert gone.ok == 0 and gone.errors == 2 and "ConnectionRefusedError" in gone.statuses  # server stopped


def test_meta_copy_is_an_official_checkpoint_of_the_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from bench.models import meta_copy

    model = shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    path = meta_copy(model)
    raw = torch.load(path, weights_only=True)
    assert {"encoder", "target_encoder"} <= set(raw) and all(k.startswith("module.") for k in raw["target_encoder"])
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(jepa.load_encoder(path)(x), jepa.load_encoder(model)(x), atol=1e-6)


def test_source_goals_and_report_lines() -> None:
    from bench.report_md import isa_line
    from bench.source_bench import goals, markdown

    point = {"images_s": 10.0}
    part = {"kind": "hf", "source": "m-hf", "concurrency": 16, "median_ratio": 2.4, "min_cosine_vs_fp32": 0.9995,
            "first_start_s": 80.0, "second_start_s": 5.0, "first_optimize": {"status": "built", "build_seconds": 70},
            "info": {"backend": {"name": "onnxruntime", "dtype": "int8"}, "optimize": {"status": "cache hit"}},
            "rounds": [{"service": point, "naive": point, "ratio": 2.4}]}  # fmt: skip
    met = {g["goal"].split(": ", 1)[1]: g["met"] for g in goals(part)}
    assert met == {
        "service / naive images/s at c=16 (paired median)": False,
        "min cosine vs fp32 embed()": True,
        "non-503 errors in its rounds": True,
    }
    text = "\n".join(markdown(part))
    assert "first start 80.0 s" in text and "second start 5.0 s (status cache hit)" in text
    assert isa_line({}) == "ISA: not recorded." and "**avx2**" in isa_line(
        {"isa": {"kind": "avx2", "flags": ["avx2"], "native_bf16": False, "vnni": False}}
    )


def test_gil_bench_measures_both_paths_at_each_switch_interval(tmp_path: Path) -> None:
    """A short run on small JPEGs: one row per (path, interval), every round timed, the interval restored."""
    import sys

    from bench import gil_bench

    before = sys.getswitchinterval()
    out = tmp_path / "gil.json"
    gil_bench.main(["--megapixels", "0.3", "--rounds", "2", "--seconds", "0.2", "--switch-ms", "5,0.5",
                    "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())
    assert sys.getswitchinterval() == before
    assert [(r["path"], r["switch_ms"]) for r in rows] == [
        ("pillow", 5.0), ("service", 5.0), ("pillow", 0.5), ("service", 0.5)
    ]  # fmt: skip
    for row in rows:
        assert len(row["rounds"]) == 2 and row["share_median"] > 0
        for r in row["rounds"]:
            assert r["solo"]["images"] >= 3 and r["busy"]["images"] >= 3 and r["busy"]["cpu_ms"] > 0


def test_video_bench_times_both_sides_and_reads_the_servers_forward(tmp_path: Path, monkeypatch) -> None:
    """A tiny V-JEPA 2 model through the whole bench: a ceiling worker process, a real server, the
    MP4 and the JPEG; every round has both rates, and the server's own forward is a share of a
    request's time (between 0 and 1: the request also decodes and answers)."""
    from bench import video_bench

    monkeypatch.setattr(video_bench, "CACHE", tmp_path)
    model = video_bench.video_model("tiny", 64, 2, cache=tmp_path)
    out = video_bench.measure(model, rounds=2, per_round=2, log=tmp_path / "server.log")
    assert len(out["rounds"]) == 2
    for kind in ("clips_s", "images_s"):
        for r in out["rounds"]:
            assert r[kind]["ceiling"] > 0 and r[kind]["service"] > 0
            assert r[kind]["stages_ms"]["batch_size"] == 1.0 and r[kind]["stages_ms"]["batches"] == 3
        assert 0 < out[kind]["in_model_share"] < 1


# Every benchmark's output starts with the machine and its ISA (issue 17: bf16 is native on one CPU
# and emulated 8x slower on another, so a figure without its ISA compares with nothing).
BENCHMARKS = ("ceiling", "cpu_engines", "decode_bench", "export_bench", "gil_bench", "gpu_bench", "serve_bench",
              "train_throughput", "ui_math", "video_bench", "video_seek_bench")  # fmt: skip


def test_a_benchmark_prints_the_machine_and_its_isa_first(capsys) -> None:
    from bench.decode_bench import main
    from service.cpu_features import cpu_isa

    main(["--sizes", "0.3", "--min-time", "0.01"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("# Machine: ") and f"ISA: **{cpu_isa().kind}**" in first, first


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_records_the_isa(name: str) -> None:
    """Each prints :func:`bench.host.host_line` or reports through ``isa_line`` (serve_bench's and
    cpu_engines' markdown, gpu_bench's report)."""
    source = (Path(__file__).resolve().parents[2] / "bench" / f"{name}.py").read_text()
    assert "host_line()" in source or "machine()" in source or "cpu_isa()" in source, name
