"""The model-only ceiling: forward passes on already-preprocessed tensors, no HTTP, no decode.

For each backend/dtype (torch fp32/bf16/fp16, ONNX Runtime on the graphs an export left in the
model directory) and each batch size, images/s (clips/s for a V-JEPA 2 model, whose inputs are
``frames_per_clip``-frame clips) over repeated forwards; the best batch size is the
ceiling the service is measured against. Batch-1 latency is the floor for a lone request.

ONNX Runtime on a CPU is measured twice: one caller with every thread, and (with 2+ CPUs) two
callers of one session with half the threads each -- the two layouts the service's
``--inference-workers`` chooses between. The service is held to the better of the two.

    python -m bench.ceiling MODEL_DIR [--batch-sizes 1,4,16] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from service.settings import usable_cpus

ONNX_GRAPHS = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8"}  # service name -> here


@dataclass
class Ceiling:
    backend: str  # torch | onnxruntime
    dtype: str  # fp32 | bf16 | fp16 | int8
    device: str
    images_s: dict[int, float]  # batch size -> images/s
    batch1_ms: float  # one batch-1 call (with workers > 1: while the other workers run too)
    workers: int = 1  # concurrent callers, each with 1/workers of the CPUs

    @property
    def best_batch(self) -> int:
        return max(self.images_s, key=self.images_s.get)

    @property
    def best_images_s(self) -> float:
        return self.images_s[self.best_batch]

    def as_dict(self) -> dict:
        return {**asdict(self), "best_batch": self.best_batch, "best_images_s": self.best_images_s}


def time_forward(
    fn: Callable[[], object], min_time_s: float, min_iters: int = 3, sync: Callable = lambda: None
) -> float:
    """Median seconds per call of ``fn`` (after one warm-up call), repeated for at least ``min_time_s``.

    The median, not the mean, so that a shared machine's occasional stalls do not pass for the
    model's cost. ``sync`` waits for the device (CUDA) so each call is timed to completion.
    """
    fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def torch_runner(model_dir: str | Path, dtype: str, device: str) -> Callable[[np.ndarray], object]:
    """A callable running our encoder (``jepa.load_encoder``) on a float32 batch, as the torch backend does."""
    import torch

    import jepa

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model = jepa.load_encoder(model_dir, device=device).to(torch_dtype)

    @torch.inference_mode()
    def run(batch: np.ndarray) -> object:
        tokens = model(torch.from_numpy(batch).to(device=device, dtype=torch_dtype))  # [B, N, D]
        return tokens.mean(dim=1).float().cpu()

    return run


def onnx_runner(graph: Path, device: str, threads: int = 0) -> Callable[[np.ndarray], object]:
    """A session built as the service builds its own (``make_session``, spinning on)."""
    from service.backends.onnx import make_session

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    session = make_session(graph, providers, threads, spin=True)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})


def concurrent_rate(
    run: Callable[[np.ndarray], object], x: np.ndarray, workers: int, min_time_s: float
) -> tuple[float, float]:
    """``(images/s, median seconds per call)`` with ``workers`` threads calling ``run(x)`` at once."""
    run(x)  # warm-up
    stop = time.perf_counter() + min_time_s
    times: list[list[float]] = [[] for _ in range(workers)]

    def loop(k: int) -> None:
        while time.perf_counter() < stop or not times[k]:
            t0 = time.perf_counter()
            run(x)
            times[k].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    calls = [t for ts in times for t in ts]
    return len(calls) * len(x) / elapsed, float(np.median(calls))


def measure(
    run: Callable[[np.ndarray], object],
    shape: tuple[int, ...],
    batch_sizes: Sequence[int],
    min_time_s: float,
    sync: Callable,
    workers: int = 1,
) -> tuple[dict[int, float], float]:
    rng = np.random.default_rng(0)
    rates, batch1_ms = {}, float("nan")
    for bs in batch_sizes:
        x = rng.standard_normal((bs, *shape), dtype=np.float32)  # images [B, 3, S, S] or clips [B, T, 3, S, S]
        if workers == 1:
            sec = time_forward(lambda x=x: run(x), min_time_s, sync=sync)
            rates[bs] = bs / sec
        else:
            rates[bs], sec = concurrent_rate(run, x, workers, min_time_s)
        if bs == 1:
            batch1_ms = sec * 1000.0
    return rates, batch1_ms


def ceilings(
    model_dir: str | Path,
    *,
    variants: Sequence[tuple[str, str]] = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32")),
    batch_sizes: Sequence[int] = (1, 4, 16),
    device: str = "cpu",
    min_time_s: float = 2.0,
) -> list[Ceiling]:
    """Measure every variant that can run here; ONNX variants need their graph in ``model_dir``."""
    from jepa.formats.native import read_config

    shape = read_config(model_dir).input_shape
    sync = _cuda_sync if device == "cuda" else (lambda: None)
    out = []
    cpus = usable_cpus()
    for backend, dtype in variants:
        if backend == "onnxruntime":
            graph = Path(model_dir) / ONNX_GRAPHS[dtype]
            if not graph.is_file():
                continue
            layouts = [1, 2] if device == "cpu" and cpus >= 2 else [1]
            for workers in layouts:
                run = onnx_runner(graph, device, threads=0 if workers == 1 else cpus // workers)
                rates, b1 = measure(run, shape, batch_sizes, min_time_s, sync, workers)
                out.append(Ceiling(backend, dtype, device, rates, b1, workers))
                del run
        else:
            run = torch_runner(model_dir, dtype, device)
            rates, b1 = measure(run, shape, batch_sizes, min_time_s, sync)
            out.append(Ceiling(backend, dtype, device, rates, b1))
            del run
    return out


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--min-time", type=float, default=2.0)
    a = p.parse_args(argv)
    variants = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    res = ceilings(
        a.model_dir,
        variants=variants,
        batch_sizes=[int(b) for b in a.batch_sizes.split(",")],
        device=a.device,
        min_time_s=a.min_time,
    )
    from bench.host import host, host_line

    print(host_line())
    print(json.dumps({"machine": host(), "ceilings": [c.as_dict() for c in res]}, indent=2))


if __name__ == "__main__":
    main()
