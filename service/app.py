"""``create_app(settings)``: the FastAPI app. Routes are thin: check limits, decode in the pool,
``batcher.submit``, await the futures, encode. Loading and warm-up happen in the lifespan, so
uvicorn only listens once the model answers -- except while the start-up optimisation builds
graphs (minutes): then uvicorn listens at once, ``/health`` answers, ``/ready`` is 503 with the
build's step, and loading follows the build in the background (:func:`prepare`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

from service import auth
from service.access_log import AccessLog
from service.decode_procs import DecodeProcesses
from service.decode_slots import DecodeSlots
from service.docs import add_docs
from service.encode import encode_results, negotiate
from service.errors import ApiError, ClientClosed, InvalidParameters, install_handlers
from service.gpu_plan import wants_gpu_decode
from service.image_queue import Result
from service.inputs import parse_embed_request
from service.metrics import CONTENT_TYPE_LATEST, Metrics
from service.optimize import Optimizer
from service.plan import RequestLimits, cuda_present, require_backend
from service.runtime import Runtime, start
from service.schemas import EmbedOptions, EmbedRequest, EmbedResponse, ErrorResponse
from service.settings import Settings
from service.state import AppState
from service.ui import install_ui

if TYPE_CHECKING:  # torch is imported only on a GPU host
    from service.gpu_decode import GpuDecoder

log = logging.getLogger("service")
INLINE_ENCODE_MAX = 16  # global-only responses with at most this many images are encoded on the loop


async def prepare(state: AppState) -> asyncio.Task[None] | None:
    """Optimise the source (service/optimize.py), then start the runtime. Where a build is needed
    it runs in a background task, returned, so uvicorn can listen meanwhile; otherwise (no build,
    or a verified cache entry) everything completes here, so a broken model still fails start-up."""
    loop = asyncio.get_running_loop()
    state.optimizer = Optimizer(state.settings, state.model_path, cuda_present(state.settings))
    done = await loop.run_in_executor(None, state.optimizer.check)
    if done is None:
        return asyncio.create_task(build_then_start(state, state.optimizer))
    state.optimized = done.report
    await start_serving(state, done.model_path)
    return None


async def start_serving(state: AppState, model: str) -> None:
    state.serving_path = model
    runtime = await start(state.settings, model, state.metrics)
    state.gpu_decoder = gpu_decoder(state, runtime)
    if state.gpu_decoder is not None and runtime.video_options is None:
        # nvJPEG batches whatever is in flight: every queued image may hold a slot, so a batch is
        # never capped at the CPU pool's size; its CPU fallbacks run in the thread pool
        s = state.settings
        state.decode_slots = DecodeSlots(
            state.gpu_decoder, s.max_queue, s.decode_timeout_s, s.retry_after_s, threads=state.decode_pool
        )
    state.runtime = runtime


async def build_then_start(state: AppState, optimizer: Optimizer) -> None:
    """The background start-up: build, load, warm. A failure is logged, latched (``/ready`` says
    it) and reported to the CLI's server, which then exits non-zero."""
    try:
        done = await asyncio.get_running_loop().run_in_executor(None, optimizer.build)
        state.optimized = done.report
        await start_serving(state, done.model_path)
    except Exception as e:  # the task's top: nothing above it would see the error
        log.error("start-up failed: %s: %s", type(e).__name__, e)
        state.start_error = e
        if state.on_start_failed is not None:
            state.on_start_failed()


async def stop_prepare(state: AppState, task: asyncio.Task[None] | None) -> None:
    """Shutdown during a build: end the export process and the task."""
    if task is None or task.done():
        return
    if state.optimizer is not None:
        state.optimizer.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``; raises ``ValueError`` when no model is given or found, or the
    backend asked for is not installed."""
    require_backend(settings)
    pool = ThreadPoolExecutor(settings.decode_pool_size(), thread_name_prefix="jepa-decode")
    processes = DecodeProcesses(settings.decode_processes) if settings.decode_processes else None
    slots = DecodeSlots(
        processes or pool,
        settings.decode_processes or settings.decode_pool_size(),
        settings.decode_timeout_s,
        settings.retry_after_s,
        threads=pool,
    )
    state = AppState(
        settings, settings.resolved_model(), Metrics.create(settings.max_batch_size), pool, slots, processes
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        try:
            if state.decode_processes is not None:
                await state.decode_processes.start()
            task = await prepare(state)
            yield
        finally:
            await stop_prepare(state, task)
            await state.shutdown()

    app = FastAPI(title="JEPA embedding service", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.jepa = state
    install_handlers(app)
    add_docs(app)
    app.add_middleware(AccessLog, fmt=settings.access_log)
    add_routes(app, state)
    if settings.ui:
        install_ui(app)
    return app


def gpu_decoder(state: AppState, runtime: Runtime) -> GpuDecoder | None:
    """``--gpu-decode`` for the loaded backend (torch is imported only when it runs on CUDA)."""
    info = runtime.backend.info
    if not wants_gpu_decode(state.settings.gpu_decode, info.name, info.device):
        return None
    from service.gpu_decode import open_gpu_decoder

    return open_gpu_decoder(state.settings.gpu_decode == "on", info.device, state.decode_pool, state.metrics.registry)


def add_routes(app: FastAPI, state: AppState) -> None:
    key = auth.require_key(state.settings.api_key)
    limits = RequestLimits.from_settings(state.settings)
    metrics_deps = [Depends(key)] if state.settings.metrics_require_key else []

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> dict[str, str]:
        """Readiness: loaded, warmed, not draining, no fatal error latched."""
        state.admit()
        return {"status": "ready"}

    @app.get("/info", dependencies=[Depends(key)])
    async def info() -> dict[str, object]:
        return describe(state, state.admit())

    @app.get(
        "/metrics",
        dependencies=metrics_deps,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    error_codes = (400, 401, 406, 413, 415, 422, 500, 503)

    @app.post(
        "/embed",
        dependencies=[Depends(key)],
        response_model=EmbedResponse,
        openapi_extra=EMBED_OPENAPI,
        responses={code: {"model": ErrorResponse} for code in error_codes},
    )
    async def embed(request: Request) -> Response:
        """Embed one or more images (multipart field ``image``, a raw image body, or JSON)."""
        return await handle_embed(request, state, limits)


async def handle_embed(request: Request, state: AppState, limits: RequestLimits) -> Response:
    started = time.perf_counter()
    m, count = state.metrics, 0
    with state.track():
        try:
            runtime = state.admit_request()
            blobs, options = await parse_embed_request(request, limits, state.decode_pool)
            count = len(blobs)
            request.state.images = count  # for the access log line
            kind = negotiate(request.headers.get("accept"), options)
            check_outputs(options, runtime)
            t = time.perf_counter()
            with runtime.batcher.reserve(count):  # a request the queue cannot take is refused before decoding
                pixels = await state.decode_slots.decode_all(blobs, runtime.decode_options, runtime.video_options)
                m.stage_seconds.labels("decode").observe(time.perf_counter() - t)
                futures = runtime.batcher.submit(pixels, frozenset(options.outputs))
            results = await wait_or_disconnect(request, futures)
            t = time.perf_counter()
            facts = runtime.facts
            if options.want_patch or len(results) > INLINE_ENCODE_MAX:
                # A patch grid as JSON takes milliseconds per image: keep it off the event loop.
                body, media = await asyncio.get_running_loop().run_in_executor(
                    state.decode_pool, encode_results, kind, results, facts, options
                )
            else:  # a few global vectors encode in microseconds, less than the hop to a thread
                body, media = encode_results(kind, results, facts, options)
            m.stage_seconds.labels("encode").observe(time.perf_counter() - t)
        except ApiError as e:
            m.requests.labels(e.type).inc()
            m.images.labels(e.type).inc(count)
            raise
        except Exception:
            m.requests.labels("internal_error").inc()
            m.images.labels("internal_error").inc(count)
            raise
    m.requests.labels("ok").inc()
    m.images.labels("ok").inc(count)
    m.request_seconds.observe(time.perf_counter() - started)
    headers = {"X-Model": facts.name, "X-Embedding-Dim": str(facts.dim), "X-Grid": ",".join(map(str, facts.grid))}
    return Response(body, media_type=media, headers=headers)


def check_outputs(options: EmbedOptions, runtime: Runtime) -> None:
    """422 for an output the backend cannot produce (a graph exported before it existed)."""
    missing = sorted(set(options.outputs) - runtime.backend.outputs)
    if missing:
        graph = runtime.plan.graph.name if runtime.plan.graph is not None else "the backend"
        raise InvalidParameters(
            f"outputs {missing} are not in {graph}, which was exported before they existed; re-export the model "
            "with python -m export, or serve it with --backend torch"
        )


async def wait_or_disconnect(request: Request, futures: list[asyncio.Future[Result]]) -> list[Result]:
    """Await the images' futures; if the client leaves first, cancel them so the batcher skips them."""
    gathered = asyncio.gather(*futures)
    watcher = asyncio.create_task(_disconnected(request))
    try:
        done, _ = await asyncio.wait({gathered, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not gathered.done():
            gathered.cancel()  # cancels every image's future: the batcher skips them
    if gathered not in done:
        raise ClientClosed("the client disconnected before the result was ready")
    return gathered.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def describe(state: AppState, runtime: Runtime) -> dict[str, object]:
    s, batcher, plan = state.settings, runtime.batcher, runtime.plan
    config, info = runtime.backend.config, runtime.backend.info
    return {
        "model": config.name,
        "model_path": state.serving_path,
        "model_source": state.model_path,
        "dim": config.embed_dim,
        "multilayer_dim": runtime.facts.multilayer_dim,
        "outputs": sorted(runtime.backend.outputs),
        "grid": list(config.token_grid),
        "family": config.family,
        "temporal": config.temporal.model_dump(mode="json") if config.temporal is not None else None,
        "patch_size": config.patch_size,
        "image_size": config.image_size,
        "preprocess": config.preprocess.model_dump(mode="json"),
        "weights_sha256": config.provenance.weights_sha256,
        "backend": {
            "name": info.name,
            "device": info.device,
            "dtype": info.dtype,
            "why": info.reason,
            "input": info.input_kind,
            **info.details,
            "engine_choice": plan.engine_choice,
        },
        "limits": {
            "max_concurrent_requests": s.max_concurrent_requests,
            "max_batch_size": s.max_batch_size,
            "batch_size_in_use": batcher.limits.max_batch_size,
            "batch_probe_ms_per_image": {str(b): round(ms, 3) for b, ms in runtime.calibration.ms_per_image.items()},
            "inference_workers": plan.workers,
            "max_wait_ms": s.max_wait_ms,
            "max_queue": s.max_queue,
            "max_images_per_request": s.max_images_per_request,
            "max_body_bytes": s.max_body_bytes,
            "max_pixels": s.max_pixels,
            "decode_timeout_s": s.decode_timeout_s,
            "decode_processes": s.decode_processes,
            "gpu_decode": state.gpu_decoder is not None,
            "gil_switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),  # the process's, as set by main
            "jpeg_draft": s.jpeg_draft,
            "jpeg_draft_margin": s.jpeg_draft_margin,
            "video_max_pixels": s.video_max_pixels,
            "video_max_frames": s.video_max_frames,
            "video_max_duration_s": s.video_max_duration_s,
            "video_timeout_s": s.video_timeout_s,
        },
        "optimize": state.optimized,
        "ready": state.not_ready_reason() is None,
    }


def _query(name: str, schema: dict[str, object]) -> dict[str, object]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_FILES = {"type": "array", "items": {"type": "string", "format": "binary"}}
# The query parameters are EmbedOptions' fields, so a new output or encoding shows up in /docs by itself.
EMBED_OPENAPI: dict[str, object] = {
    "parameters": [_query(name, schema) for name, schema in EmbedOptions.model_json_schema()["properties"].items()],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": EmbedRequest.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {"image": _FILES}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
