"""Start-up calibration, before the batcher takes requests: warm-up and the batch-size probe.

Warm-up runs a full batch through every inference thread at once (and the wide mode, when there
is one), so no request pays a start-up cost. The probe times batches of 1, 2, 4, ... and caps
batches where a bigger one gets slower per image: on a CPU it often does (ONNX Runtime int8
ViT-S/16 on 2 cores: 84.4 img/s at batch 4 against 95.9 at batch 1, docs/BENCHMARKS.md), so
coalescing must stop where it stops paying. The batcher is then built with the one cap found.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service.backends.base import Assemble, Backend

GLOBAL = frozenset({"global"})


@dataclass(frozen=True)
class Calibration:
    """The batch cap in use and the probe's ms per image by batch size (empty when not probed)."""

    batch_size: int
    ms_per_image: dict[int, float] = field(default_factory=dict)


async def warmup(
    backend: Backend, assemble: Assemble, pool: Executor, max_batch: int, workers: int, wide: bool
) -> None:
    """A full batch through every inference thread at once, then once wide when there is a wide mode."""
    batch = assemble(list(np.zeros((max_batch, *backend.config.pixel_shape), dtype=np.uint8)))  # images or clips
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(pool, backend.run, batch, GLOBAL) for _ in range(workers)))
    if wide:
        await loop.run_in_executor(pool, backend.run, batch, GLOBAL, True)


def probe_sizes(
    batch_of: Callable[[int], Callable[[], object]],
    max_batch: int,
    budget_s: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[int, float], bool]:
    """ms per image (median of 3 calls of ``batch_of(b)``'s call) at b = 1, 2, 4, ..., and whether it
    rose more than 5% past the best so far (the probe stops there). Stops early when ``budget_s``
    is spent. ``batch_of(b)`` prepares the batch, untimed, and returns the call to time."""
    costs: dict[int, float] = {}
    spent, b = 0.0, 1
    while b <= max_batch and spent < budget_s:
        run = batch_of(b)
        times = []
        for _ in range(3):
            t0 = clock()
            run()
            times.append(clock() - t0)
        spent += sum(times)
        costs[b] = 1000 * float(np.median(times)) / b
        if costs[b] > min(costs.values()) * 1.05:
            return costs, True
        b *= 2
    return costs, False


def pick_batch_size(costs: dict[int, float], rose: bool, max_batch: int, tolerance: float = 0.03) -> int:
    """The largest size within ``tolerance`` of the best cost per image when the cost rose; else
    ``max_batch`` (the cost kept falling, as on a GPU, or the budget ran out first)."""
    if not rose:
        return max_batch
    best = min(costs.values())
    return max(b for b, ms in costs.items() if ms <= best * (1 + tolerance))


async def probe_batch_size(backend: Backend, assemble: Assemble, pool: Executor, max_batch: int) -> Calibration:
    """Time batches on one inference thread and pick the cap (see :func:`pick_batch_size`)."""
    shape = backend.config.pixel_shape  # [S, S, 3], or a video model's clip [T, S, S, 3]

    def batch_of(b: int) -> Callable[[], object]:
        batch = assemble([np.zeros(shape, dtype=np.uint8)] * b)
        return lambda: backend.run(batch, GLOBAL)

    costs, rose = await asyncio.get_running_loop().run_in_executor(pool, probe_sizes, batch_of, max_batch)
    return Calibration(pick_batch_size(costs, rose, max_batch), costs)
