"""The dynamic batcher: ONE asyncio task owns the queue; callers get one Future per image.

Routes call :meth:`Batcher.submit` (admission control happens right there: a full queue raises
:class:`Overloaded` at once). The task takes whatever is queued, up to ``max_batch_size`` (or the
smaller cap :meth:`probe_batch_size` found), after waiting up to ``max_wait_ms`` for company when
that is set, and hands it to one of ``workers`` inference threads, which stacks and normalises
it and runs it. While every worker is busy, the next batch is taken and normalised in the
preparation thread; when one finishes, that batch is topped up with anything that arrived
meanwhile and starts. With several CPU workers (``backend.wide``) a batch that finds them all
idle is split over them, and a lone image runs on all threads (:meth:`_plan`). Items whose client
left (future cancelled) are skipped. A failing batch fails only its own futures; a fatal device
error latches :attr:`fatal` (``/ready`` then 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.backends.base import Backend, is_fatal
from service.device_pixels import concat, stack
from service.errors import InferenceFailed, NotReady, Overloaded
from service.metrics import Metrics

log = logging.getLogger("service")

Result = tuple[np.ndarray, np.ndarray | None]  # global [D], patch [N, D] (None unless asked for)


class InferenceTimeout(RuntimeError):
    """The backend did not return within ``inference_timeout_s`` (a hung device or driver)."""


@dataclass
class _Item:
    pixels: np.ndarray  # uint8 [S, S, 3]
    future: asyncio.Future[Result]
    patches: bool = True  # whether the caller wants the patch grid back
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_wait_s: float
    max_queue: int
    retry_after_s: int
    inference_timeout_s: float = 600.0


class Batcher:
    def __init__(
        self,
        backend: Backend,
        limits: BatchLimits,
        normalize: Callable[[np.ndarray], np.ndarray] | None,
        metrics: Metrics,
    ) -> None:
        self.backend = backend
        self.workers = backend.workers
        self.max_batch = limits.max_batch_size  # lowered by probe_batch_size where bigger is slower
        self.probe_ms_per_image: dict[int, float] = {}
        self.limits = limits
        self.fatal: BaseException | None = None
        self._normalize = normalize
        # One thread stacks and normalises the next batch while the workers run theirs.
        self._prep_pool = ThreadPoolExecutor(1, thread_name_prefix="jepa-prep")
        self._infer_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="jepa-infer")
        self._taken: set[asyncio.Future[Result]] = set()  # taken from the queue, not yet answered
        self._reserved = 0  # images admitted by reserve() and still being decoded
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._hurry = False  # set when draining: stop waiting for batches to fill
        self._task: asyncio.Task[None] | None = None

    # -- the caller's side --

    def submit(self, images: list[np.ndarray], patches: bool = True) -> list[asyncio.Future[Result]]:
        """Queue ``images`` (uint8 ``[S, S, 3]`` each); raises at once when they cannot be admitted.
        With ``patches=False`` their results carry no patch grid (``None``)."""
        self._admit(len(images))
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = []
        for pixels in images:
            future: asyncio.Future[Result] = loop.create_future()
            self._queue.append(_Item(pixels, future, patches))
            futures.append(future)
        self._metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        return futures

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        """Hold room in the queue for ``n`` images while they are decoded, or raise at once: a
        request the queue cannot take is refused before any CPU is spent decoding it (under
        overload, refused requests that were decoded first took the cores the accepted ones
        needed). :meth:`submit` the images inside the block."""
        self._admit(n, also_waiting=self._reserved)
        self._reserved += n
        try:
            yield
        finally:
            self._reserved -= n

    def _admit(self, n: int, also_waiting: int = 0) -> None:
        if self.fatal is not None:
            raise NotReady(f"a fatal inference error latched: {type(self.fatal).__name__}")
        if self._closing or self._task is None or self._task.done():
            raise NotReady("the server is shutting down", headers=self._retry_after())
        waiting = len(self._queue) + also_waiting
        if waiting + n > self.limits.max_queue:
            raise Overloaded(
                f"queue full ({waiting} of {self.limits.max_queue} images waiting or being decoded); retry later",
                headers=self._retry_after(),
            )

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.limits.retry_after_s)}

    # -- lifecycle --

    async def warmup(self) -> None:
        """A full batch through every inference thread at once (and the wide mode, when there is
        one), so no request pays a start-up cost."""
        size = self.backend.config.image_size
        pixels = np.zeros((self.limits.max_batch_size, size, size, 3), dtype=np.uint8)
        batch = self._assemble(list(pixels))
        loop = asyncio.get_running_loop()
        run = self.backend.run
        await asyncio.gather(*(loop.run_in_executor(self._infer_pool, run, batch) for _ in range(self.workers)))
        if self.backend.wide:
            await loop.run_in_executor(self._infer_pool, run, batch, True, True)

    async def probe_batch_size(self, tolerance: float = 0.03, budget_s: float = 3.0) -> int:
        """Time batches of 1, 2, 4, ... on one worker; if the cost per image rises past some size,
        cap batches at the largest size within ``tolerance`` of the best. On a CPU a bigger batch is
        often slower per image (ONNX Runtime int8 ViT-S/16 on 2 cores: 84.4 img/s at batch 4 against
        95.9 at batch 1, docs/BENCHMARKS.md), so coalescing must stop where it stops paying. When the
        cost keeps falling (a GPU), or ``budget_s`` runs out first, ``max_batch_size`` stays."""
        loop = asyncio.get_running_loop()
        costs, rose = await loop.run_in_executor(self._infer_pool, self._probe_sizes, budget_s)
        self.probe_ms_per_image = costs
        if rose:
            best = min(costs.values())
            self.max_batch = max(b for b, ms in costs.items() if ms <= best * (1 + tolerance))
        return self.max_batch

    def _probe_sizes(self, budget_s: float) -> tuple[dict[int, float], bool]:
        """ms per image (median of 3 calls) at batch 1, 2, 4, ..., and whether it rose past the best."""
        size = self.backend.config.image_size
        costs: dict[int, float] = {}
        spent, b = 0.0, 1
        while b <= self.limits.max_batch_size and spent < budget_s:
            batch = self._assemble([np.zeros((size, size, 3), dtype=np.uint8)] * b)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                self.backend.run(batch, False)
                times.append(time.perf_counter() - t0)
            spent += sum(times)
            costs[b] = 1000 * float(np.median(times)) / b
            if costs[b] > min(costs.values()) * 1.05:
                return costs, True
            b *= 2
        return costs, False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="jepa-batcher")
        self._task.add_done_callback(self._on_loop_exit)

    def hurry(self) -> None:
        """Run what is queued without waiting ``max_wait`` for company (used while draining)."""
        self._hurry = True
        self._wakeup.set()

    async def close(self, timeout_s: float) -> None:
        """Stop admitting, finish what is queued (up to ``timeout_s``), then release the threads."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                log.warning("batcher did not drain within %.1f s; failing %d queued images", timeout_s, self.queued)
                self._task.cancel()
        self._fail_queued(NotReady("the server shut down before this image ran"))
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fatal = task.exception()
            log.error("the batcher task died", exc_info=self.fatal)
            self._fail_queued(NotReady("the batcher stopped after an internal error"))

    def _fail_queued(self, error: Exception) -> None:
        """Answer every image still waiting, queued or taken into a batch that will not finish."""
        futures = [item.future for item in self._queue] + list(self._taken)
        self._queue.clear()
        self._taken.clear()
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._metrics.queue_depth.set(0)

    # -- the task's side --

    async def _loop(self) -> None:
        running: dict[asyncio.Task[None], bool] = {}  # each batch in flight -> whether it runs wide
        try:
            while (items := await self._collect()) is not None:
                batch: np.ndarray | None = None  # with a worker free, it stacks and normalises the batch itself
                if self._all_busy(running):  # prepare this batch meanwhile, then wait (_infer never raises)
                    batch = await self._prepare(items)
                while self._all_busy(running):
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        del running[task]
                    items, batch = await self._top_up(items, batch)
                for part, rows, wide in self._plan(items, batch, busy=len(running)):
                    running[asyncio.create_task(self._infer(part, rows, wide))] = wide
        finally:
            if running:
                await asyncio.wait(running)

    def _all_busy(self, running: dict[asyncio.Task[None], bool]) -> bool:
        """Every worker runs a batch, or a wide batch holds all the CPUs."""
        return bool(running) and (len(running) >= self.workers or any(running.values()))

    def _plan(
        self, items: list[_Item], batch: np.ndarray | None, busy: int
    ) -> list[tuple[list[_Item], np.ndarray | None, bool]]:
        """How a batch runs: whole, unless the backend has a wide mode (several CPU workers). Then a
        lone image with nothing else to do runs wide (all threads: lowest latency), and a batch that
        finds every worker idle is split over them (no thread barriers between them: more images/s
        when HTTP and decode work share the cores)."""
        if not self.backend.wide:
            return [(items, batch, False)]
        if busy == 0 and len(items) == 1 and not self._queue:
            return [(items, batch, True)]
        parts = np.array_split(np.arange(len(items)), min(self.workers - busy, len(items)))
        # array_split gives contiguous runs: slice (a view), no copy of the batch
        return [
            ([items[k] for k in idx], None if batch is None else batch[idx[0] : idx[-1] + 1], False) for idx in parts
        ]

    async def _collect(self) -> list[_Item] | None:
        """Wait for at least one live item, then (with ``max_wait``) for a full batch or the deadline."""
        while True:
            while not self._drop_cancelled():
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill(deadline=self._queue[0].enqueued + self.limits.max_wait_s)
            items = self._take(self.max_batch)
            if items:  # empty when every waiting client left during the wait
                return items

    async def _fill(self, deadline: float) -> None:
        while len(self._queue) < self.max_batch and not (self._closing or self._hurry):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _drop_cancelled(self) -> bool:
        """Drop items at the head whose client left; True when a live item is queued."""
        while self._queue and self._queue[0].future.cancelled():
            self._queue.popleft()
        self._metrics.queue_depth.set(len(self._queue))
        return bool(self._queue)

    def _take(self, n: int) -> list[_Item]:
        taken: list[_Item] = []
        now = time.perf_counter()
        while self._queue and len(taken) < n:
            item = self._queue.popleft()
            if not item.future.cancelled():
                taken.append(item)
                self._taken.add(item.future)
                self._metrics.stage_seconds.labels("queue").observe(now - item.enqueued)
        self._metrics.queue_depth.set(len(self._queue))
        return taken

    async def _top_up(self, items: list[_Item], batch: np.ndarray | None) -> tuple[list[_Item], np.ndarray | None]:
        extra = self._take(self.max_batch - len(items))
        if not extra or batch is None:
            return items + extra, batch
        return items + extra, concat(batch, await self._prepare(extra))

    def _assemble(self, pixels: list[np.ndarray]) -> np.ndarray:
        batch = stack(pixels)  # uint8 [B, S, S, 3]; on the GPU when --gpu-decode made the pixels there
        return self._normalize(batch) if self._normalize is not None else batch

    def _run(
        self, pixels: list[np.ndarray], batch: np.ndarray | None, patches: bool, wide: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """In an inference thread: stack and normalise (unless done ahead), then run."""
        return self.backend.run(self._assemble(pixels) if batch is None else batch, patches, wide)

    async def _prepare(self, items: list[_Item]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prep_pool, self._assemble, [it.pixels for it in items])

    async def _infer(self, items: list[_Item], batch: np.ndarray | None, wide: bool = False) -> None:
        try:
            await self._run_batch(items, batch, wide)
        finally:
            self._taken.difference_update(it.future for it in items)

    async def _run_batch(self, items: list[_Item], batch: np.ndarray | None, wide: bool) -> None:
        live = [k for k, it in enumerate(items) if not it.future.cancelled()]
        if not live:
            return
        if len(live) < len(items):
            items, batch = [items[k] for k in live], None if batch is None else batch[live]
        if self.fatal is not None:
            for it in items:
                it.future.set_exception(NotReady("a fatal inference error latched"))
            return
        self._metrics.batch_size.observe(len(items))
        self._metrics.inference_runs.labels("wide" if wide else "narrow").inc()
        start = time.perf_counter()
        patches = any(it.patches for it in items)
        pixels = [it.pixels for it in items]
        running = asyncio.get_running_loop().run_in_executor(self._infer_pool, self._run, pixels, batch, patches, wide)
        try:
            pooled, tokens = await asyncio.wait_for(asyncio.shield(running), self.limits.inference_timeout_s)
        except asyncio.TimeoutError:
            # The thread cannot be stopped and every later batch would queue behind it: latch not-ready.
            hung = InferenceTimeout(f"inference took longer than {self.limits.inference_timeout_s:g} s")
            self._on_batch_error(items, hung)
            return
        except Exception as e:
            self._on_batch_error(items, e)
            return
        finally:
            self._metrics.stage_seconds.labels("inference").observe(time.perf_counter() - start)
        for k, it in enumerate(items):
            if not it.future.done():
                it.future.set_result((pooled[k], tokens[k] if tokens is not None and it.patches else None))

    def _on_batch_error(self, items: list[_Item], error: Exception) -> None:
        if is_fatal(error) or isinstance(error, InferenceTimeout):
            self.fatal = error
            log.critical("fatal inference error; /ready is now 503", exc_info=error)
        else:
            log.error("inference failed for a batch of %d images", len(items), exc_info=error)
        for it in items:
            if not it.future.done():
                it.future.set_exception(
                    InferenceFailed(f"inference failed for the batch of {len(items)} images this request was in")
                )
