"""What one running app holds: the loaded backend, the batcher, pools, metrics and lifecycle flags.

Readiness is a property of this object: loaded and warmed, not draining, no fatal error latched.
``inflight`` counts ``POST /embed`` handlers still running, so a SIGTERM drain knows when every
accepted request has been answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.batcher import Batcher
from service.decode import DecodeOptions
from service.decode_procs import DecodeProcesses
from service.encode import ModelFacts
from service.errors import NotReady, Overloaded
from service.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:  # torch is imported only on a GPU host
    from service.gpu_decode import GpuDecoder


@dataclass
class AppState:
    settings: Settings
    model_path: str
    metrics: Metrics
    decode_pool: ThreadPoolExecutor  # decodes (unless decode_processes), parses JSON, encodes big answers
    decode_processes: DecodeProcesses | None = None
    gpu_decoder: GpuDecoder | None = None  # --gpu-decode: nvJPEG, set once the backend runs on CUDA
    batcher: Batcher | None = None
    decode_options: DecodeOptions | None = None
    facts: ModelFacts | None = None
    warmed: bool = False
    draining: bool = False
    inflight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "draining: the server is shutting down"
        if self.batcher is None or not self.warmed:
            return "the model is not loaded and warmed yet"
        if self.batcher.fatal is not None:
            return f"a fatal inference error latched: {type(self.batcher.fatal).__name__}: {self.batcher.fatal}"
        return None

    def admit(self) -> Batcher:
        """The batcher, or 503 with Retry-After: :class:`NotReady` when new work cannot be taken,
        :class:`Overloaded` when ``max_concurrent_requests`` are already in progress."""
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        reason = self.not_ready_reason()
        if reason is not None or self.batcher is None:
            raise NotReady(reason or "not ready", headers=retry)
        return self.batcher

    def admit_request(self) -> Batcher:
        """:meth:`admit` for a new ``POST /embed``, which also counts against the concurrency limit
        (the caller is already inside :meth:`track`)."""
        batcher = self.admit()
        limit = self.settings.max_concurrent_requests
        if self.inflight > limit:
            raise Overloaded(f"{limit} requests already in progress; retry later",
                             headers={"Retry-After": str(self.settings.retry_after_s)})  # fmt: skip
        return batcher

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
        if self.batcher is not None:
            self.batcher.hurry()
        if self.inflight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
