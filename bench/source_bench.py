"""The ``source`` part of :mod:`bench.serve_bench`: the service as users start it, on the checkpoint
they have (a Hugging Face ``IJepaModel`` directory or an official ``.pth.tar``), with default
settings and an empty cache.

It times the first start (the start-up build: ONNX export, int8, verification) and the second
(cache hit), each from spawning ``python -m service`` to ``/ready`` 200; then, with the second
server and the naive server up at once, drives both in alternating rounds at c=16 on small JPEGs
(as the ``paired`` part does) and checks the served embeddings against fp32 ``embed()``.

    python -m bench.serve_bench --parts source --source hf --quick
    python -m bench.serve_bench --parts source --source meta --size base --quick
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np

from bench import report
from bench.loadgen import RequestSpec, run_load
from bench.server_proc import ServerProcess

BUILD_TIMEOUT_S = 3600.0  # a ViT-B build on a busy 2-core machine takes minutes


def source_copy(model: Path, kind: str) -> Path:
    """The reference weights as users get them: ``hf`` (IJepaModel directory) or ``meta`` (.pth.tar)."""
    from bench.models import hf_copy, meta_copy

    return hf_copy(model) if kind == "hf" else meta_copy(model)


def timed_start(argv: list[str], env: dict[str, str], log: Path) -> tuple[ServerProcess, float, dict]:
    """A started server, the seconds from spawn to ``/ready`` 200, and its ``/info``."""
    server = ServerProcess(argv, env=env, log_path=log, ready_timeout_s=BUILD_TIMEOUT_S)
    t0 = time.perf_counter()
    server.start()
    seconds = time.perf_counter() - t0
    return server, seconds, httpx.get(server.url + "/info", timeout=10).json()


def bench_source(model: Path, kind: str, out: Path, small: list[bytes], c: int, rounds: int, duration_s: float) -> dict:
    src = source_copy(model, kind)
    cache_dir = out / f"cache-{kind}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    argv, env = ["--model", str(src)], {"JEPA_CACHE_DIR": str(cache_dir), "JEPA_OPTIMIZE": "true"}
    first, first_s, first_info = timed_start(argv, env, out / f"source-{kind}-first.log")
    first.stop()
    svc, second_s, info = timed_start(argv, env, out / f"source-{kind}-second.log")
    res: dict = {"kind": kind, "source": str(src), "argv": argv, "first_start_s": first_s, "second_start_s": second_s,
                 "first_optimize": first_info.get("optimize"), "info": info}  # fmt: skip
    try:
        res["min_cosine_vs_fp32"] = report.min_cosine(svc.url, src, small)
        naive_log = out / f"source-{kind}-naive.log"
        with ServerProcess([str(source_copy(model, "hf"))], module="bench.naive_server", log_path=naive_log,
                           ready_timeout_s=BUILD_TIMEOUT_S) as naive:  # fmt: skip
            res["rounds"] = []
            for r in range(rounds):
                order = [("service", svc), ("naive", naive)][:: 1 if r % 2 == 0 else -1]
                point = {
                    name: run_load(RequestSpec(s.url + "/embed"), small, c, duration_s=duration_s).as_dict()
                    for name, s in order
                }
                point["ratio"] = point["service"]["images_s"] / max(point["naive"]["images_s"], 1e-9)
                res["rounds"].append(point)
    finally:
        svc.stop()
    res["median_ratio"] = float(np.median([p["ratio"] for p in res["rounds"]]))
    res["concurrency"] = c
    return res


def goals(part: dict) -> list[dict]:
    """The issue's targets for a source served with default settings."""
    ratio, cos = part.get("median_ratio"), part.get("min_cosine_vs_fp32")
    label = f"{part.get('kind')} source, default settings"
    errors = sum(p[name].get("errors", 0) for p in part.get("rounds", []) for name in ("service", "naive"))
    return [
        {"goal": f"{label}: non-503 errors in its rounds", "target": "0", "measured": errors, "met": errors == 0},
        {"goal": f"{label}: service / naive images/s at c={part.get('concurrency')} (paired median)",
         "target": ">= 2.5x", "measured": ratio, "met": None if ratio is None else ratio >= 2.5},
        {"goal": f"{label}: min cosine vs fp32 embed()", "target": ">= 0.999", "measured": cos,
         "met": None if cos is None else cos >= 0.999},
    ]  # fmt: skip


def engine_line(choice: dict | None) -> str:
    """Which engine the service picked on this CPU and the figures it measured (service/engine_choice.py)."""
    if not choice:
        return "none made (not a CPU with backend and dtype auto)."
    measured = choice.get("measured") or {}
    rates = {k: measured[k]["images_s"] for k in ("openvino", "baseline") if k in measured}
    return f"**{choice['engine']}**: {choice['why']}; measured images/s by batch: {rates or 'none'}."


def markdown(part: dict) -> list[str]:
    backend, opt = part["info"].get("backend", {}), part.get("first_optimize") or {}
    rounds = ", ".join(
        f"{p['service']['images_s']:.1f} vs {p['naive']['images_s']:.1f} img/s ({p['ratio']:.2f}x)"
        for p in part.get("rounds", [])
    )
    return [
        f"## Served from the {part['kind']} source with default settings",
        "",
        f"`python -m service --model {part['source']}` (empty `JEPA_CACHE_DIR`): first start "
        f"{part['first_start_s']:.1f} s to /ready (build {opt.get('build_seconds')} s, status {opt.get('status')}), "
        f"second start {part['second_start_s']:.1f} s (status {part['info'].get('optimize', {}).get('status')}). "
        f"Served: {backend.get('name')} {backend.get('dtype')} ({backend.get('why')}).",
        f"CPU engine choice (the build's engine trial, `engines.json`): {engine_line(backend.get('engine_choice'))}",
        "",
        f"Paired rounds at c={part['concurrency']}, small JPEGs, service vs naive: {rounds}; median "
        f"{part['median_ratio']:.2f}x. Min cosine vs fp32 `embed()`: {part['min_cosine_vs_fp32']:.6f}.",
        "",
    ]
