"""Inference backends: PyTorch (``torch.py``) and ONNX Runtime (``onnx.py``) behind one protocol.

:func:`load_backend` resolves ``--dtype auto`` and ``--backend auto`` once, at start-up:

- dtype auto: bfloat16 on a GPU (torch: tensor cores, exact enough for embeddings); on a CPU the
  int8 graph when the export measured it within cosine 0.999 of fp32 on real photos (about 2x
  faster than ONNX Runtime fp32 on 2 cores, see docs/BENCHMARKS.md), else float32.
- backend auto: ONNX Runtime when the model directory holds the graph for that dtype and
  onnxruntime imports, else PyTorch.

Both choices and the reasons are shown in ``/info``. The ONNX path never imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from service.backends.base import Backend, BackendInfo, is_fatal
from service.settings import Settings

__all__ = ["Backend", "BackendInfo", "choose_backend", "choose_dtype", "is_fatal", "load_backend"]

# Default embeddings must stay this close to fp32 (cosine of the global embedding on photos).
INT8_MIN_COSINE = 0.999
ONNX_FILES = {"float16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def onnx_file_for(settings: Settings) -> str:
    return settings.onnx_file or ONNX_FILES.get(settings.dtype, "model.onnx")


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


def cuda_present(settings: Settings) -> bool:
    """Whether ``--device`` means a GPU: asked for, or ``auto`` with torch or onnxruntime seeing one."""
    if settings.device != "auto":
        return settings.device == "cuda"
    if not nvidia_driver_present():
        return False
    if settings.backend != "onnxruntime" and _importable("torch"):
        import torch

        return torch.cuda.is_available()
    if _importable("onnxruntime"):
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return False


def verified_int8_cosine(model: str) -> float | None:
    """Mean global-embedding cosine of ``model.int8.onnx`` to fp32 on photos, as export.json records it."""
    try:
        record = json.loads((Path(model) / "export.json").read_text())
        cosine = record["graphs"]["model.int8.onnx"]["summary"]["photos_global_cos_mean"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(cosine) if isinstance(cosine, int | float) else None


def choose_dtype(settings: Settings, model: str) -> tuple[str, str]:
    """``(dtype, why)`` for ``settings.dtype``; ``why`` is shown in ``/info``."""
    if settings.dtype != "auto":
        return settings.dtype, "asked for explicitly"
    if cuda_present(settings):
        return "bfloat16", "auto: a CUDA device is present"
    if settings.backend == "torch" or settings.onnx_file or not _importable("onnxruntime"):
        return "float32", "auto: CPU, and int8 needs onnxruntime with its default graph"
    cosine = verified_int8_cosine(model)
    if not (Path(model) / "model.int8.onnx").is_file() or cosine is None:
        return "float32", "auto: CPU, and no verified model.int8.onnx (export with --int8)"
    if cosine < INT8_MIN_COSINE:
        return "float32", f"auto: CPU, model.int8.onnx cosine {cosine:.5f} < {INT8_MIN_COSINE} recorded in export.json"
    return "int8", f"auto: CPU, model.int8.onnx within cosine {cosine:.6f} of fp32 per export.json"


def choose_backend(settings: Settings, model: str) -> tuple[str, str]:
    """``(backend, why)`` for ``settings.backend`` with a resolved dtype; ``why`` is shown in ``/info``."""
    graph = Path(model) / onnx_file_for(settings)
    if settings.backend != "auto":
        return settings.backend, "asked for explicitly"
    if settings.dtype == "bfloat16":
        return "torch", "dtype bfloat16 needs torch"
    if not graph.is_file():
        return "torch", f"no {graph.name} in the model directory"
    if not _importable("onnxruntime"):
        return "torch", f"{graph.name} found but onnxruntime is not installed"
    return "onnxruntime", f"{graph.name} found and onnxruntime is installed"


def load_backend(settings: Settings, model: str) -> Backend:
    """Build the backend ``settings`` asks for (imports only what that backend needs)."""
    dtype, dtype_why = choose_dtype(settings, model)
    settings = settings.model_copy(update={"dtype": dtype})
    name, why = choose_backend(settings, model)
    why = f"{why}; dtype {dtype}: {dtype_why}"
    if name == "onnxruntime":
        from service.backends.onnx import OnnxBackend

        return OnnxBackend(Path(model) / onnx_file_for(settings), settings, why)
    if dtype == "int8":
        raise ValueError("dtype int8 needs the onnxruntime backend and model.int8.onnx in the model directory")
    from service.backends.torch import TorchBackend

    return TorchBackend(model, settings, why)
