"""Decoding off the event loop with one image per decode worker, so that a decode is timed from
its start and a busy pool answers with backpressure instead of failing valid images.

Handing every image of every request straight to a thread pool would queue them inside the
pool, where a timeout cannot tell waiting from decoding: a normal photo sent while two slow
ones decode once got "400: took longer than 10 s to decode" on the 2-core test machine. Here an
image first takes one of ``workers`` slots (as many as the pool has threads or processes), so it
starts decoding at once; ``decode_timeout_s`` then bounds the decode itself (400, the image's
fault), while an image that finds no free slot within ``decode_timeout_s`` gets 503 with
``Retry-After`` (the server's state, not the image's). A slot is given back when the decode
really ends, not when its wait times out: a runaway decode keeps its thread busy, so it keeps
its slot too, and the pool is never oversubscribed behind the timers' backs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Protocol

import numpy as np

from service.decode import DecodeOptions, decode_image
from service.errors import ApiError, InvalidImage, InvalidVideo, Overloaded, UnsupportedMediaType
from service.video import VIDEO_NAMES, VideoOptions, container_of, decode_video


class Decoder(Protocol):
    """Decodes off the event loop in another process (:class:`service.decode_procs.DecodeProcesses`).

    ``on_start`` is called each time a worker is about to begin this image (again after a crashed
    pool was replaced and restarted), so that restarting a pool is not counted as decoding."""

    async def decode(
        self, data: bytes, index: int, options: DecodeOptions, on_start: Callable[[], None]
    ) -> np.ndarray: ...


class DecodeSlots:
    """At most ``workers`` decodes in flight on ``pool`` (threads, or a :class:`Decoder`). Videos
    (PyAV) always decode in ``threads``, the thread pool, also when images go to processes."""

    def __init__(
        self, pool: Executor | Decoder, workers: int, timeout_s: float, retry_after_s: int, threads: Executor
    ) -> None:
        self.pool = pool
        self.threads = threads
        self.workers = workers
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._slots = asyncio.Semaphore(workers)
        self.in_flight = 0  # slots taken: decodes running, timed-out ones included until they end

    async def decode_all(
        self, blobs: Sequence[bytes], options: DecodeOptions, video: VideoOptions | None = None
    ) -> list[np.ndarray]:
        """Every file decoded; the lowest failing index fails the whole request."""
        decodes = (self.decode(blob, i, options, video) for i, blob in enumerate(blobs))
        results = await asyncio.gather(*decodes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def decode(
        self, data: bytes, index: int, options: DecodeOptions, video: VideoOptions | None = None
    ) -> np.ndarray:
        """One file's model input: an image ``uint8 [S, S, 3]``; for a video model (``video`` given) a
        clip ``[T, S, S, 3]``, decoded by PyAV when the bytes are a video container, else the image
        repeated into a still clip (how V-JEPA 2 embeds an image, ``jepa.vjepa2``)."""
        container = container_of(data)
        if video is None and container not in (None, "gif"):  # a GIF is an image to an image model
            raise UnsupportedMediaType(
                f"image {index} is a video ({VIDEO_NAMES[container]}); the served model embeds still images "
                "(serve a V-JEPA 2 model for video)",
                index=index,
            )
        is_video = video is not None and container is not None
        await self._take_slot(index)
        started = asyncio.Event()  # set each time a worker begins this file
        try:
            job = self._start_video(data, index, video, started.set) if is_video and video else None
            work = asyncio.ensure_future(job or self._start(data, index, options, started.set))
        except BaseException:  # the pool is shut down: no work started, so the slot is free again
            self._release()
            raise
        work.add_done_callback(self._give_back)
        if is_video and video is not None:
            # decode_video checks its own deadline between frames; this bounds one stuck call
            late: ApiError = InvalidVideo(f"video {index} took too long to decode", index=index)
            return await self._timed(work, started, video.timeout_s + 5.0, late)
        late = InvalidImage(f"image {index} took longer than {self.timeout_s:g} s to decode", index=index)
        pixels = await self._timed(work, started, self.timeout_s, late)
        if video is None:
            return pixels
        return np.repeat(pixels[None], video.temporal.image_frames, axis=0)

    async def _timed(
        self, work: asyncio.Future[np.ndarray], started: asyncio.Event, timeout_s: float, late: ApiError
    ) -> np.ndarray:
        """``work``'s result, allowing ``timeout_s`` from the latest start (a retry in a restarted
        process pool starts the clock again). ``asyncio.wait`` never cancels ``work``: a runaway
        decode keeps its slot until it really ends."""
        while True:
            begun = asyncio.ensure_future(started.wait())
            await asyncio.wait({work, begun}, return_when=asyncio.FIRST_COMPLETED)
            begun.cancel()
            if work.done():
                return work.result()
            started.clear()
            await asyncio.wait({work}, timeout=timeout_s)
            if work.done():
                return work.result()
            if not started.is_set():  # no restart meanwhile: the decode itself overran
                raise late

    async def _take_slot(self, index: int) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
            self.in_flight += 1
        except asyncio.TimeoutError as e:
            raise Overloaded(
                f"image {index}: every decode worker stayed busy for {self.timeout_s:g} s; retry later",
                index=index,
                headers={"Retry-After": str(self.retry_after_s)},
            ) from e

    def _start(
        self, data: bytes, index: int, options: DecodeOptions, on_start: Callable[[], None]
    ) -> Awaitable[np.ndarray]:
        if isinstance(self.pool, Executor):
            future = asyncio.get_running_loop().run_in_executor(self.pool, decode_image, data, index, options)
            on_start()  # a slot is a free thread: it starts now
            return future
        return self.pool.decode(data, index, options, on_start)

    def _start_video(
        self, data: bytes, index: int, video: VideoOptions, on_start: Callable[[], None]
    ) -> Awaitable[np.ndarray]:
        future = asyncio.get_running_loop().run_in_executor(self.threads, decode_video, data, index, video)
        on_start()
        return future

    def _release(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    def _give_back(self, work: asyncio.Future[np.ndarray]) -> None:
        self._release()
        if not work.cancelled():
            work.exception()  # retrieved here, so an abandoned (timed-out) decode's error is not logged as lost
