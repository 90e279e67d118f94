"""ONNX Runtime backend for the exported graphs beside the weights (see COMMON contract).

Imports no torch: the config comes from ``jepa.formats.native.read_config``. Graphs with a
float ``pixel_values`` input get normalised batches; ``model.uint8.onnx`` (input ``images``
uint8 ``[B, S, S, 3]``) normalises inside, so the batcher only stacks raw pixels for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from jepa.errors import CheckpointError
from jepa.formats.native import read_config
from service.backends.base import BackendInfo
from service.settings import Settings

log = logging.getLogger("service")
OUTPUTS = ("global_embedding", "patch_embeddings")


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
    def __init__(self, graph: Path, settings: Settings, reason: str) -> None:
        if not graph.is_file():
            raise CheckpointError(graph, "ONNX graph not found (export the model first, or use --backend torch)")
        self.config = read_config(graph.parent)
        providers = pick_providers(settings.device, settings.tensorrt)
        cpu = providers == ["CPUExecutionProvider"]
        if not cpu:
            preload_cuda_libraries()
        self.workers = settings.inference_workers or (2 if cpu and settings.thread_budget() >= 2 else 1)
        threads = settings.threads_per_worker(self.workers)
        self.session = make_session(graph, providers, threads, settings.inference_spin)
        # Several CPU workers split the threads; a batch that runs alone gets a session with all of them.
        self.wide = cpu and self.workers > 1
        self._wide_session: ort.InferenceSession | None = None
        if self.wide:
            self._wide_session = make_session(graph, providers, settings.thread_budget(), settings.inference_spin)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CheckpointError(graph, f"expected one input, found {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        outputs = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUTS) <= outputs:
            raise CheckpointError(graph, f"outputs {sorted(outputs)} lack {sorted(set(OUTPUTS) - outputs)}")
        uint8 = inputs[0].type == "tensor(uint8)"
        active = self.session.get_providers()
        if not cpu and active[0] == "CPUExecutionProvider":
            # ONNX Runtime falls back to the CPU with only a log line when the CUDA libraries fail to
            # load; a GPU deployment silently serving from the CPU is worse than not starting.
            raise RuntimeError(
                f"onnxruntime {ort.__version__} could not start {providers[0]} (active: {active}): the CUDA "
                "and cuDNN libraries it was built for are missing or failed to load (see the log above)"
            )
        self.info = BackendInfo(
            name="onnxruntime",
            device="cpu" if active[0] == "CPUExecutionProvider" else "cuda",
            dtype="float16" if "fp16" in graph.name else ("int8" if "int8" in graph.name else "float32"),
            reason=reason,
            input_kind="uint8" if uint8 else "float",
            details={
                "graph": graph.name,
                "providers": active,
                "onnxruntime": ort.__version__,
                "threads": threads or "default",
                "workers": self.workers,
                "wide_session_for_lone_batches": self.wide,
            },
        )

    def run(self, batch: np.ndarray, patches: bool = True, alone: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        session = self._wide_session if alone and self._wide_session is not None else self.session
        if not patches:  # only the pooled output leaves the session
            (pooled,) = session.run([OUTPUTS[0]], {self.input_name: batch})
            return np.asarray(pooled, dtype=np.float32), None
        pooled, tokens = session.run(list(OUTPUTS), {self.input_name: batch})
        return np.asarray(pooled, dtype=np.float32), np.asarray(tokens, dtype=np.float32)

    def close(self) -> None:
        del self.session, self._wide_session


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
