"""ONNX Runtime backend for the exported graphs beside the weights (see COMMON contract).

Imports no torch: the config comes from ``jepa.formats.native.read_config``. Graphs with a
float ``pixel_values`` input get normalised batches; ``model.uint8.onnx`` (input ``images``
uint8 ``[B, S, S, 3]``) normalises inside, so the batcher only stacks raw pixels for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from jepa.errors import CheckpointError
from jepa.formats.native import read_config
from service.backends.base import BackendInfo
from service.settings import Settings

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
        options = ort.SessionOptions()
        if settings.inference_threads:
            options.intra_op_num_threads = settings.inference_threads
        self.session = ort.InferenceSession(
            str(graph), options, providers=pick_providers(settings.device, settings.tensorrt)
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CheckpointError(graph, f"expected one input, found {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        outputs = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUTS) <= outputs:
            raise CheckpointError(graph, f"outputs {sorted(outputs)} lack {sorted(set(OUTPUTS) - outputs)}")
        uint8 = inputs[0].type == "tensor(uint8)"
        providers = self.session.get_providers()
        self.info = BackendInfo(
            name="onnxruntime",
            device="cpu" if providers[0] == "CPUExecutionProvider" else "cuda",
            dtype="float16" if "fp16" in graph.name else ("int8" if "int8" in graph.name else "float32"),
            reason=reason,
            input_kind="uint8" if uint8 else "float",
            details={"graph": graph.name, "providers": providers, "onnxruntime": ort.__version__},
        )

    def run(self, batch: np.ndarray, patches: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        if not patches:  # only the pooled output leaves the session
            (pooled,) = self.session.run([OUTPUTS[0]], {self.input_name: batch})
            return np.asarray(pooled, dtype=np.float32), None
        pooled, tokens = self.session.run(list(OUTPUTS), {self.input_name: batch})
        return np.asarray(pooled, dtype=np.float32), np.asarray(tokens, dtype=np.float32)

    def close(self) -> None:
        del self.session
