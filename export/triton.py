"""A Triton Inference Server model repository from an exported graph.

Layout: ``REPO/NAME/config.pbtxt`` + ``REPO/NAME/1/model.onnx`` (plus its external data file, if
any). Names, dims and types in the config are read from the graph itself, so the two cannot
disagree; the batch axis is left out of ``dims`` because ``max_batch_size > 0`` implies it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

# ONNX TensorProto element types -> Triton's DataType enum names.
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 10: "TYPE_FP16", 7: "TYPE_INT64"}


class TritonError(ValueError):
    """The graph cannot be described to Triton (unknown dtype, non-batch dynamic axis, bad name)."""


def model_name(name: str) -> str:
    """A directory- and URL-safe Triton model name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not safe:
        raise TritonError(f"cannot make a Triton model name from {name!r}")
    return safe


def _tensor_entries(values, kind: str) -> list[str]:  # values: onnx ValueInfoProto sequence
    entries = []
    for value in values:
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_TYPES:
            raise TritonError(f"{kind} {value.name!r} has ONNX element type {tensor.elem_type}, not supported")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim][1:]
        if any(d <= 0 for d in dims):
            raise TritonError(f"{kind} {value.name!r} has a dynamic non-batch axis {dims}")
        entries.append(
            f'  {{\n    name: "{value.name}"\n    data_type: {TRITON_TYPES[tensor.elem_type]}\n'
            f"    dims: [ {', '.join(map(str, dims))} ]\n  }}"
        )
    return entries


def config_pbtxt(graph: Path, name: str, max_batch_size: int = 32, max_queue_delay_us: int = 1000) -> str:
    """The text-format ``ModelConfig`` for ``graph``, with dynamic batching on."""
    import onnx

    if max_batch_size < 1:
        raise TritonError(f"max_batch_size must be >= 1, got {max_batch_size}")
    model = onnx.load(str(graph), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    preferred = sorted({b for b in (1, 4, 8, 16, 32, max_batch_size) if b <= max_batch_size})
    input_text = ",\n".join(_tensor_entries(inputs, "input"))
    output_text = ",\n".join(_tensor_entries(model.graph.output, "output"))
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{input_text}\n]\noutput [\n{output_text}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
    )


def write_triton_repo(repo: str | Path, graph: Path, name: str, max_batch_size: int = 32) -> Path:
    """Write ``repo/name`` (config and version 1 of the graph); returns the model's directory.

    Built in a temporary directory inside ``repo`` and renamed into place, replacing an older one.
    """
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    name = model_name(name)
    text = config_pbtxt(graph, name, max_batch_size)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    staging.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
    try:
        (staging / "1").mkdir()
        (staging / "config.pbtxt").write_text(text)
        shutil.copy2(graph, staging / "1" / "model.onnx")
        data = graph.with_name(graph.name + ".data")
        if data.is_file():
            shutil.copy2(data, staging / "1" / data.name)
        target = repo / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return repo / name
