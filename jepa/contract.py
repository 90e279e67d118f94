"""The artifact contract that export writes and the service reads, in one torch-free place.

A model directory holds ``config.json`` + ``model.safetensors`` (see :mod:`jepa.formats.native`)
and, after ``python -m export``, ONNX graphs and their record ``export.json``. Everything both
sides must agree on lives here: the graph file names and what each holds, the graph input and
output names, the outputs a caller can ask for, the record as a typed model, and
:class:`Embeddings`, the named result that travels from a backend to the response. Renaming a key
here renames it for export, the service and the tests at once; nothing else spells these strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jepa.errors import CheckpointError

# -- files --
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "export.json"

GraphDtype = Literal["float32", "float16", "int8"]
InputKind = Literal["float", "uint8"]


@dataclass(frozen=True)
class GraphFile:
    """One graph file export can write: its compute dtype and what its input takes."""

    name: str
    dtype: GraphDtype
    input: InputKind = "float"


GRAPH_FILES: dict[str, GraphFile] = {
    g.name: g
    for g in (
        GraphFile("model.onnx", "float32"),
        GraphFile("model.fp16.onnx", "float16"),
        GraphFile("model.int8.onnx", "int8"),
        GraphFile("model.uint8.onnx", "float32", "uint8"),
    )
}
DEFAULT_GRAPH = "model.onnx"


def graph_for_dtype(dtype: str) -> str:
    """The float-input graph export writes for ``dtype`` (``model.onnx`` for any other dtype)."""
    for graph in GRAPH_FILES.values():
        if graph.dtype == dtype and graph.input == "float":
            return graph.name
    return DEFAULT_GRAPH


# -- graph inputs and outputs --
INPUT_NAME = "pixel_values"  # float32 [B, 3, S, S], normalised
UINT8_INPUT_NAME = "images"  # uint8 [B, S, S, 3], raw RGB (the graph normalises)

Output = Literal["global", "patch", "multilayer"]
OUTPUTS: tuple[Output, ...] = get_args(Output)
MULTILAYER_BLOCKS = 4  # the last blocks whose mean tokens make the multilayer embedding


@dataclass(frozen=True)
class OutputSpec:
    """One output: the name a request asks for, its graph tensor / :class:`Embeddings` field, the
    key it has in responses, and its shape for one image."""

    name: Output
    tensor: str
    field: str
    shape: str


OUTPUT_SPECS: dict[Output, OutputSpec] = {
    "global": OutputSpec("global", "global_embedding", "embedding", "[D]"),
    "patch": OutputSpec("patch", "patch_embeddings", "patch_embeddings", "[N, D]"),
    "multilayer": OutputSpec("multilayer", "multilayer_embedding", "multilayer_embedding", "[L * D]"),
}
GRAPH_OUTPUT_NAMES: tuple[str, ...] = tuple(OUTPUT_SPECS[o].tensor for o in OUTPUTS)


def multilayer_blocks(depth: int) -> int:
    """Blocks averaged for ``multilayer``: the last four, or all of them in a shallower model."""
    return min(MULTILAYER_BLOCKS, depth)


A = TypeVar("A")


@dataclass(frozen=True)
class Embeddings(Generic[A]):
    """One batch's (or one image's) outputs, by name: numpy arrays between the layers, torch tensors
    inside the torch backend. ``global_embedding`` ``[B, D]`` is always there; the others only when
    asked for (a patch grid is large: it stays on the device unless a caller wants it)."""

    global_embedding: A
    patch_embeddings: A | None = None
    multilayer_embedding: A | None = None

    def get(self, output: Output) -> A | None:
        return getattr(self, OUTPUT_SPECS[output].tensor)

    def present(self) -> frozenset[Output]:
        return frozenset(o for o in OUTPUTS if self.get(o) is not None)

    def map(self, fn: Any) -> Embeddings[Any]:
        """``fn`` applied to every present array (``None`` stays ``None``)."""
        return Embeddings(
            **{f.name: None if (v := getattr(self, f.name)) is None else fn(v) for f in dataclasses.fields(self)}
        )

    def only(self, outputs: frozenset[Output]) -> Embeddings[A]:
        """The same result without the optional outputs not in ``outputs``."""
        drop = {OUTPUT_SPECS[o].tensor: None for o in ("patch", "multilayer") if o not in outputs}
        return dataclasses.replace(self, **drop)

    @classmethod
    def from_named(cls, named: dict[str, A]) -> Embeddings[A]:
        """From ``{graph output name: array}``, as ONNX Runtime returns them."""
        return cls(**named)


# -- the export record --
class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Summary(_Record):
    """Worst case of a graph's checks against the fp32 PyTorch encoder."""

    max_abs: float
    max_rel: float
    min_cos: float
    photos_global_cos_mean: float


class Thresholds(_Record):
    max_rel: float | None = None
    min_photos_global_cos: float | None = None


class GraphRecord(_Record):
    """What export measured and wrote for one graph."""

    dtype: GraphDtype
    input: InputKind
    outputs: tuple[str, ...] = Field(description="graph output names, in the graph's order")
    export_seconds: float
    bytes: int
    external_data: str | None = None
    ops: tuple[str, ...]
    thresholds: Thresholds
    summary: Summary
    checks: tuple[dict[str, Any], ...]


class ExportRecord(_Record):
    """``export.json``: how and from what the graphs were made, and how close each is to PyTorch."""

    format: Literal["jepa-export"] = "jepa-export"
    format_version: Literal[2] = 2
    created: str
    model: str
    source: str
    image_size: int
    num_patches: int
    embed_dim: int
    exporter: str
    opset: int
    relative_error: str
    versions: dict[str, str]
    verification_images: dict[str, Any]
    graphs: dict[str, GraphRecord]
    triton: str | None = None

    def write(self, directory: Path) -> Path:
        path = Path(directory) / RECORD_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def verified_cosine(self, graph: str) -> float | None:
        """Mean global-embedding cosine of ``graph`` to fp32 on photos, when export recorded it."""
        entry = self.graphs.get(graph)
        return None if entry is None else entry.summary.photos_global_cos_mean


def read_record(directory: str | Path) -> ExportRecord | None:
    """``export.json`` of a model directory; ``None`` when there is none. Raises
    :class:`~jepa.errors.CheckpointError` naming the file when it exists but does not parse (an
    older format included: re-export with ``python -m export``)."""
    return _read_json_record(Path(directory) / RECORD_FILE, ExportRecord, "jepa-export record of format_version 2",
                             "; re-export the model")  # fmt: skip


R = TypeVar("R", bound=BaseModel)


def _read_json_record(path: Path, model: type[R], what: str, hint: str = "") -> R | None:
    """``model`` parsed from the JSON file ``path``; ``None`` when there is none, and
    :class:`~jepa.errors.CheckpointError` naming the file when it exists but does not parse."""
    if not path.is_file():
        return None
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as e:
        raise CheckpointError(path, f"not a {what} ({e}){hint}") from e


# -- the engine trial (service/engine_trial.py): which CPU engine serves this model fastest here --
ENGINES_FILE = "engines.json"
EngineName = Literal["onnxruntime", "openvino"]


class EngineRun(_Record):
    """One engine run as the service would run it, timed on the machine the record names."""

    engine: EngineName
    graph: str
    precision: str = Field(description="what it computes in: the graph's dtype, or OpenVINO's inference precision")
    workers: int = Field(description="batches run at once (threads calling the backend)")
    threads: int = Field(description="intra-op threads in all")
    images_s: dict[int, float] = Field(description="batch size -> images/s, median over rounds")
    rounds: dict[int, tuple[float, ...]] = Field(default_factory=dict, description="batch size -> each round's")


class EnginesRecord(_Record):
    """``engines.json``: OpenVINO checked on photos against the fp32 graph and timed against the
    ONNX Runtime graph the service would otherwise serve, on one machine (``isa``, ``cpus``)."""

    format: Literal["jepa-engines"] = "jepa-engines"
    format_version: Literal[1] = 1
    created: str
    isa: dict[str, Any] = Field(description="the CPU's ISA (service.cpu_features.CpuIsa.as_dict)")
    cpus: int = Field(description="the thread budget the engines were timed with")
    versions: dict[str, str]
    photos: str = Field(description="where the check's photos came from (jepa.photos)")
    reference: str = Field(description="what the cosines compare against")
    cosine_min: dict[str, float] = Field(description="OpenVINO's least cosine to the reference, by output")
    baseline: EngineRun
    openvino: EngineRun

    def write(self, directory: Path) -> Path:
        path = Path(directory) / ENGINES_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def read_engines(directory: str | Path) -> EnginesRecord | None:
    """``engines.json`` of a model directory; ``None`` when there is none. Raises
    :class:`~jepa.errors.CheckpointError` naming the file when it exists but does not parse."""
    return _read_json_record(Path(directory) / ENGINES_FILE, EnginesRecord, "jepa-engines record of format_version 1")
