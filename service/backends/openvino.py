"""OpenVINO backend: our fp32 graph ``model.onnx`` on OpenVINO's CPU plugin (names: :mod:`jepa.contract`).

Torch-free, like the ONNX backend. OpenVINO reads the ONNX graph itself and picks the inference
precision for the CPU: bfloat16 where the CPU has it in hardware (AMX or AVX512-BF16), else
float32. On a 2-core AMX machine that ran ViT-S/16 at 1.3x (batch 1) and 2.0x (batch 8) our ONNX
Runtime int8 graph (``python -m bench.cpu_engines``); the dtype in ``/info`` is the precision the compiled model
reports, not a guess. ``--dtype auto`` never lets it compute in an emulated bfloat16: where
:mod:`service.cpu_features` finds no native bf16, f32 is asked for explicitly.

**Workers, streams and threads.** One worker by default (``service.plan``): one compiled model
with one stream (``PERFORMANCE_HINT=LATENCY``) that spreads each batch over every thread of the
budget, so a lone image gets the whole CPU and the batcher forms the next batch meanwhile. Not
the ONNX backend's two half-width workers plus an all-thread copy for lone batches: that layout,
tried here, served ViT-S/16 worse on the 2-core AMX machine (small JPEGs, ``bench.loadgen``
closed-loop clients, three servers interleaved over two rounds, beside other work, so an
indication and not a benchmark: 1 client 20.7 / 20.4 images/s against 32.4 / 37.4 for one
stream, 16 clients 40.2 / 48.3 against 56.8 / 62.2; ONNX Runtime int8 24-28 and 39-44), its two
thread pools contending for two cores. ``--inference-workers N`` compiles N streams sharing the
budget (OpenVINO caps them at one per thread), each worker borrowing its own infer request; a lone
batch then runs on one stream. The thread budget is set explicitly (``usable_cpus``: affinity
and the cgroup quota), because OpenVINO counts the host's cores and would oversubscribe a
container's CPU limit. Thread pinning is off: the inference threads share the cores with decode
and HTTP threads, and the scheduler should be free to move them off a core a decode holds (ONNX
Runtime does not pin either).

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
from service.backends.base import BackendInfo, graph_outputs, require_graph
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


def compile_config(plan: Plan, isa: CpuIsa, streams: int) -> dict[str, object]:
    """The CPU plugin's settings for ``plan`` with ``streams`` streams sharing its thread budget
    (one: a latency stream on every thread; see the module docstring for why)."""
    config: dict[str, object] = {"INFERENCE_NUM_THREADS": plan.wide_threads, "ENABLE_CPU_PINNING": False}
    if streams == 1:
        config["PERFORMANCE_HINT"] = "LATENCY"
    else:
        config["NUM_STREAMS"] = streams
    hint = precision_hint(plan.dtype, isa)
    if hint is not None:
        config["INFERENCE_PRECISION_HINT"] = hint
    return config


class Requests:
    """A compiled model and its infer requests, each used by one caller at a time (a worker takes
    one from the queue for its batch). Its first inference runs here, on the constructing thread
    (see :func:`first_call`)."""

    def __init__(self, core, model, config: dict[str, object], count: int) -> None:
        self.config = config
        self.compiled = core.compile_model(model, "CPU", config)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(self.compiled.create_infer_request())
        first_call(self.compiled)

    def infer(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """``names`` outputs of one inference, copied out of the request before it is reused."""
        request = self._free.get()
        try:
            # share_outputs: read the request's own buffers, copying only what leaves (a patch grid
            # nobody asked for is never copied)
            result = request.infer({0: batch}, share_outputs=True)
            return {n: np.array(result[n], dtype=np.float32, copy=True) for n in names}
        finally:
            self._free.put(request)

    def prop(self, name: str) -> object:
        return self.compiled.get_property(name)


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
        graph = require_graph(plan.graph, plan.model)
        ov = import_openvino()
        self.config = read_config(graph.parent)
        core, isa = ov.Core(), cpu_isa()
        model = core.read_model(str(graph))
        if len(model.inputs) != 1:
            raise CheckpointError(graph, f"expected one input, found {[i.get_any_name() for i in model.inputs]}")
        self.outputs = graph_outputs(graph, {n for port in model.outputs for n in port.get_names()})
        self.requests = Requests(core, model, compile_config(plan, isa, plan.workers), plan.workers)
        precision = str(self.requests.prop("INFERENCE_PRECISION_HINT").get_type_name())
        self.info = BackendInfo(
            name="openvino",
            device="cpu",
            dtype=DTYPES.get(precision, precision),
            reason=plan.reason,
            input_kind="uint8" if model.input(0).get_element_type().get_type_name() == "u8" else "float",
            details={
                "graph": graph.name,
                "outputs": sorted(self.outputs),
                "openvino": ov.__version__,
                "compile_config": {k: str(v) for k, v in self.requests.config.items()},
                "streams": int(self.requests.prop("NUM_STREAMS")),  # type: ignore[call-overload]
                "threads": int(self.requests.prop("INFERENCE_NUM_THREADS")),  # type: ignore[call-overload]
                "workers": plan.workers,
            },
        )

    def run(self, batch: np.ndarray, outputs: frozenset[Output], alone: bool = False) -> Embeddings[np.ndarray]:
        names = [OUTPUT_SPECS[o].tensor for o in OUTPUTS if o in self.outputs and (o == "global" or o in outputs)]
        return Embeddings.from_named(self.requests.infer(batch, names))

    def close(self) -> None:
        del self.requests


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
