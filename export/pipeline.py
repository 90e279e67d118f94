"""The export run behind the CLI: load, save our model directory, export each graph, verify, publish.

Everything is written into a staging directory inside ``--out`` and moved into place only after
every graph passed its check, so a failed export never leaves a graph that looks like a success.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from export.contract import EXPORTER
from export.onnx import export_onnx, graph_ops
from export.options import ExportOptions
from export.quantize import quantize_int8
from export.verify import check_graph_against_torch, enforce, summarise
from jepa.contract import GRAPH_FILES, GRAPH_OUTPUT_NAMES, ExportRecord, GraphRecord
from jepa.photos import Photos, load_photos
from jepa.vit import Encoder


class OutputError(OSError):
    """The output directory cannot be created or written."""


@dataclass(frozen=True)
class GraphSpec:
    """One graph to produce: its file (a :data:`~jepa.contract.GRAPH_FILES` name, which says its
    dtype and input), how to make it, and the threshold it must meet."""

    file: str
    make: Callable[[Path], Path]
    max_rel: float | None = None
    min_cos: float | None = None

    @property
    def uint8_input(self) -> bool:
        return GRAPH_FILES[self.file].input == "uint8"


def ensure_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written there, or raise :class:`OutputError`."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to output directory {out}: {e.strerror or e}") from e


def graph_specs(encoder: Encoder, opts: ExportOptions, staging: Path) -> list[GraphSpec]:
    """The graphs this run makes, in order (the int8 graph is quantised from the fp32 one)."""
    fp32 = staging / "model.onnx"
    big = sum(p.numel() * 4 for p in encoder.parameters()) > opts.external_data_threshold

    def onnx_maker(**kw) -> Callable[[Path], Path]:
        return lambda path: export_onnx(
            encoder, path, opts.opset, external_data_threshold=opts.external_data_threshold, **kw
        )

    specs = [GraphSpec("model.onnx", onnx_maker(), max_rel=opts.fp32_max_rel)]
    if opts.fp16:
        specs.append(GraphSpec("model.fp16.onnx", onnx_maker(dtype="float16"), max_rel=opts.fp16_max_rel))
    if opts.int8:  # ONNX Runtime's dynamic quantisation of the fp32 graph (export/quantize.py)
        int8 = GraphSpec(
            "model.int8.onnx", lambda path: quantize_int8(fp32, path, external_data=big), min_cos=opts.int8_min_cos
        )
        specs.append(int8)
    if opts.uint8_input:
        specs.append(GraphSpec("model.uint8.onnx", onnx_maker(uint8_input=True), max_rel=opts.fp32_max_rel))
    return specs


def produce(encoder: Encoder, spec: GraphSpec, staging: Path, photos: Photos) -> GraphRecord:
    """Make one graph, verify it, and return its export.json entry; raises when it fails its threshold."""
    path = staging / spec.file
    start = time.perf_counter()
    spec.make(path)
    seconds = time.perf_counter() - start
    records = check_graph_against_torch(encoder, path, photos, uint8_input=spec.uint8_input)
    summary = summarise(records)
    enforce(path, summary, max_rel=spec.max_rel, min_cos=spec.min_cos)
    data = path.with_name(path.name + ".data")
    graph = GRAPH_FILES[spec.file]
    return GraphRecord(
        dtype=graph.dtype,
        input=graph.input,
        outputs=GRAPH_OUTPUT_NAMES,
        export_seconds=round(seconds, 2),
        bytes=path.stat().st_size + (data.stat().st_size if data.is_file() else 0),
        external_data=data.name if data.is_file() else None,
        ops=tuple(sorted(graph_ops(path))),
        thresholds={"max_rel": spec.max_rel, "min_photos_global_cos": spec.min_cos},
        summary=summary,
        checks=tuple(records),
    )


def versions() -> dict[str, str]:
    names = ("torch", "onnx", "onnxruntime", "onnxscript")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def publish(staging: Path, out: Path, written: list[str]) -> None:
    """Move the staged files into ``out``; drop graphs of an earlier export that this run did not make."""
    for name in GRAPH_FILES:
        if name not in written:
            for stale in (out / name, out / f"{name}.data"):
                stale.unlink(missing_ok=True)
    for item in sorted(staging.iterdir()):
        os.replace(item, out / item.name)


def report_header(encoder: Encoder, opts: ExportOptions, photos: Photos) -> dict:
    """The record's fields that describe the run rather than one graph."""
    config = encoder.config
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": config.name,
        "source": str(opts.source),
        "image_size": config.image_size,
        "num_patches": math.prod(config.token_grid),  # a video model: T' x H' x W' tokens per clip
        "embed_dim": config.embed_dim,
        "exporter": EXPORTER,
        "opset": opts.opset,
        "relative_error": "max |onnx - torch| / max |torch| per output; reference is the fp32 PyTorch encoder",
        "versions": versions(),
        "verification_images": {"source": photos.source, "names": list(photos.names)},
    }


def run_export(encoder: Encoder, opts: ExportOptions, step: Callable[[str], None] = lambda _: None) -> ExportRecord:
    """Export, verify and publish; returns what export.json holds. ``step`` reports progress."""
    from jepa import save_model_dir

    ensure_writable(opts.out)
    photos = load_photos(encoder.config, opts.images)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=opts.out))
    try:
        step("save model directory")
        save_model_dir(encoder, staging)
        graphs: dict[str, GraphRecord] = {}
        for spec in graph_specs(encoder, opts, staging):
            step(f"export + verify {spec.file}")
            graphs[spec.file] = produce(encoder, spec, staging, photos)
        triton = None
        if opts.triton is not None:
            from export.triton import write_triton_repo

            step("write Triton repository")
            repo = write_triton_repo(opts.triton, staging / "model.onnx", encoder.config.name, opts.triton_max_batch)
            triton = str(repo)
        record = ExportRecord(**report_header(encoder, opts, photos), graphs=graphs, triton=triton)
        record.write(staging)
        publish(staging, opts.out, list(graphs))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record
