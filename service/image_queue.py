"""The image queue: admission, the waiting images, and what was taken into a batch. Synchronous.

TEI splits its queue (a data structure one task owns) from inference (what that task does with
it); this is the first half. No method awaits, so the rules (a full queue refuses at once, room is
held for images still being decoded, a client that left is skipped, every waiter is answered on
failure) are tested without a running loop (tests/service/test_image_queue.py). Only the batcher's
task and the routes on the event loop thread call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from jepa.contract import Embeddings, Output
from service.errors import NotReady, Overloaded
from service.metrics import Metrics

Result = Embeddings[np.ndarray]  # one image's outputs: global [D], patch [N, D], multilayer [L*D]


@dataclass
class Entry:
    pixels: np.ndarray  # uint8 [S, S, 3]
    future: asyncio.Future[Result]
    outputs: frozenset[Output] = frozenset({"global"})  # what the caller wants back
    enqueued: float = field(default_factory=time.perf_counter)


class ImageQueue:
    """Images waiting for inference, bounded by ``max_queue`` (queued + reserved for decoding)."""

    def __init__(self, max_queue: int, retry_after_s: int, metrics: Metrics,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._metrics = metrics
        self._clock = clock
        self._waiting: deque[Entry] = deque()
        self._taken: set[asyncio.Future[Result]] = set()  # taken into a batch, not yet answered
        self._reserved = 0  # images admitted by reserve() and still being decoded
        self.refusal: str | None = None  # set when no new work may come in (shutting down, fatal error)

    def __len__(self) -> int:
        return len(self._waiting)

    def head(self) -> Entry:
        return self._waiting[0]

    def retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}

    def admit(self, n: int, also_waiting: int = 0) -> None:
        """Raise :class:`NotReady` when refusing all work, :class:`Overloaded` when ``n`` more do not fit."""
        if self.refusal is not None:
            raise NotReady(self.refusal, headers=self.retry_after())
        waiting = len(self._waiting) + also_waiting
        if waiting + n > self.max_queue:
            raise Overloaded(
                f"queue full ({waiting} of {self.max_queue} images waiting or being decoded); retry later",
                headers=self.retry_after(),
            )

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        """Hold room for ``n`` images while they are decoded, or raise at once: a request the queue
        cannot take is refused before any CPU is spent decoding it (under overload, refused
        requests that were decoded first took the cores the accepted ones needed)."""
        self.admit(n, also_waiting=self._reserved)
        self._reserved += n
        try:
            yield
        finally:
            self._reserved -= n

    def push(self, entries: list[Entry]) -> None:
        """Queue ``entries`` (admitted by :meth:`admit` or :meth:`reserve` just before)."""
        self._waiting.extend(entries)
        self._metrics.queue_depth.set(len(self._waiting))

    def drop_cancelled(self) -> bool:
        """Drop entries at the head whose client left; True when a live entry is queued."""
        while self._waiting and self._waiting[0].future.cancelled():
            self._waiting.popleft()
        self._metrics.queue_depth.set(len(self._waiting))
        return bool(self._waiting)

    def take(self, n: int) -> list[Entry]:
        """Up to ``n`` live entries from the head, in order; they count as taken until :meth:`done`."""
        taken: list[Entry] = []
        now = self._clock()
        while self._waiting and len(taken) < n:
            entry = self._waiting.popleft()
            if not entry.future.cancelled():
                taken.append(entry)
                self._taken.add(entry.future)
                self._metrics.stage_seconds.labels("queue").observe(now - entry.enqueued)
        self._metrics.queue_depth.set(len(self._waiting))
        return taken

    def done(self, entries: list[Entry]) -> None:
        self._taken.difference_update(e.future for e in entries)

    def fail_all(self, error: Exception) -> None:
        """Answer every image still waiting, queued or taken into a batch that will not finish."""
        futures = [e.future for e in self._waiting] + list(self._taken)
        self._waiting.clear()
        self._taken.clear()
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._metrics.queue_depth.set(0)
