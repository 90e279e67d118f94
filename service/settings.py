"""Service settings: one pydantic-settings model, read from ``JEPA_*`` variables and CLI flags.

Every field is documented where it is declared; ``python -m service --help`` prints the same
text. The object is built once in ``main`` (or by a test) and passed to ``create_app``; nothing
below reads the environment.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_DIR = "models/ijepa-vit-tiny-cifar10"


class Settings(BaseSettings):
    """How the embedding service runs. Env: ``JEPA_<FIELD>``; CLI: ``--<field-with-dashes>``."""

    model_config = SettingsConfigDict(env_prefix="JEPA_", extra="forbid", frozen=True)

    # -- the model --
    model: str | None = Field(
        None,
        description="Model to serve: our model directory (config.json + model.safetensors and/or model.onnx), "
        "an official .pth.tar, or an HF IJepaModel directory; or a name, downloaded at start-up into the Hugging "
        "Face cache (HF_HOME): a short name from `python -m jepa models`, a Hub id org/name[@revision], or a "
        f"checkpoint URL. Default: {DEFAULT_MODEL_DIR} when it exists.",
    )
    backend: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="Inference backend. auto = onnxruntime when the model directory holds the ONNX graph "
        "and onnxruntime is importable, else torch; on a CPU with dtype auto, openvino (on model.onnx) instead "
        "where the model's engines.json shows it verified and faster on this machine (the start-up build "
        "measures it). openvino: CPU only, its default precision (bfloat16 only where the CPU has it natively).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = Field(
        "auto",
        description="Compute dtype. auto = bfloat16 (torch) on a GPU; on a CPU int8 (model.int8.onnx) when "
        "export.json records its global embeddings within cosine 0.999 of fp32 on photos, else float32. "
        "torch casts the weights; onnxruntime picks model.fp16.onnx for float16 and model.int8.onnx for int8 "
        "(bfloat16 is torch only, int8 onnxruntime only). Responses are float32 unless a request asks for "
        "float16. Use float32 for results equal to load_encoder(...).embed.",
    )
    onnx_file: str | None = Field(
        None,
        description="ONNX graph inside the model directory (model.onnx, model.fp16.onnx, model.int8.onnx, "
        "model.uint8.onnx). Default: model.fp16.onnx for dtype float16, model.int8.onnx for int8, else model.onnx.",
    )
    tensorrt: bool = Field(
        False,
        description="onnxruntime on cuda: put the TensorRT execution provider first (it builds engines at "
        "start-up, which takes minutes for large models).",
    )
    inference_threads: int = Field(
        0,
        ge=0,
        description="Intra-op threads in all (torch.set_num_threads / ORT), split among the inference workers; "
        "a lone batch on a CPU gets all of them. 0 = the CPUs this process may use (affinity and cgroup CPU "
        "quota) when there are several workers, else the library's default.",
    )
    inference_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Batches that run at once, each in its own thread on one shared model. 0 = auto: 2 with "
        "onnxruntime on a CPU with 2 or more threads to split, else 1 (openvino: 1 stream on all threads). Several "
        "CPU workers share the threads (1/N each): on 2 cores that ran ViT-S/16 int8 at 95.9 img/s against 85.1 "
        "for one caller with both threads (bench/ceiling.py), and HTTP and decode work then delays one batch, not "
        "every operator. A "
        "lone image still runs with all threads (docs/BENCHMARKS.md).",
    )
    cuda_graphs: bool = Field(
        True,
        description="torch on cuda with one inference worker: run each batch as a CUDA graph captured at "
        "start-up for batch sizes 1, 2, 4, ... max_batch_size (a batch is padded up to the next size): one "
        "launch per batch instead of one per operator, so the forward no longer waits on the GIL that HTTP and "
        "decode hold. ViT-H/14 on an H200: +29% images/s at 64 clients, +51% with 8 images per request "
        "(docs/BENCHMARKS.md). Not used elsewhere (/info shows the captured sizes when it is).",
    )
    attention_backend: Literal["auto", "flash", "cudnn", "efficient", "math"] = Field(
        "auto",
        description="torch: the scaled-dot-product attention kernel to use (auto = PyTorch's choice). cudnn "
        "and flash are the candidates on Hopper GPUs; bench/gpu_bench.py's ceiling part measures each.",
    )
    gpu_decode: Literal["auto", "on", "off"] = Field(
        "off",
        description="torch on cuda: decode baseline JPEGs with nvJPEG (torchvision.io.decode_jpeg, in batches) and "
        "orient, resize and crop them on the GPU; other images fall back to the CPU path one by one "
        "(jepa_decode_path_total). auto = on when the backend is torch on cuda and torchvision's nvJPEG "
        "decodes there; on = refuse to start without it (pip install 'jepa-embed[gpu]'). Off by default until "
        "its -m gpu tests and bench/gpu.sh have run on a GPU.",
    )
    batch_probe: bool = Field(
        True,
        description="On a CPU, time batches of 1, 2, 4, ... at start-up and cap batches where a bigger one gets "
        "slower per image (often batch 1 or 2 on a CPU); /info shows the timings and the cap in use.",
    )
    inference_spin: bool = Field(
        True,
        description="onnxruntime on CPU: let idle intra-op threads spin for the next operator (lower latency "
        "per batch); off, they sleep and leave the cores to HTTP and decode work.",
    )
    # -- HTTP --
    host: str = Field("127.0.0.1", description="Address to bind (0.0.0.0 to listen on all interfaces).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = pick a free one).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn log level."
    )
    access_log: Literal["plain", "json", "off"] = Field(
        "plain",
        description="One line per request (method, path, status, images, bytes in/out, ms, client, request id; "
        "never bodies or headers): plain text, one JSON object per line on stdout, or off. Logged at INFO.",
    )
    # -- batching --
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most images in one inference call.")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="How long a batch may wait to fill up. 0 = opportunistic: run whatever is queued at once, "
        "so a lone request is never held back.",
    )
    max_queue: int = Field(
        256, ge=1, description="Most images waiting for inference; beyond it requests get 503 with Retry-After."
    )
    max_concurrent_requests: int = Field(
        128,
        ge=1,
        description="Most POST /embed requests in progress (reading, decoding, queued, encoding); beyond it 503 "
        "with Retry-After before the body is read, which bounds the memory held by request bodies.",
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503 answers.")
    inference_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Longest one inference call may take; beyond it the batch fails and /ready latches 503 "
        "(a hung device cannot be recovered in-process).",
    )
    # -- request limits --
    max_images_per_request: int = Field(64, ge=1, description="Most images in one POST /embed.")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body, in bytes (413 beyond).")
    body_timeout_s: float = Field(
        60.0, gt=0, description="Longest time to receive a request body before a 408 (slow-client guard)."
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest image, in pixels (width x height, read from the header; 413 beyond)."
    )
    decode_threads: int = Field(0, ge=0, description="Threads that decode and resize images; 0 = min(8, CPUs).")
    decode_processes: int = Field(
        0,
        ge=0,
        le=256,
        description="Decode in this many worker processes instead of the decode threads (0 = threads). Each "
        "process has its own GIL, which the threads share with the event loop and the inference thread; "
        "worth trying on a host with many cores per GPU. Costs a copy of each file and of its pixels "
        "between processes, and a few tens of MB per process.",
    )
    decode_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest decode of one image, timed from its start, before a 400. An image that waits this "
        "long for a free decode thread or process gets 503 with Retry-After instead (the server is busy).",
    )
    # -- video (V-JEPA 2 models; service/video.py) --
    video_max_pixels: int = Field(
        4096 * 2304, ge=1, description="Largest video frame, in pixels (from the stream header and every frame; 413)."
    )
    video_max_frames: int = Field(3600, ge=1, description="Most frames in one video (counted by demuxing; 413).")
    video_max_duration_s: float = Field(120.0, gt=0, description="Longest video, in seconds (413 beyond).")
    video_timeout_s: float = Field(20.0, gt=0, description="Longest decode of one video before a 400.")
    gil_switch_interval_ms: float = Field(
        0.5,
        gt=0,
        le=100,
        description="Python's thread switch interval for the server process (sys.setswitchinterval; Python's "
        "default is 5). A decode thread that comes back from C code (libjpeg, a resize pass) waits up to this "
        "long for the GIL while the event loop or the inference thread runs Python, about four times per JPEG: "
        "at 5 ms that wait rivals a 3 MP decode (python -m bench.gil_bench, docs/BENCHMARKS.md).",
    )
    jpeg_draft: bool = Field(
        True,
        description="Decode large JPEGs at reduced DCT scale (Pillow draft), keeping at least jpeg_draft_margin "
        "times the size the resize needs. Off = every pixel decoded, exactly the input Encoder.embed sees.",
    )
    jpeg_draft_margin: float = Field(
        4.0,
        ge=2.0,
        description="How much larger than the resize target a drafted JPEG stays (like Pillow's reducing_gap). "
        "At 4, the prepared pixels differ from a full decode by at most a few levels (tests/service/test_decode.py).",
    )
    # -- security --
    api_key: SecretStr | None = Field(
        None, description="When set, /embed and /info need 'Authorization: Bearer <key>' (compared in constant time)."
    )
    metrics_require_key: bool = Field(False, description="Also require the API key for /metrics.")
    allow_url_fetch: bool = Field(
        False, description="Let JSON requests give http(s) URLs instead of image bytes (SSRF risk: off by default)."
    )
    url_allowlist: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Host names URLs may point at when allow_url_fetch is on (exact match; comma-separated)."
    )
    url_timeout_s: float = Field(5.0, gt=0, description="Timeout for fetching one URL.")
    # -- lifecycle --
    shutdown_delay_s: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, keep listening at least this long (answering /ready and new /embed with 503) "
        "so load balancers stop routing here before connections are refused; the drain runs meanwhile.",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM: /ready turns 503 and new work is refused; accepted requests get this "
        "long to finish before the server exits.",
    )
    warmup: bool = Field(True, description="Run one full batch before /ready says yes.")
    # -- start-up optimisation (service/optimize.py) --
    optimize: bool = Field(
        True,
        description="On a CPU, when the model has no verified ONNX graphs, build them at start-up (python -m export "
        "--int8 in a child process; needs torch, onnx, onnxscript) into cache_dir and serve those: ONNX Runtime "
        "int8 where within cosine 0.999 of fp32 on photos, else fp32. /health answers and /ready is 503 while it "
        "builds; the next start reuses the cache. --no-optimize serves the source as given.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where built graphs are cached, one entry per weights sha256 + versions. Default "
        "$XDG_CACHE_HOME/jepa-embed (~/.cache/jepa-embed), or a per-user directory under /tmp when that is "
        "not writable (a read-only root filesystem).",
    )
    # -- the page --
    ui: bool = Field(
        True,
        description="Serve the embedding viewer page at /ui (and redirect / to it): static files that call "
        "/info and /embed from the browser. --no-ui leaves both routes out (404).",
    )

    @field_validator("url_allowlist", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.allow_url_fetch and not self.url_allowlist:
            raise ValueError("allow_url_fetch needs a non-empty url_allowlist")
        if self.max_images_per_request > self.max_queue:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) must not exceed max_queue ({self.max_queue})"
            )
        if self.backend == "onnxruntime" and self.dtype == "bfloat16":
            raise ValueError("dtype bfloat16 is only supported by the torch backend")
        if self.backend in ("torch", "openvino") and self.dtype == "int8":
            raise ValueError("dtype int8 is only supported by the onnxruntime backend (model.int8.onnx)")
        if self.backend == "openvino" and self.device == "cuda":
            raise ValueError("the openvino backend runs on the CPU only (--device cpu or auto)")
        return self

    def resolved_model(self) -> str:
        """The model path to load, downloaded first when ``model`` names a Hub repo or URL; raises
        ``ValueError`` (``jepa.ModelSourceError``) with instructions when none is given or found."""
        if self.model:
            from jepa.hub import resolve  # a short name, Hub id or URL becomes local files (ModelSourceError)

            return str(resolve(self.model).path)
        for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
            candidate = base / DEFAULT_MODEL_DIR
            if candidate.is_dir():
                return str(candidate)
        raise ValueError(
            f"no model to serve: the default {DEFAULT_MODEL_DIR}/ does not exist here. Pass one with "
            "--model PATH (or JEPA_MODEL=PATH): a model directory, an exported directory with model.onnx, "
            "an official .pth.tar or a Hugging Face IJepaModel directory."
        )

    def thread_budget(self) -> int:
        """Intra-op threads the backend may use in all."""
        return self.inference_threads or usable_cpus()

    def threads_per_worker(self, workers: int) -> int:
        """Intra-op threads for each of ``workers``; 0 leaves the library's default (one worker, no limit set)."""
        if workers == 1 and not self.inference_threads:
            return 0
        return max(1, self.thread_budget() // workers)

    def decode_pool_size(self) -> int:
        return self.decode_threads or min(8, os.cpu_count() or 1)


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask (a cpuset), capped by a cgroup CPU quota (a
    container's ``cpus:`` limit, which the affinity mask does not show)."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); None when unlimited or unknown."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
