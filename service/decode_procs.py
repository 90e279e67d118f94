"""Image decoding in worker processes, each with its own GIL (``--decode-processes N``).

Decode threads release the GIL inside Pillow's C code but take it back between its chunked
decode calls and for the Python around them, and on a many-core GPU host they share it with the
event loop and the inference thread: on a lent H200, 8 decode threads managed about 120 3 MP
JPEGs a second where their cores could have done some 350 (docs/BENCHMARKS.md). Worker
processes do not share that lock. The cost is a pickle of each file on the way in and of the
prepared ``uint8 [S, S, 3]`` pixels on the way out, and a few tens of MB per process.

A worker that dies (a decoder crash on hostile bytes, the OOM killer) breaks the whole
``ProcessPoolExecutor``: :class:`DecodeProcesses` then replaces it and each image that was in
flight is tried once more in the new pool, so only an image that breaks the pool twice fails
(400), not every image that happened to share the broken pool with it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from service.decode import DecodeOptions, decode_image, register_plugins
from service.errors import InvalidImage

log = logging.getLogger("service")


def _ready() -> bool:
    register_plugins()  # imports pillow-heif here too, before any image is timed
    return True


class DecodeProcesses:
    """``processes`` spawned workers (never forked: the parent may hold CUDA or thread state)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._context = multiprocessing.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=self._context)

    async def start(self) -> None:
        """Start every worker and import the decoder there, so no request pays a process start."""
        await self._warm(self._pool)

    async def _warm(self, pool: ProcessPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.processes)))

    async def decode(
        self, data: bytes, index: int, options: DecodeOptions, on_start: Callable[[], None] = lambda: None
    ) -> np.ndarray:
        """``on_start`` runs as each attempt is handed to a started worker (the decode timeout's clock)."""
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            pool = self._pool
            try:
                if attempt:  # a replaced pool: its workers start (and import) before the clock does
                    await self._warm(pool)
                future = loop.run_in_executor(pool, decode_image, data, index, options)
                on_start()
                return await future
            except BrokenProcessPool:
                self._replace(pool)
        raise InvalidImage(f"image {index} made a decoder process die, twice", index=index)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:  # the first image to notice replaces it; the others just retry
            log.warning("a decoder process died; starting a new pool of %d", self.processes)
            self._pool = self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The live workers' process ids (for ``/info`` and tests)."""
        return sorted(p.pid for p in (self._pool._processes or {}).values() if p.pid is not None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
