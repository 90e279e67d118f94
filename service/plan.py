"""Settings resolved once, at start-up, into frozen plans that everything below the entry point takes.

:func:`resolve_plan` turns ``--backend/--device/--dtype auto`` into a :class:`Plan` (which backend,
which graph, which device and dtype, how many workers and threads, and why), so a backend reads
only the plan and ``/info`` shows exactly what was decided. :class:`BatchLimits` and
:class:`RequestLimits` are the batcher's and the request parser's share of the settings.

- dtype auto: bfloat16 on a GPU (torch: tensor cores, exact enough for embeddings); on a CPU the
  int8 graph when the export measured it within cosine 0.999 of fp32 on real photos (about 2x
  faster than ONNX Runtime fp32 on 2 cores, see docs/BENCHMARKS.md), else float32.
- backend auto: ONNX Runtime when the model directory holds the graph for that dtype and
  onnxruntime imports, else PyTorch. On a CPU with dtype auto, OpenVINO on the fp32 graph instead
  where the model's ``engines.json`` shows it verified and faster on this machine
  (:mod:`service.engine_choice`).

Nothing here imports torch unless a CUDA driver is present and torch is asked whether it sees it.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jepa.contract import graph_for_dtype, read_record
from jepa.errors import CheckpointError
from service.settings import Settings

BackendName = Literal["torch", "onnxruntime", "openvino"]
# Default embeddings must stay this close to fp32 (cosine of the global embedding on photos).
INT8_MIN_COSINE = 0.999


@dataclass(frozen=True)
class Plan:
    """How the model runs, decided once. ``threads`` is per worker (0: the library's default);
    ``wide`` means a lone batch may run on all ``wide_threads`` (several CPU workers only)."""

    model: str
    backend: BackendName
    graph: Path | None  # the ONNX graph (onnxruntime and openvino)
    device: Literal["cpu", "cuda"]
    dtype: str
    workers: int
    threads: int
    wide: bool
    wide_threads: int
    reason: str
    cuda_graphs: bool = False
    tensorrt: bool = False
    spin: bool = True
    max_batch_size: int = 32
    attention_backend: str = "auto"  # torch: the SDPA kernel (service.backends.torch.sdpa_backends)
    engine_choice: dict[str, object] | None = None  # CPU, auto: OpenVINO or ONNX Runtime, why, the figures


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_wait_s: float
    max_queue: int
    retry_after_s: int
    inference_timeout_s: float = 600.0

    @classmethod
    def from_settings(cls, s: Settings) -> BatchLimits:
        return cls(s.max_batch_size, s.max_wait_ms / 1000, s.max_queue, s.retry_after_s, s.inference_timeout_s)


@dataclass(frozen=True)
class RequestLimits:
    """What one ``POST /embed`` may be: read by :mod:`service.inputs`."""

    max_images_per_request: int
    max_body_bytes: int
    body_timeout_s: float
    allow_url_fetch: bool
    url_allowlist: tuple[str, ...]
    url_timeout_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> RequestLimits:
        return cls(
            s.max_images_per_request, s.max_body_bytes, s.body_timeout_s,
            s.allow_url_fetch, s.url_allowlist, s.url_timeout_s,
        )  # fmt: skip


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked with sys.modules[name] = None
        return False


def nvidia_driver_present() -> bool:
    """False only where CUDA surely cannot work: Linux without the NVIDIA driver's device nodes
    (native or WSL). Lets a CPU host skip importing torch just to ask (seconds, ~200 MB RSS)."""
    if sys.platform != "linux":
        return True  # no cheap test: ask the libraries
    return any(Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


def _torch_sees_cuda() -> bool:
    if not (nvidia_driver_present() and _importable("torch")):
        return False
    import torch

    return torch.cuda.is_available()


def _onnxruntime_sees_cuda() -> bool:
    if not (nvidia_driver_present() and _importable("onnxruntime")):
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def cuda_present(settings: Settings) -> bool:
    """Whether ``--device`` means a GPU: asked for, or ``auto`` with torch or onnxruntime seeing one."""
    if settings.device != "auto":
        return settings.device == "cuda"
    if settings.backend != "onnxruntime" and _importable("torch"):
        return _torch_sees_cuda()
    return _onnxruntime_sees_cuda()


def require_backend(settings: Settings) -> None:
    """Raise ``ValueError`` (a message and exit 2 from the CLI) when ``--backend openvino`` is asked
    for where openvino cannot be imported, before anything starts."""
    if settings.backend == "openvino" and not _importable("openvino"):
        raise ValueError(
            "backend openvino asked for, but openvino is not installed: pip install openvino (part of "
            "jepa-embed[onnx] on x86-64), or use --backend onnxruntime"
        )


def graph_file(settings: Settings, dtype: str) -> str:
    return settings.onnx_file or graph_for_dtype(dtype)


def choose_dtype(settings: Settings, model: str) -> tuple[str, str]:
    """``(dtype, why)`` for ``settings.dtype``; ``why`` is shown in ``/info``."""
    if settings.dtype != "auto":
        return settings.dtype, "asked for explicitly"
    if settings.backend == "openvino":
        return "auto", "auto: OpenVINO's default for this CPU (bfloat16 only where the CPU has it natively)"
    if cuda_present(settings):
        return "bfloat16", "auto: a CUDA device is present"
    if settings.backend == "torch" or settings.onnx_file or not _importable("onnxruntime"):
        return "float32", "auto: CPU, and int8 needs onnxruntime with its default graph"
    int8 = graph_for_dtype("int8")
    try:
        record = read_record(model) if Path(model).is_dir() else None
    except CheckpointError as e:
        return "float32", f"auto: CPU, and export.json is unreadable ({e.problem})"
    cosine = record.verified_cosine(int8) if record is not None else None
    if not (Path(model) / int8).is_file() or cosine is None:
        return "float32", f"auto: CPU, and no verified {int8} (export with --int8)"
    if cosine < INT8_MIN_COSINE:
        return "float32", f"auto: CPU, {int8} cosine {cosine:.5f} < {INT8_MIN_COSINE} recorded in export.json"
    return "int8", f"auto: CPU, {int8} within cosine {cosine:.6f} of fp32 per export.json"


def choose_backend(settings: Settings, model: str, dtype: str) -> tuple[BackendName, str]:
    """``(backend, why)`` for ``settings.backend`` with a resolved ``dtype``; ``why`` is shown in ``/info``."""
    graph = Path(model) / graph_file(settings, dtype)
    if settings.backend != "auto":
        return settings.backend, "asked for explicitly"
    if dtype == "bfloat16":
        return "torch", "dtype bfloat16 needs torch"
    if not graph.is_file():
        return "torch", f"no {graph.name} in the model directory"
    if not _importable("onnxruntime"):
        return "torch", f"{graph.name} found but onnxruntime is not installed"
    return "onnxruntime", f"{graph.name} found and onnxruntime is installed"


def choose_device(settings: Settings, backend: BackendName) -> Literal["cpu", "cuda"]:
    """``cuda`` when asked for, or ``auto`` and the chosen backend's library sees a GPU."""
    if settings.device != "auto":
        return settings.device
    if backend == "openvino":
        return "cpu"
    sees = _torch_sees_cuda() if backend == "torch" else _onnxruntime_sees_cuda()
    return "cuda" if sees else "cpu"


def graph_path(settings: Settings, model: str, backend: BackendName, dtype: str) -> Path | None:
    """The graph a graph backend loads: OpenVINO takes the fp32 graph (it picks its own precision)."""
    if backend == "torch":
        return None
    return Path(model) / graph_file(settings, "float32" if backend == "openvino" else dtype)


def default_workers(settings: Settings, backend: BackendName, device: str) -> int:
    """``--inference-workers``, else two half-width workers for ONNX Runtime on a CPU with two or
    more threads (the setting's help says why), else one: OpenVINO's one stream on every thread
    served ViT-S/16 better than two (service/backends/openvino.py)."""
    if settings.inference_workers:
        return settings.inference_workers
    return 2 if backend == "onnxruntime" and device == "cpu" and settings.thread_budget() >= 2 else 1


def pick_cpu_engine(settings: Settings, model: str, backend: BackendName, device: str) -> dict[str, object] | None:
    """OpenVINO or ONNX Runtime, for a CPU with backend and dtype auto (else None: nothing to choose)."""
    if not (backend == "onnxruntime" and device == "cpu" and settings.backend == "auto"):
        return None
    if settings.dtype != "auto" or settings.onnx_file:
        return None
    from service.cpu_features import cpu_isa
    from service.engine_choice import choose_for_model

    workers = {e: default_workers(settings, e, device) for e in ("openvino", "onnxruntime")}
    return choose_for_model(model, cpu_isa(), settings.thread_budget(), workers).as_dict()


def resolve_plan(settings: Settings, model: str) -> Plan:
    """The one place ``auto`` settings become decisions; raises ``ValueError`` for impossible mixes."""
    dtype, dtype_why = choose_dtype(settings, model)
    backend, why = choose_backend(settings, model, dtype)
    if backend in ("torch", "openvino") and dtype == "int8":
        raise ValueError("dtype int8 needs the onnxruntime backend and model.int8.onnx in the model directory")
    device = choose_device(settings, backend)
    choice = pick_cpu_engine(settings, model, backend, device)
    if choice is not None and choice["engine"] == "openvino":
        backend, why, dtype, dtype_why = "openvino", f"auto: {choice['why']}", "auto", "OpenVINO's default here"
    cpu_ort = backend == "onnxruntime" and device == "cpu"
    workers = default_workers(settings, backend, device)
    return Plan(
        model=model,
        backend=backend,
        graph=graph_path(settings, model, backend, dtype),
        device=device,
        dtype=dtype,
        workers=workers,
        threads=settings.threads_per_worker(workers),
        wide=cpu_ort and workers > 1,
        wide_threads=settings.thread_budget(),
        reason=f"{why}; dtype {dtype}: {dtype_why}",
        # graphs replay one batch at a time from one shared memory pool: one worker only
        cuda_graphs=settings.cuda_graphs and backend == "torch" and device == "cuda" and workers == 1,
        tensorrt=settings.tensorrt,
        spin=settings.inference_spin,
        max_batch_size=settings.max_batch_size,
        attention_backend=settings.attention_backend,
        engine_choice=choice,
    )
