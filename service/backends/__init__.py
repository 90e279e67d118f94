"""Inference backends: PyTorch (``torch.py``) and ONNX Runtime (``onnx.py``) behind one protocol.

:func:`load_backend` applies ``--backend auto``: ONNX Runtime when the model directory holds
the ONNX graph and onnxruntime imports, else PyTorch. The ONNX path never imports torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from service.backends.base import Backend, BackendInfo, is_fatal
from service.settings import Settings

__all__ = ["Backend", "BackendInfo", "choose_backend", "is_fatal", "load_backend"]


def onnx_file_for(settings: Settings) -> str:
    if settings.onnx_file:
        return settings.onnx_file
    return "model.fp16.onnx" if settings.dtype == "float16" else "model.onnx"


def choose_backend(settings: Settings, model: str) -> tuple[str, str]:
    """``(backend, why)`` for ``settings.backend``; ``why`` is shown in ``/info``."""
    graph = Path(model) / onnx_file_for(settings)
    if settings.backend != "auto":
        return settings.backend, "asked for explicitly"
    if settings.dtype == "bfloat16":
        return "torch", "dtype bfloat16 needs torch"
    if not graph.is_file():
        return "torch", f"no {graph.name} in the model directory"
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch", f"{graph.name} found but onnxruntime is not installed"
    return "onnxruntime", f"{graph.name} found and onnxruntime is installed"


def load_backend(settings: Settings, model: str) -> Backend:
    """Build the backend ``settings`` asks for (imports only what that backend needs)."""
    name, why = choose_backend(settings, model)
    if name == "onnxruntime":
        from service.backends.onnx import OnnxBackend

        return OnnxBackend(Path(model) / onnx_file_for(settings), settings, why)
    from service.backends.torch import TorchBackend

    return TorchBackend(model, settings, why)
