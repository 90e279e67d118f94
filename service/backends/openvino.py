"""OpenVINO backend: our fp32 graph ``model.onnx`` on OpenVINO's CPU plugin (names: :mod:`jepa.contract`).

Torch-free, like the ONNX backend. OpenVINO reads the ONNX graph itself and picks the inference
precision for the CPU: bfloat16 where the CPU has it in hardware (AMX or AVX512-BF16), else
float32. On a 2-core AMX machine that ran ViT-S/16 at 1.3x (batch 1) and 2.0x (batch 8) our ONNX
Runtime int8 graph (``python -m bench.cpu_engines``); the dtype in ``/info`` is the precision the compiled model
reports, not a guess. ``--dtype auto`` never lets it compute in an emulated bfloat16: where
:mod:`service.cpu_features` finds no native bf16, f32 is asked for explicitly.

**Workers, streams and threads.** One worker by default (``service.plan``): the compiled model
gets one stream (``PERFORMANCE_HINT=LATENCY``) that spreads each batch over every thread of the
budget, so a lone image gets the whole CPU and the batcher forms the next batch meanwhile. On AMX
a bigger batch pays far more than overlapping two (batch 8 ran 1.7x batch 1 per image, while ONNX
Runtime gained 10%), which is why this backend does not copy the ONNX backend's two half-width
workers. With ``--inference-workers N`` the model is compiled with N streams sharing the budget
and each worker takes its own infer request from a pool, so N batches run at once. The thread
budget is set explicitly (``usable_cpus``: affinity and the cgroup quota), because OpenVINO
counts the host's cores and would oversubscribe a container's CPU limit. Thread pinning is off:
the inference threads share the cores with decode and HTTP threads, and the scheduler should be
free to move them off a core a decode holds (ONNX Runtime does not pin either).

No outbound connections: OpenVINO's telemetry (``openvino_telemetry``) is used by its model
converter (``ovc`` / ``convert_model``) only; this backend reads the ONNX graph with
``Core.compile_model`` and never calls the converter.
"""

from __future__ import annotations

import logging
import queue

import numpy as np

from jepa.contract import OUTPUT_SPECS, OUTPUTS, Embeddings, Output
from jepa.errors import CheckpointError
from jepa.formats.native import read_config
from service.backends.base import BackendInfo, graph_outputs
from service.cpu_features import CpuIsa, cpu_isa
from service.plan import Plan

log = logging.getLogger("service")
# service dtype -> OpenVINO INFERENCE_PRECISION_HINT, and OpenVINO's element type names back
HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


class OpenVinoMissingError(RuntimeError):
    """``--backend openvino`` where the openvino package cannot be imported."""


def precision_hint(dtype: str, isa: CpuIsa) -> str | None:
    """OpenVINO's precision hint for a plan's dtype: ``auto`` leaves OpenVINO's default (bf16 only
    where the CPU has it natively) but asks for f32 where this CPU lacks native bf16, so an
    emulated bf16 can never be picked by default; an explicit dtype is passed through."""
    if dtype == "auto":
        return None if isa.native_bf16 else "f32"
    if dtype not in HINTS:
        raise ValueError(f"dtype {dtype} is not an OpenVINO precision (choose from auto, {', '.join(HINTS)})")
    return HINTS[dtype]


def compile_config(plan: Plan, isa: CpuIsa) -> dict[str, object]:
    """The CPU plugin's settings for ``plan`` (see the module docstring for why)."""
    config: dict[str, object] = {"INFERENCE_NUM_THREADS": plan.wide_threads, "ENABLE_CPU_PINNING": False}
    if plan.workers == 1:
        config["PERFORMANCE_HINT"] = "LATENCY"
    else:
        config["NUM_STREAMS"] = plan.workers
    hint = precision_hint(plan.dtype, isa)
    if hint is not None:
        config["INFERENCE_PRECISION_HINT"] = hint
    return config


def import_openvino():  # -> the openvino module
    try:
        import openvino
    except ImportError as e:
        raise OpenVinoMissingError(
            f"backend openvino asked for, but openvino cannot be imported ({e}); pip install openvino "
            "(part of jepa-embed[onnx] on x86-64), or use --backend onnxruntime"
        ) from e
    return openvino


class OpenVinoBackend:
    def __init__(self, plan: Plan) -> None:
        graph = plan.graph
        if graph is None or not graph.is_file():
            raise CheckpointError(
                graph or plan.model, "ONNX graph not found (export the model first, or use --backend torch)"
            )
        ov = import_openvino()
        self.config = read_config(graph.parent)
        settings = compile_config(plan, cpu_isa())
        self.compiled = ov.Core().compile_model(str(graph), "CPU", settings)
        if len(self.compiled.inputs) != 1:
            names = [i.get_any_name() for i in self.compiled.inputs]
            raise CheckpointError(graph, f"expected one input, found {names}")
        self.outputs = graph_outputs(graph, {n for port in self.compiled.outputs for n in port.get_names()})
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # one per worker; run() borrows one
        for _ in range(plan.workers):
            self._requests.put(self.compiled.create_infer_request())
        first_call(self.compiled)
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.info = BackendInfo(
            name="openvino",
            device="cpu",
            dtype=DTYPES.get(precision, precision),
            reason=plan.reason,
            input_kind="uint8" if self.compiled.input(0).get_element_type().get_type_name() == "u8" else "float",
            details={
                "graph": graph.name,
                "outputs": sorted(self.outputs),
                "openvino": ov.__version__,
                "compile_config": {k: str(v) for k, v in settings.items()},
                "streams": int(self.compiled.get_property("NUM_STREAMS")),
                "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                "workers": plan.workers,
            },
        )

    def run(self, batch: np.ndarray, outputs: frozenset[Output], alone: bool = False) -> Embeddings[np.ndarray]:
        request = self._requests.get()
        try:
            # share_outputs: read the request's own buffers and copy only what leaves (a patch grid
            # nobody asked for is never copied); the copy happens before the request is reused
            result = request.infer({0: batch}, share_outputs=True)
            named = {
                OUTPUT_SPECS[o].tensor: np.array(result[OUTPUT_SPECS[o].tensor], dtype=np.float32, copy=True)
                for o in OUTPUTS
                if o in self.outputs and (o == "global" or o in outputs)
            }
        finally:
            self._requests.put(request)
        return Embeddings.from_named(named)

    def close(self) -> None:
        while not self._requests.empty():
            self._requests.get()
        del self.compiled


def first_call(compiled) -> None:
    """One batch-1 inference on this thread, before any worker calls ``run``. OpenVINO's Python
    binding sets up its numpy API on the first call that passes an array (pybind11's
    ``gil_safe_call_once_and_store``); two first calls from two threads at once deadlocked a
    fresh server with two workers (one thread holding a C++ static-init guard and waiting for the
    GIL, the other holding the GIL and waiting for the guard: tests/service/test_openvino.py)."""
    port = compiled.input(0)
    shape = [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]
    dtype = np.uint8 if port.get_element_type().get_type_name() == "u8" else np.float32
    compiled.create_infer_request().infer({0: np.zeros(shape, dtype)})
