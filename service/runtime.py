"""What a started server runs on: :func:`start` builds it whole; :meth:`Runtime.close` ends it.

:func:`start` resolves the settings into a :class:`~service.plan.Plan`, loads that backend, warms
and calibrates it, and only then builds the batcher with the one batch cap calibration chose, so
a :class:`Runtime` has no field filled in later and routes never check for ``None``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from jepa.contract import multilayer_blocks
from jepa.preprocess import normalize
from jepa.video_preprocess import normalize_clips
from service.backends import Backend, load_backend
from service.backends.base import Assemble
from service.batcher import Batcher
from service.calibration import Calibration, probe_batch_size, warmup
from service.decode import DecodeOptions
from service.device_pixels import stack
from service.encode import ModelFacts
from service.media import video_options
from service.metrics import Metrics
from service.plan import BatchLimits, Plan, resolve_plan
from service.settings import Settings
from service.video import VideoOptions

log = logging.getLogger("service")


@dataclass(frozen=True)
class Runtime:
    plan: Plan
    backend: Backend
    batcher: Batcher
    calibration: Calibration
    decode_options: DecodeOptions
    facts: ModelFacts
    video_options: VideoOptions | None = None  # a video model's clips (None: an image model)

    async def close(self, timeout_s: float) -> None:
        """Finish what is queued (up to ``timeout_s``), release the threads, then the backend."""
        await self.batcher.close(timeout_s)
        self.backend.close()


def assembler(backend: Backend, plan: Plan) -> Assemble:
    """Stacks ``uint8 [S, S, 3]`` images (a video model's clips ``[T, S, S, 3]``); normalises them
    too unless the backend does that itself."""
    norm_fn = normalize_clips if backend.config.is_video else normalize
    norm = None if backend.info.input_kind == "uint8" else partial(norm_fn, config=backend.config.preprocess)

    def assemble(pixels: list[np.ndarray]) -> np.ndarray:
        batch = stack(pixels)  # uint8 [B, S, S, 3] or [B, T, S, S, 3]; on the GPU when --gpu-decode made them there
        return norm(batch) if norm is not None else batch

    return assemble


async def calibrate(backend: Backend, plan: Plan, settings: Settings, assemble: Assemble,
                    pool: ThreadPoolExecutor) -> Calibration:  # fmt: skip
    """Warm-up (unless off), then the batch-size probe on a CPU (unless off)."""
    if settings.warmup:
        await warmup(backend, assemble, pool, plan.max_batch_size, plan.workers, plan.wide)
    if settings.batch_probe and plan.device == "cpu":
        return await probe_batch_size(backend, assemble, pool, plan.max_batch_size)
    return Calibration(plan.max_batch_size)


async def start(settings: Settings, model: str, metrics: Metrics) -> Runtime:
    """Plan, load the backend (in a thread), calibrate it, start the batcher."""
    loop = asyncio.get_running_loop()
    plan = await loop.run_in_executor(None, resolve_plan, settings, model)
    backend = await loop.run_in_executor(None, load_backend, plan)
    config = backend.config
    assemble = assembler(backend, plan)
    infer_pool = ThreadPoolExecutor(plan.workers, thread_name_prefix="jepa-infer")
    try:
        calibration = await calibrate(backend, plan, settings, assemble, infer_pool)
    except BaseException:
        infer_pool.shutdown(wait=False)
        backend.close()
        raise
    limits = dataclasses.replace(BatchLimits.from_settings(settings), max_batch_size=calibration.batch_size)
    batcher = Batcher(backend, limits, assemble, metrics, workers=plan.workers, wide=plan.wide, infer_pool=infer_pool)
    decode_options = DecodeOptions(
        config.preprocess, config.image_size, settings.max_pixels, settings.jpeg_draft, settings.jpeg_draft_margin
    )
    multilayer_dim = multilayer_blocks(config.architecture.depth) * config.embed_dim
    facts = ModelFacts(config.name, config.embed_dim, config.token_grid, multilayer_dim)
    info = backend.info
    metrics.model.info(
        {"model": config.name, "backend": info.name, "device": info.device, "dtype": info.dtype,
         "dim": str(config.embed_dim)}
    )  # fmt: skip
    log.info("serving %s with %s on %s (%s)", config.name, info.name, info.device, info.reason)
    return Runtime(plan, backend, batcher, calibration, decode_options, facts, video_options(config, settings))
