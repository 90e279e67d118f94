"""Inference backends: PyTorch (``torch.py``), ONNX Runtime (``onnx.py``) and OpenVINO
(``openvino.py``) behind one protocol.

Which one runs, on what, is decided before either is imported (:func:`service.plan.resolve_plan`);
:func:`load_backend` only builds what the plan names. The ONNX and OpenVINO paths never import torch.
"""

from __future__ import annotations

from service.backends.base import Backend, BackendInfo, is_fatal
from service.plan import Plan

__all__ = ["Backend", "BackendInfo", "is_fatal", "load_backend"]


def load_backend(plan: Plan) -> Backend:
    """Build the backend ``plan`` names (imports only what that backend needs)."""
    if plan.backend == "onnxruntime":
        from service.backends.onnx import OnnxBackend

        return OnnxBackend(plan)
    if plan.backend == "openvino":
        from service.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(plan)
    from service.backends.torch import TorchBackend

    return TorchBackend(plan)
