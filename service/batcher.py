"""The dynamic batcher: ONE asyncio task owns the :class:`~service.image_queue.ImageQueue` and runs
its batches; callers get one Future per image, resolved with that image's
:class:`~jepa.contract.Embeddings`.

Routes call :meth:`Batcher.submit` (admission happens right there: a full queue raises
:class:`Overloaded` at once). The task takes whatever is queued, up to ``max_batch_size`` (the cap
calibration chose), after waiting up to ``max_wait_s`` for company when that is set, and hands it
to one of ``workers`` inference threads, which stacks and normalises it and runs it. While every
worker is busy, the next batch is taken and normalised in the preparation thread; when one
finishes, that batch is topped up with anything that arrived meanwhile and starts. With several
CPU workers (``wide``) a batch that finds them all idle is split over them, and a lone image runs
on all threads (:meth:`_plan`). A failing batch fails only its own futures; a fatal device error
latches :attr:`fatal` (``/ready`` then 503). Warm-up and the batch-size probe run before the
batcher exists (:mod:`service.calibration`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import numpy as np

from jepa.contract import Output
from service.backends.base import Assemble, Backend, is_fatal
from service.device_pixels import concat
from service.errors import InferenceFailed, NotReady
from service.image_queue import Entry, ImageQueue, Result
from service.metrics import Metrics
from service.plan import BatchLimits

log = logging.getLogger("service")
Part = tuple[list[Entry], np.ndarray | None, bool]  # entries, their prepared batch (or None), wide


class InferenceTimeout(RuntimeError):
    """The backend did not return within ``inference_timeout_s`` (a hung device or driver)."""


class Batcher:
    """Owns the queue's task; build it inside the running loop (it starts at once)."""

    def __init__(
        self,
        backend: Backend,
        limits: BatchLimits,
        assemble: Assemble,
        metrics: Metrics,
        *,
        workers: int = 1,
        wide: bool = False,
        infer_pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.workers = workers
        self.wide = wide
        self.queue = ImageQueue(limits.max_queue, limits.retry_after_s, metrics)
        self.fatal: BaseException | None = None
        self._assemble = assemble
        self._metrics = metrics
        # One thread stacks and normalises the next batch while the workers run theirs.
        self._prep_pool = ThreadPoolExecutor(1, thread_name_prefix="jepa-prep")
        self._infer_pool = infer_pool or ThreadPoolExecutor(workers, thread_name_prefix="jepa-infer")
        self._wakeup = asyncio.Event()
        self._closing = False
        self._hurry = False  # set when draining: stop waiting for batches to fill
        self._task = asyncio.create_task(self._loop(), name="jepa-batcher")
        self._task.add_done_callback(self._on_loop_exit)

    # -- the caller's side --

    def submit(
        self, images: list[np.ndarray], outputs: frozenset[Output] = frozenset({"global"})
    ) -> list[asyncio.Future[Result]]:
        """Queue ``images`` (uint8 ``[S, S, 3]`` each); raises at once when they cannot be admitted.
        Their results carry the optional outputs in ``outputs`` only (``global`` always)."""
        self.queue.admit(len(images))
        loop = asyncio.get_running_loop()
        entries = [Entry(pixels, loop.create_future(), outputs) for pixels in images]
        self.queue.push(entries)
        self._wakeup.set()
        return [e.future for e in entries]

    def reserve(self, n: int) -> AbstractContextManager[None]:
        """Room for ``n`` images while they are decoded (see :meth:`ImageQueue.reserve`)."""
        return self.queue.reserve(n)

    # -- lifecycle --

    def hurry(self) -> None:
        """Run what is queued without waiting ``max_wait`` for company (used while draining)."""
        self._hurry = True
        self._wakeup.set()

    async def close(self, timeout_s: float) -> None:
        """Stop admitting, finish what is queued (up to ``timeout_s``), then release the threads."""
        self._closing = True
        self.queue.refusal = "the server is shutting down"
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except asyncio.TimeoutError:
            log.warning("batcher did not drain within %.1f s; failing %d queued images", timeout_s, len(self.queue))
            self._task.cancel()
        self.queue.fail_all(NotReady("the server shut down before this image ran"))
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)

    def _latch(self, error: BaseException) -> None:
        self.fatal = error
        self.queue.refusal = f"a fatal inference error latched: {type(error).__name__}"

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._latch(task.exception())  # type: ignore[arg-type]
            log.error("the batcher task died", exc_info=self.fatal)
            self.queue.fail_all(NotReady("the batcher stopped after an internal error"))

    # -- the task's side --

    async def _loop(self) -> None:
        running: dict[asyncio.Task[None], bool] = {}  # each batch in flight -> whether it runs wide
        try:
            while (entries := await self._collect()) is not None:
                batch: np.ndarray | None = None  # with a worker free, it stacks and normalises the batch itself
                if self._all_busy(running):  # prepare this batch meanwhile, then wait (_infer never raises)
                    batch = await self._prepare(entries)
                while self._all_busy(running):
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        del running[task]
                    entries, batch = await self._top_up(entries, batch)
                for part, rows, wide in self._plan(entries, batch, busy=len(running)):
                    running[asyncio.create_task(self._infer(part, rows, wide))] = wide
        finally:
            if running:
                await asyncio.wait(running)

    def _all_busy(self, running: dict[asyncio.Task[None], bool]) -> bool:
        """Every worker runs a batch, or a wide batch holds all the CPUs."""
        return bool(running) and (len(running) >= self.workers or any(running.values()))

    def _plan(self, entries: list[Entry], batch: np.ndarray | None, busy: int) -> list[Part]:
        """How a batch runs: whole, unless the backend has a wide mode (several CPU workers). Then a
        lone image with nothing else to do runs wide (all threads: lowest latency), and a batch that
        finds every worker idle is split over them (no thread barriers between them: more images/s
        when HTTP and decode work share the cores)."""
        if not self.wide:
            return [(entries, batch, False)]
        if busy == 0 and len(entries) == 1 and not len(self.queue):
            return [(entries, batch, True)]
        parts = np.array_split(np.arange(len(entries)), min(self.workers - busy, len(entries)))
        # array_split gives contiguous runs: slice (a view), no copy of the batch
        return [
            ([entries[k] for k in idx], None if batch is None else batch[idx[0] : idx[-1] + 1], False) for idx in parts
        ]

    async def _collect(self) -> list[Entry] | None:
        """Wait for at least one live entry, then (with ``max_wait``) for a full batch or the deadline."""
        while True:
            while not self.queue.drop_cancelled():
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill(deadline=self.queue.head().enqueued + self.limits.max_wait_s)
            entries = self.queue.take(self.limits.max_batch_size)
            if entries:  # empty when every waiting client left during the wait
                return entries

    async def _fill(self, deadline: float) -> None:
        while len(self.queue) < self.limits.max_batch_size and not (self._closing or self._hurry):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _top_up(self, entries: list[Entry], batch: np.ndarray | None) -> tuple[list[Entry], np.ndarray | None]:
        extra = self.queue.take(self.limits.max_batch_size - len(entries))
        if not extra or batch is None:
            return entries + extra, batch
        return entries + extra, concat(batch, await self._prepare(extra))

    async def _prepare(self, entries: list[Entry]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prep_pool, self._assemble, [e.pixels for e in entries])

    def _run(
        self, pixels: list[np.ndarray], batch: np.ndarray | None, outputs: frozenset[Output], wide: bool
    ) -> Result:
        """In an inference thread: stack and normalise (unless done ahead), then run."""
        return self.backend.run(self._assemble(pixels) if batch is None else batch, outputs, wide)

    async def _infer(self, entries: list[Entry], batch: np.ndarray | None, wide: bool = False) -> None:
        try:
            await self._run_batch(entries, batch, wide)
        finally:
            self.queue.done(entries)

    async def _run_batch(self, entries: list[Entry], batch: np.ndarray | None, wide: bool) -> None:
        live = [k for k, e in enumerate(entries) if not e.future.cancelled()]
        if not live:
            return
        if len(live) < len(entries):
            entries, batch = [entries[k] for k in live], None if batch is None else batch[live]
        if self.fatal is not None:
            for e in entries:
                e.future.set_exception(NotReady("a fatal inference error latched"))
            return
        self._metrics.batch_size.observe(len(entries))
        self._metrics.inference_runs.labels("wide" if wide else "narrow").inc()
        start = time.perf_counter()
        outputs = frozenset().union(*(e.outputs for e in entries))
        pixels = [e.pixels for e in entries]
        running = asyncio.get_running_loop().run_in_executor(self._infer_pool, self._run, pixels, batch, outputs, wide)
        try:
            result = await asyncio.wait_for(asyncio.shield(running), self.limits.inference_timeout_s)
        except asyncio.TimeoutError:
            # The thread cannot be stopped and every later batch would queue behind it: latch not-ready.
            hung = InferenceTimeout(f"inference took longer than {self.limits.inference_timeout_s:g} s")
            self._on_batch_error(entries, hung)
            return
        except Exception as e:
            self._on_batch_error(entries, e)
            return
        finally:
            self._metrics.stage_seconds.labels("inference").observe(time.perf_counter() - start)
        for k, e in enumerate(entries):
            if not e.future.done():
                e.future.set_result(result.map(lambda a, k=k: a[k]).only(e.outputs))

    def _on_batch_error(self, entries: list[Entry], error: Exception) -> None:
        if is_fatal(error) or isinstance(error, InferenceTimeout):
            self._latch(error)
            log.critical("fatal inference error; /ready is now 503", exc_info=error)
        else:
            log.error("inference failed for a batch of %d images", len(entries), exc_info=error)
        for e in entries:
            if not e.future.done():
                e.future.set_exception(
                    InferenceFailed(f"inference failed for the batch of {len(entries)} images this request was in")
                )
