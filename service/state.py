"""What one app holds: settings, metrics, decode pools, lifecycle flags, and once started its :class:`Runtime`.

Readiness is a property of this object: loaded and warmed, not draining, no fatal error latched.
``inflight`` counts ``POST /embed`` handlers still running, so a SIGTERM drain knows when every
accepted request has been answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.decode_procs import DecodeProcesses
from service.decode_slots import DecodeSlots
from service.errors import NotReady, Overloaded
from service.metrics import Metrics
from service.optimize import Optimizer
from service.runtime import Runtime
from service.settings import Settings

if TYPE_CHECKING:  # torch is imported only on a GPU host
    from service.gpu_decode import GpuDecoder


@dataclass
class AppState:
    settings: Settings
    model_path: str
    metrics: Metrics
    decode_pool: ThreadPoolExecutor  # decodes (unless decode_processes), parses JSON, encodes big answers
    decode_slots: DecodeSlots  # one image per decode thread/process: a decode is timed from its start
    decode_processes: DecodeProcesses | None = None
    runtime: Runtime | None = None  # set once, by the lifespan, when the model is loaded and warmed
    gpu_decoder: GpuDecoder | None = None  # --gpu-decode: nvJPEG, set by the lifespan once the backend runs on CUDA
    draining: bool = False
    inflight: int = 0
    serving_path: str = ""  # what was loaded: model_path, or its cache entry after optimisation
    optimizer: Optimizer | None = None  # the start-up build, while and after it runs
    optimized: dict[str, object] | None = None  # its report, for /info
    start_error: BaseException | None = None  # a start-up that failed after uvicorn began listening
    on_start_failed: Callable[[], None] | None = None  # set by the CLI's server: exit when that happens
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "draining: the server is shutting down"
        if self.start_error is not None:
            return f"start-up failed: {type(self.start_error).__name__}: {self.start_error}"
        if self.runtime is None and self.optimizer is not None and self.optimized is None:
            return f"optimising the model: {self.optimizer.progress()}"
        if self.runtime is None:
            return "the model is not loaded and warmed yet"
        fatal = self.runtime.batcher.fatal
        if fatal is not None:
            return f"a fatal inference error latched: {type(fatal).__name__}: {fatal}"
        return None

    def admit(self) -> Runtime:
        """The runtime, or 503 with Retry-After (:class:`NotReady`) when new work cannot be taken."""
        reason = self.not_ready_reason()
        if reason is not None or self.runtime is None:
            raise NotReady(reason or "not ready", headers={"Retry-After": str(self.settings.retry_after_s)})
        return self.runtime

    def admit_request(self) -> Runtime:
        """:meth:`admit` for a new ``POST /embed``, which also counts against the concurrency limit
        (the caller is already inside :meth:`track`): :class:`Overloaded` beyond it."""
        runtime = self.admit()
        limit = self.settings.max_concurrent_requests
        if self.inflight > limit:
            raise Overloaded(f"{limit} requests already in progress; retry later",
                             headers={"Retry-After": str(self.settings.retry_after_s)})  # fmt: skip
        return runtime

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait for accepted requests to finish; False if ``timeout_s`` ran out."""
        self.draining = True
        if self.runtime is not None:
            self.runtime.batcher.hurry()
        if self.inflight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def shutdown(self) -> None:
        """The one shutdown: drain accepted requests, then close the runtime and the decode pools."""
        timeout = self.settings.drain_timeout_s
        await self.drain(timeout)
        if self.runtime is not None:
            await self.runtime.close(timeout)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        if self.decode_processes is not None:
            self.decode_processes.shutdown()
        if self.gpu_decoder is not None:
            self.gpu_decoder.shutdown()
