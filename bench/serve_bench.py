"""The service benchmark: ceiling vs our service vs the naive IJepaModel server, in one run.

Every server runs as a real process on loopback, one at a time, driven by :mod:`bench.loadgen`
with real JPEG photos. Parts (``--parts``): ``ceiling`` (model alone), ``decode``, ``service``
(default settings: concurrency sweep, output encodings, 12 MP photos, correctness vs ``embed``),
``nobatch`` (our service with ``--max-batch-size 1``), ``naive`` (bench/naive_server.py), and
``paired``: our service and the naive server up at the same time, driven in alternating rounds
at c=16, so the service/naive ratio holds up on a shared, noisy machine (the goals use it).
Results: ``OUT/results.json``, ``OUT/results.md``, ``OUT/throughput.png``.

    python -m bench.serve_bench                 # all parts, ViT-S/16 at 224 (~8 min on 2 cores)
    python -m bench.serve_bench --quick         # c=1 and 16, shorter runs (~2 min)
    python -m bench.serve_bench --model models/ijepa-vit-tiny-cifar10 --parts service,naive
    python -m bench.serve_bench --parts source --source meta --size base   # see bench/source_bench.py
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from bench import report, source_bench
from bench.images import jpegs_at, small_jpegs
from bench.loadgen import RequestSpec, run_load
from bench.server_proc import ServerProcess, rss_kib

PARTS = ("ceiling", "decode", "service", "nobatch", "naive", "paired", "source")
PATCH_CASES = {
    "global (JSON)": ({}, {}),
    "global+patch (base64 JSON)": ({"outputs": "global,patch", "encoding": "base64"}, {}),
    "global+patch (binary safetensors)": (
        {"outputs": "global,patch"},
        {"Accept": "application/vnd.safetensors"},
    ),
}


@dataclass(frozen=True)
class BenchConfig:
    model: Path | None
    out: Path
    parts: tuple[str, ...]
    concurrency: tuple[int, ...]
    duration_s: float
    large_duration_s: float
    batch_sizes: tuple[int, ...]
    service_args: tuple[str, ...]
    client_procs: int
    profile: bool
    quick: bool
    source: str = "hf"
    size: str = "small"


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model directory (default: ViT-S/16 224 random, made in runs/bench)")
    p.add_argument("--out", type=Path, help="results folder (default runs/bench/<UTC time>)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--concurrency", default=None, help="comma-separated client counts (default 1,4,16,64)")
    p.add_argument("--duration", type=float, default=None, help="seconds per load point (default 8; quick 4)")
    p.add_argument("--service-args", default="", help="extra flags for python -m service (e.g. '--dtype bfloat16')")
    p.add_argument("--client-procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--profile", action="store_true", help="py-spy the service during its c=16 run")
    p.add_argument("--quick", action="store_true", help="concurrency 1,16, shorter runs, fewer variants")
    p.add_argument("--source", choices=("hf", "meta"), default="hf", help="the source part serves this copy")
    p.add_argument("--size", default="small", help="reference model size when --model is not given (default small)")
    a = p.parse_args(argv)
    parts = tuple(x for x in a.parts.split(",") if x)
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    conc = a.concurrency or ("1,16" if a.quick else "1,4,16,64")
    duration = a.duration or (3.0 if a.quick else 8.0)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return BenchConfig(
        model=a.model,
        out=a.out or Path("runs/bench") / stamp,
        parts=parts,
        concurrency=tuple(int(c) for c in conc.split(",")),
        duration_s=duration,
        large_duration_s=duration * 1.5,
        batch_sizes=(1, 8) if a.quick else (1, 4, 16),
        service_args=tuple(a.service_args.split()),
        client_procs=a.client_procs,
        profile=a.profile,
        quick=a.quick,
        source=a.source,
        size=a.size,
    )


def load_point(server: ServerProcess, images: list[bytes], c: int, cfg: BenchConfig, **spec_kw) -> dict:
    spec = RequestSpec(server.url + "/embed", **spec_kw)
    duration = cfg.large_duration_s if len(images[0]) > 1_000_000 else cfg.duration_s
    return run_load(spec, images, c, duration_s=duration, procs=cfg.client_procs).as_dict()


def c16(cfg: BenchConfig) -> int:
    return 16 if 16 in cfg.concurrency else max(cfg.concurrency)


def bench_service(model: Path, cfg: BenchConfig, small: list[bytes], large: list[bytes]) -> dict:
    """Default settings: info, correctness, concurrency sweep, output encodings, 12 MP photos."""
    out: dict = {"argv": ["--model", str(model), *cfg.service_args]}
    with ServerProcess(out["argv"], log_path=cfg.out / "service.log") as server:
        out["info"] = httpx.get(server.url + "/info", timeout=10).json()
        out["min_cosine_vs_fp32"] = report.min_cosine(server.url, model, small)
        out["sweep"] = [load_point(server, small, c, cfg) for c in cfg.concurrency]
        c = c16(cfg)
        out["outputs"] = {}
        for label, (params, headers) in PATCH_CASES.items():
            if label.startswith("global (JSON)"):
                out["outputs"][label] = next(r for r in out["sweep"] if r["concurrency"] == c)
            else:
                out["outputs"][label] = load_point(server, small, c, cfg, params=params, headers=headers)
        out["large"] = load_point(server, large, c, cfg)
        if cfg.profile:
            out["profile"] = report.profile(server, small, c, cfg.out, duration_s=max(cfg.duration_s, 6.0))
        out["peak_rss_mib"] = rss_kib(server.pid, "VmHWM") / 1024
        out["metrics"] = report.metric_lines(httpx.get(server.url + "/metrics", timeout=10).text)
    return out


def bench_nobatch(model: Path, cfg: BenchConfig, small: list[bytes]) -> dict:
    argv = ["--model", str(model), *cfg.service_args, "--max-batch-size", "1"]
    with ServerProcess(argv, log_path=cfg.out / "service-nobatch.log") as server:
        levels = (c16(cfg),) if cfg.quick else cfg.concurrency
        return {"argv": argv, "sweep": [load_point(server, small, c, cfg) for c in levels]}


def bench_naive(model: Path, cfg: BenchConfig, small: list[bytes], large: list[bytes]) -> dict:
    from bench.models import hf_copy

    hf = hf_copy(model)
    with ServerProcess([str(hf)], module="bench.naive_server", log_path=cfg.out / "naive.log") as server:
        out = {"argv": ["python -m bench.naive_server", str(hf)]}
        out["sweep"] = [load_point(server, small, c, cfg) for c in cfg.concurrency]
        out["large"] = load_point(server, large, c16(cfg), cfg)
        out["peak_rss_mib"] = rss_kib(server.pid, "VmHWM") / 1024
    return out


def bench_paired(model: Path, cfg: BenchConfig, small: list[bytes], large: list[bytes]) -> dict:
    """All three servers up at once (an idle one costs ~nothing); the order rotates every round.

    Small JPEGs go to the service, the service with batch 1 and the naive server; 12 MP JPEGs to
    the service and the naive server. Ratios are taken within a round, so slow drifts of a shared
    machine cancel out.
    """
    from bench.models import hf_copy

    c, rounds = c16(cfg), []
    svc_argv = ["--model", str(model), *cfg.service_args]
    with (
        ServerProcess(svc_argv, log_path=cfg.out / "paired-service.log") as svc,
        ServerProcess([*svc_argv, "--max-batch-size", "1"], log_path=cfg.out / "paired-nobatch.log") as one,
        ServerProcess([str(hf_copy(model))], module="bench.naive_server", log_path=cfg.out / "paired-naive.log") as nv,
    ):
        floor = lone_image_floor(model, httpx.get(svc.url + "/info", timeout=10).json(), small)
        latency = []
        for r in range(2 if cfg.quick else 3):
            floor_ms = floor()  # measured next to the c=1 run it is compared with
            p50 = load_point(svc, small, 1, cfg)["p50_ms"]
            latency.append({"round": r, "floor_ms": floor_ms, "service_p50_ms": p50, "ratio": p50 / floor_ms})
            for label, images, servers in (
                ("small JPEG", small, [("service", svc), ("service, batch 1", one), ("naive", nv)]),
                ("12 MP JPEG", large, [("service", svc), ("naive", nv)]),
            ):
                order = servers[r % len(servers) :] + servers[: r % len(servers)]
                point = {name: load_point(server, images, c, cfg) for name, server in order}
                ratio = point["service"]["images_s"] / max(point["naive"]["images_s"], 1e-9)
                rounds.append({"round": r, "images": label, **point, "ratio": ratio})
    medians = {
        label: float(np.median([x["ratio"] for x in rounds if x["images"] == label]))
        for label in ("small JPEG", "12 MP JPEG")
    }
    one = "service, batch 1"
    nobatch = [x[one]["images_s"] / max(x["naive"]["images_s"], 1e-9) for x in rounds if one in x]
    return {
        "concurrency": c,
        "rounds": rounds,
        "median_ratio": medians,
        "median_nobatch_ratio": float(np.median(nobatch)),
        "c1_latency": latency,
        "median_c1_ratio": float(np.median([x["ratio"] for x in latency])),
    }


def lone_image_floor(model: Path, info: dict, small: list[bytes]) -> Callable[[], float]:
    """A function measuring, in this process, the least a lone request can cost: the service's own
    ``decode_image`` on the small photos plus one batch-1 forward of the backend and dtype the
    service runs (ONNX Runtime with all threads, as its wide session; OpenVINO as compiled), medians in ms."""
    from bench.ceiling import ONNX_GRAPHS, SHORT_DTYPE, onnx_runner, time_forward, torch_runner
    from jepa.formats.native import read_config

    backend, config = info["backend"], read_config(model)
    dtype = SHORT_DTYPE[backend["dtype"]]
    if backend["name"] == "onnxruntime":
        run = onnx_runner(model / backend.get("graph", ONNX_GRAPHS[dtype]), "cpu")
    elif backend["name"] == "openvino":  # compiled as the service compiled it
        from bench.cpu_engines import openvino

        run = openvino(model / backend["graph"], backend["compile_config"].get("INFERENCE_PRECISION_HINT"))
    else:
        run = torch_runner(model, dtype, "cpu")
    x = np.zeros((1, 3, config.image_size, config.image_size), np.float32)

    def measure() -> float:
        decode_ms = float(np.median(decode_ms_per_file(model, small, min_time_s=0.1)))
        return 1000 * time_forward(lambda: run(x), 1.0) + decode_ms

    return measure


def decode_ms_per_file(model: Path, files: list[bytes], min_time_s: float) -> list[float]:
    """Median ms of the service's own ``decode_image`` (default options) on each file, for ``model``."""
    from bench.ceiling import time_forward
    from jepa.formats.native import read_config
    from service.decode import DecodeOptions, decode_image

    config = read_config(model)
    opts = DecodeOptions(config.preprocess, config.image_size, 40_000_000, True)
    return [1000 * time_forward(lambda f=f: decode_image(f, 0, opts), min_time_s) for f in files]


def decode_costs(model: Path, small: list[bytes], large: list[bytes]) -> dict:
    """ms per image through the service's own decode path (``service.decode.decode_image``)."""
    return {
        name: float(np.mean(decode_ms_per_file(model, files, min_time_s=0.3)))
        for name, files in (("small", small), ("large", large))
    }


def run(cfg: BenchConfig) -> dict:
    from bench.models import reference_model

    cfg.out.mkdir(parents=True, exist_ok=True)
    model = cfg.model or reference_model(size=cfg.size)
    small, large = small_jpegs(12), jpegs_at(12.0, 3)
    res: dict = {"config": {k: str(v) for k, v in vars(cfg).items()}, "model": str(model), "machine": report.machine()}
    res["image_kib"] = {
        "small": np.mean([len(b) for b in small]) / 1024,
        "large": np.mean([len(b) for b in large]) / 1024,
    }
    steps = {
        "ceiling": lambda: ceiling_part(model, cfg),
        "decode": lambda: {"service_decode_ms": decode_costs(model, small, large), "table": decode_table(cfg)},
        "service": lambda: bench_service(model, cfg, small, large),
        "nobatch": lambda: bench_nobatch(model, cfg, small),
        "naive": lambda: bench_naive(model, cfg, small, large),
        "paired": lambda: bench_paired(model, cfg, small, large),
        "source": lambda: source_bench.bench_source(
            model, cfg.source, cfg.out, small, c16(cfg), 2 if cfg.quick else 3, cfg.duration_s
        ),
    }
    for name in cfg.parts:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        res[name] = steps[name]()
        res.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        (cfg.out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    res["goals"] = report.goals(res)
    (cfg.out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    report.plot(res, cfg.out / "throughput.png")
    (cfg.out / "results.md").write_text(report.markdown(res))
    return res


def ceiling_part(model: Path, cfg: BenchConfig) -> list[dict]:
    from bench.ceiling import ceilings

    variants = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    min_time = 0.8 if cfg.quick else 2.0
    return [c.as_dict() for c in ceilings(model, variants=variants, batch_sizes=cfg.batch_sizes, min_time_s=min_time)]


def decode_table(cfg: BenchConfig) -> list[dict]:
    from bench.decode_bench import decode_table as table

    return table((0.3, 12.0) if cfg.quick else (0.3, 3.0, 12.0), min_time_s=0.3)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    res = run(cfg)
    print((cfg.out / "results.md").read_text())
    print(f"[bench] wrote {cfg.out}/results.md, results.json, throughput.png in {sum(res['seconds'].values()):.0f}s")


if __name__ == "__main__":
    main()
