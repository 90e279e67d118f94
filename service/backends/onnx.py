"""ONNX Runtime backend for the exported graphs beside the weights (names: :mod:`jepa.contract`).

Imports no torch: the config comes from ``jepa.formats.native.read_config``. Graphs with a
float ``pixel_values`` input get normalised batches; ``model.uint8.onnx`` (input ``images``
uint8 ``[B, S, S, 3]``) normalises inside, so the batcher only stacks raw pixels for it. The
dtype shown in ``/info`` is the one ``export.json`` records for the graph, else the contract's
for that file name. A graph exported before ``multilayer`` existed serves the other outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from jepa.contract import GRAPH_FILES, OUTPUT_SPECS, OUTPUTS, Embeddings, Output, read_record
from jepa.errors import CheckpointError
from jepa.formats.native import read_config
from service.backends.base import BackendInfo, graph_outputs, require_graph
from service.plan import Plan

log = logging.getLogger("service")


def pick_providers(device: str, tensorrt: bool = False) -> list[str]:
    """CUDA when asked for (or auto and available), TensorRT first when enabled; CPU last as the
    fallback for any operator the GPU providers do not take."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        if device == "cuda":
            raise RuntimeError(f"device cuda asked for, but onnxruntime offers only {available}")
        return ["CPUExecutionProvider"]
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if tensorrt:
        if "TensorrtExecutionProvider" not in available:
            raise RuntimeError(f"tensorrt asked for, but onnxruntime offers only {available}")
        gpu.insert(0, "TensorrtExecutionProvider")
    return gpu


class OnnxBackend:
    def __init__(self, plan: Plan) -> None:
        graph = require_graph(plan.graph, plan.model)
        self.config = read_config(graph.parent)
        providers = pick_providers(plan.device, plan.tensorrt)
        if plan.device == "cuda":
            preload_cuda_libraries()
        self.session = make_session(graph, providers, plan.threads, plan.spin)
        # Several CPU workers split the threads; a batch that runs alone gets a session with all of them.
        self._wide_session = make_session(graph, providers, plan.wide_threads, plan.spin) if plan.wide else None
        self.input_name = _input_name(graph, self.session)
        self.outputs = graph_outputs(graph, {o.name for o in self.session.get_outputs()})
        active = self.session.get_providers()
        if plan.device == "cuda" and active[0] == "CPUExecutionProvider":
            # ONNX Runtime falls back to the CPU with only a log line when the CUDA libraries fail to
            # load; a GPU deployment silently serving from the CPU is worse than not starting.
            raise RuntimeError(
                f"onnxruntime {ort.__version__} could not start {providers[0]} (active: {active}): the CUDA "
                "and cuDNN libraries it was built for are missing or failed to load (see the log above)"
            )
        self.info = BackendInfo(
            name="onnxruntime",
            device=plan.device,
            dtype=_graph_dtype(graph),
            reason=plan.reason,
            input_kind="uint8" if self.session.get_inputs()[0].type == "tensor(uint8)" else "float",
            details={
                "graph": graph.name,
                "outputs": sorted(self.outputs),
                "providers": active,
                "onnxruntime": ort.__version__,
                "threads": plan.threads or "default",
                "workers": plan.workers,
                "wide_session_for_lone_batches": plan.wide,
            },
        )

    def run(self, batch: np.ndarray, outputs: frozenset[Output], alone: bool = False) -> Embeddings[np.ndarray]:
        session = self._wide_session if alone and self._wide_session is not None else self.session
        names = [OUTPUT_SPECS[o].tensor for o in OUTPUTS if o == "global" or o in outputs]  # only these leave
        arrays = session.run(names, {self.input_name: batch})
        return Embeddings.from_named({n: np.asarray(a, dtype=np.float32) for n, a in zip(names, arrays, strict=True)})

    def close(self) -> None:
        del self.session, self._wide_session


def _input_name(graph: Path, session: ort.InferenceSession) -> str:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CheckpointError(graph, f"expected one input, found {[i.name for i in inputs]}")
    return inputs[0].name


def _graph_dtype(graph: Path) -> str:
    """The graph's dtype as export recorded it, else as the contract names the file; else unknown."""
    try:
        record = read_record(graph.parent)
    except CheckpointError as e:
        log.warning("%s", e)
        record = None
    if record is not None and graph.name in record.graphs:
        return record.graphs[graph.name].dtype
    known = GRAPH_FILES.get(graph.name)
    return known.dtype if known is not None else "unknown"


def preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that pip's ``nvidia-*`` wheels (or torch) installed, so the
    CUDA provider finds them without ``LD_LIBRARY_PATH``: this backend never imports torch, which
    would otherwise have loaded them. Where they live on the library path already, this finds
    nothing new and the provider loads them itself."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # best effort: the session's own loading decides, and reports, below
        log.warning("onnxruntime.preload_dlls failed: %s", e)


def make_session(graph: Path, providers: list[str], threads: int, spin: bool) -> ort.InferenceSession:
    """An ONNX Runtime session with ``threads`` intra-op threads (0: its default) and spinning on/off."""
    # The service opens no outbound connection the user did not configure: ONNX Runtime's
    # telemetry is off before any session exists (not only in the container's environment).
    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin:  # idle pool threads sleep instead of spinning, leaving the cores to HTTP and decode
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph), options, providers=providers)
