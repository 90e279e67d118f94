"""The engine trial: check OpenVINO on photos and time it against the ONNX Runtime graph the
service would otherwise serve, on this machine, and write ``engines.json`` beside the graphs.

    python -m service.engine_trial MODEL_DIR [--threads N] [--max-batch-size 32]

The start-up build (service/optimize.py) runs it in a child process after the export, so every
built cache entry carries the measurement (a crash or OOM there costs the trial, not the server).
A directory exported by hand gets it by running the command once; the server does not time
engines at every start (seconds to minutes for big models, on every replica, and a model
directory may be read-only), so without the record it serves ONNX Runtime as before.

What it measures, torch-free and with the service's own backends:

- **check**: OpenVINO (as the service compiles it) and ONNX Runtime on ``model.onnx`` (which
  export verified against PyTorch fp32) on the photos export verifies with (:mod:`jepa.photos`);
  the least cosine per output. The service requires the global one >= 0.999.
- **speed**: each engine's plan as the service would resolve it (workers, threads, graph), in
  the two regimes the batcher produces: a lone image (batch 1, one call at a time, ``alone``:
  the ONNX backend's all-thread session) and load (full batches of ``min(8, max batch size)``
  with every worker calling ``run`` at once), in interleaved rounds so a busy machine's drift
  hits both engines alike; the median images/s of each. OpenVINO is chosen only where it is
  faster under load, and at batch 1 faster or within the spread of the rounds (the lone-image
  figure is the one a busy machine moves most; see :mod:`service.engine_choice`) (a first
  version timed batch 1 with every worker busy too, which no request
  pattern but a steady stream of lone images produces, and two half-width ONNX Runtime workers
  won that on AMX while losing 2x at batch 8).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from jepa.contract import OUTPUTS, EngineRun, EnginesRecord, Output, read_record
from jepa.errors import CheckpointError, JepaError
from jepa.formats.native import read_config
from jepa.photos import load_photos, model_inputs
from service.backends import Backend, load_backend
from service.cpu_features import cpu_isa
from service.engine_choice import engine_versions
from service.plan import Plan, resolve_plan
from service.settings import Settings

log = logging.getLogger("service")
ALL: frozenset[Output] = frozenset(OUTPUTS)
GLOBAL: frozenset[Output] = frozenset({"global"})


def plans(model: Path, threads: int, workers: int, max_batch_size: int) -> tuple[Plan, Plan]:
    """(the ONNX Runtime plan ``--dtype auto`` serves, the OpenVINO plan) for ``model`` on the CPU."""
    common = {"model": str(model), "device": "cpu", "dtype": "auto", "optimize": False,
              "max_batch_size": max_batch_size, "inference_threads": threads, "inference_workers": workers}  # fmt: skip
    baseline = resolve_plan(Settings(backend="onnxruntime", **common), str(model))  # type: ignore[arg-type]
    openvino = resolve_plan(Settings(backend="openvino", **common), str(model))  # type: ignore[arg-type]
    return baseline, openvino


def cosines(reference: Backend, candidate: Backend, pixels: np.ndarray) -> dict[str, float]:
    """The least row cosine of ``candidate`` to ``reference``, by output, on ``pixels``."""
    ref, got = reference.run(pixels, ALL), candidate.run(pixels, ALL)
    out = {}
    for o in sorted(reference.outputs & candidate.outputs):
        r, g = ref.get(o), got.get(o)
        assert r is not None and g is not None  # both were asked for every output both graphs have
        a, b = r.astype(np.float64).reshape(-1, r.shape[-1]), g.astype(np.float64).reshape(-1, r.shape[-1])
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
        out[o] = float(cos.min())
    return out


def throughput(backend: Backend, batch: np.ndarray, workers: int, seconds: float) -> float:
    """images/s with ``workers`` threads calling ``backend.run`` on ``batch`` back to back for
    ``seconds``; one worker runs ``alone`` (nothing else runs: a wide backend uses every thread)."""
    done = [0] * workers
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            backend.run(batch, GLOBAL, workers == 1)
            done[i] += len(batch)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def timed(runs: dict[str, tuple[Backend, int]], batches: dict[int, np.ndarray], rounds: int,
          seconds: float) -> dict[str, dict[int, list[float]]]:  # fmt: skip
    """images/s of each of ``rounds`` interleaved rounds, per engine and batch size: batch 1 as a
    lone image (one caller), bigger batches with all of the engine's workers busy."""
    for backend, _ in runs.values():  # first calls (allocation, kernel choice) outside the timing
        for batch in batches.values():
            backend.run(batch, GLOBAL)
            backend.run(batch, GLOBAL, True)
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in runs}
    for _ in range(rounds):
        for name, (backend, workers) in runs.items():
            for b, batch in batches.items():
                samples[name][b].append(throughput(backend, batch, 1 if b == 1 else workers, seconds))
    return samples


def engine_run(plan: Plan, backend: Backend, rounds: dict[int, list[float]]) -> EngineRun:
    """The record of one engine: its plan, the precision it ran, the median and each round's images/s."""
    assert plan.graph is not None and plan.backend != "torch"
    return EngineRun(engine=plan.backend, graph=plan.graph.name, precision=backend.info.dtype, workers=plan.workers,
                     threads=plan.wide_threads, images_s={b: round(float(np.median(v)), 2) for b, v in rounds.items()},
                     rounds={b: tuple(round(x, 2) for x in v) for b, v in rounds.items()})  # fmt: skip


def reference_text(graph: Path) -> str:
    """What the cosines compare against, and how far that graph is from PyTorch fp32 per export.json."""
    try:
        record = read_record(graph.parent)
    except CheckpointError:
        record = None
    entry = record.graphs.get(graph.name) if record is not None else None
    if entry is None:
        return f"{graph.name} on onnxruntime (no export.json entry: not checked against PyTorch here)"
    return f"{graph.name} on onnxruntime (export: max relative error {entry.summary.max_rel:.2e} to PyTorch fp32)"


def trial(model: Path, threads: int, workers: int = 0, max_batch_size: int = 32, rounds: int = 3,
          seconds: float = 1.0) -> EnginesRecord:  # fmt: skip
    """Check and time both engines on ``model`` (see the module docstring); returns the record.
    The fp32 reference is released before the timed engines load: for a big model the weights in
    three precisions at once would be the peak of the whole build."""
    base_plan, ov_plan = plans(model, threads, workers, max_batch_size)
    config = read_config(model)
    photos = load_photos(config)
    pixels = model_inputs(photos, config)  # images, or for a video model clips, as export verified
    fp32_plan = resolve_plan(Settings(model=str(model), device="cpu", backend="onnxruntime", dtype="float32",
                                      optimize=False, inference_workers=1), str(model))  # fmt: skip
    assert fp32_plan.graph is not None
    reference = load_backend(fp32_plan)
    try:
        openvino = load_backend(ov_plan)
        cosine_min = cosines(reference, openvino, pixels)
    finally:
        reference.close()
    try:
        baseline = load_backend(base_plan)
        sizes = sorted({1, min(8, max_batch_size)})
        batches = {b: np.ascontiguousarray(np.resize(pixels, (b, *pixels.shape[1:]))) for b in sizes}
        rates = timed({"baseline": (baseline, base_plan.workers), "openvino": (openvino, ov_plan.workers)},
                      batches, rounds, seconds)  # fmt: skip
        baseline.close()
    finally:
        openvino.close()
    return EnginesRecord(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        isa=cpu_isa().as_dict(),
        cpus=base_plan.wide_threads,
        versions=engine_versions(),
        photos=photos.source,
        reference=reference_text(fp32_plan.graph),
        cosine_min=cosine_min,
        baseline=engine_run(base_plan, baseline, rates["baseline"]),
        openvino=engine_run(ov_plan, openvino, rates["openvino"]),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="a model directory with model.onnx (and model.int8.onnx)")
    p.add_argument("--threads", type=int, default=0, help="the thread budget (0: the CPUs this process may use)")
    p.add_argument("--workers", type=int, default=0, help="inference workers, as --inference-workers (0: auto)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="per engine, batch size and round")
    a = p.parse_args(argv)
    try:
        record = trial(a.model_dir, a.threads, a.workers, a.max_batch_size, a.rounds, a.seconds)
        path = record.write(a.model_dir)
    except (JepaError, OSError, ValueError, RuntimeError) as e:  # a missing graph, no openvino, a bad graph
        print(f"engine_trial: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    ov, base = record.openvino, record.baseline
    print(f"wrote {path}: global cosine {record.cosine_min.get('global', float('nan')):.6f}; images/s by batch: "
          f"openvino {ov.precision} {ov.images_s}, onnxruntime {base.graph} {base.images_s}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
