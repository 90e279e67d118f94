"""What every backend offers: a description and ``run(batch, outputs) -> Embeddings``.

The batcher calls a backend from ``plan.workers`` threads at once (one by default); ONNX
Runtime sessions and torch modules in inference mode both allow concurrent calls. ``input_kind``
says whether it wants normalised float32 ``[B, 3, S, S]`` or raw RGB ``uint8 [B, S, S, 3]`` (the
torch backend and the ``model.uint8.onnx`` graph normalise on their device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from jepa.config import ModelConfig
from jepa.contract import OUTPUT_SPECS, OUTPUTS, Embeddings, Output
from jepa.errors import CheckpointError

# uint8 [S, S, 3] images -> the batch ``Backend.run`` takes (stacked; normalised for float input)
Assemble = Callable[[list[np.ndarray]], np.ndarray]

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
    # What ``run`` can produce: every output for torch; for a graph, the outputs it has (graphs
    # exported before ``multilayer`` existed lack it, and asking for it is then a 422).
    outputs: frozenset[Output]

    def run(self, batch: np.ndarray, outputs: frozenset[Output], alone: bool = False) -> Embeddings[np.ndarray]:
        """``batch`` (float32 ``[B, 3, S, S]`` or uint8 ``[B, S, S, 3]``) -> float32 ``global [B, D]``
        and, when in ``outputs``, ``patch [B, N, D]`` and ``multilayer [B, L*D]`` (else None: a patch
        grid is large, and copying it off a GPU for global-only batches would cost more than the
        pooling). ``alone``: no other batch runs now (a wide backend may then use every thread)."""
        ...

    def close(self) -> None: ...


def is_fatal(error: BaseException) -> bool:
    """True for errors that leave the device unusable (CUDA faults, device OOM): latch not-ready."""
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _FATAL_MARKERS)


def require_graph(graph: Path | None, model: Path) -> Path:
    """The graph a plan names, or :class:`CheckpointError` naming what is missing (the graph
    backends, ONNX Runtime and OpenVINO, both serve a file ``python -m export`` wrote)."""
    if graph is None or not graph.is_file():
        raise CheckpointError(graph or model, "ONNX graph not found (export the model first, or use --backend torch)")
    return graph


def graph_outputs(graph: Path, names: set[str]) -> frozenset[Output]:
    """The outputs a graph with output tensors ``names`` has; ``global`` and ``patch`` are required
    (graphs exported before ``multilayer`` existed lack only that one)."""
    required = {OUTPUT_SPECS["global"].tensor, OUTPUT_SPECS["patch"].tensor}
    if not required <= names:
        raise CheckpointError(graph, f"outputs {sorted(names)} lack {sorted(required - names)}")
    return frozenset(o for o in OUTPUTS if OUTPUT_SPECS[o].tensor in names)
