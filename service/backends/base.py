"""What every backend offers: a description and ``run(batch, patches) -> (global [B, D], patch [B, N, D] | None)``.

The batcher calls a backend from ``workers`` threads at once (one by default); ONNX
Runtime sessions and torch modules in inference mode both allow concurrent calls. ``input_kind``
says whether it wants normalised float32 ``[B, 3, S, S]`` or raw RGB ``uint8 [B, S, S, 3]`` (the
torch backend and the ``model.uint8.onnx`` graph normalise on their device).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from jepa.config import ModelConfig

# Messages that mean the device itself is broken, so retrying on this process is pointless.
_FATAL_MARKERS = (
    "cuda error",
    "cudnn_status",
    "cublas_status",
    "illegal memory access",
    "device-side assert",
    "cuda failure",
    "cudnn failure",
    "cublas failure",
    "nccl error",
    "device lost",
)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    device: str
    dtype: str
    reason: str
    input_kind: Literal["float", "uint8"] = "float"
    details: dict[str, object] = field(default_factory=dict)


class Backend(Protocol):
    config: ModelConfig
    info: BackendInfo
    workers: int  # batches the batcher may run at once (inference_workers, resolved)
    # True when ``run(..., alone=True)`` uses every CPU for one batch (several CPU workers): the
    # batcher then runs a lone batch wide and splits a batch over the workers when none is busy.
    wide: bool

    def run(self, batch: np.ndarray, patches: bool = True, alone: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``batch`` (float32 ``[B, 3, S, S]`` or uint8 ``[B, S, S, 3]``) -> float32 ``[B, D]`` and, when
        ``patches``, ``[B, N, D]`` (else None: a patch grid is large, and copying it off a GPU for
        global-only batches would cost more than the pooling). ``alone``: no other batch runs now."""
        ...

    def close(self) -> None: ...


def is_fatal(error: BaseException) -> bool:
    """True for errors that leave the device unusable (CUDA faults, device OOM): latch not-ready."""
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _FATAL_MARKERS)
