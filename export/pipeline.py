"""The export run behind the CLI: load, save our model directory, export each graph, verify, publish.

Everything is written into a staging directory inside ``--out`` and moved into place only after
every graph passed its check, so a failed export never leaves a graph that looks like a success.
"""

from __future__ import annotations

import json
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
from export.verify import Photos, check_graph_against_torch, enforce, load_photos, summarise
from jepa.vit import Encoder

GRAPH_FILES = ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.uint8.onnx")
REPORT_NAME = "export.json"


class OutputError(OSError):
    """The output directory cannot be created or written."""


@dataclass(frozen=True)
class GraphSpec:
    """One graph to produce: its file, how to make it, and the threshold it must meet."""

    file: str
    dtype: str
    make: Callable[[Path], Path]
    uint8_input: bool = False
    max_rel: float | None = None
    min_cos: float | None = None


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

    specs = [GraphSpec("model.onnx", "float32", onnx_maker(), max_rel=opts.fp32_max_rel)]
    if opts.fp16:
        specs.append(GraphSpec("model.fp16.onnx", "float16", onnx_maker(dtype="float16"), max_rel=opts.fp16_max_rel))
    if opts.int8:
        specs.append(
            GraphSpec(
                "model.int8.onnx",
                "int8-dynamic",
                lambda path: quantize_int8(fp32, path, external_data=big),
                min_cos=opts.int8_min_cos,
            )
        )
    if opts.uint8_input:
        specs.append(
            GraphSpec(
                "model.uint8.onnx", "float32", onnx_maker(uint8_input=True), uint8_input=True, max_rel=opts.fp32_max_rel
            )
        )
    return specs


def produce(encoder: Encoder, spec: GraphSpec, staging: Path, photos: Photos) -> dict:
    """Make one graph, verify it, and return its export.json entry; raises when it fails its threshold."""
    path = staging / spec.file
    start = time.perf_counter()
    spec.make(path)
    seconds = time.perf_counter() - start
    records = check_graph_against_torch(encoder, path, photos, uint8_input=spec.uint8_input)
    summary = summarise(records)
    enforce(path, summary, max_rel=spec.max_rel, min_cos=spec.min_cos)
    data = path.with_name(path.name + ".data")
    return {
        "dtype": spec.dtype,
        "input": graph_input(encoder, spec.uint8_input),
        "export_seconds": round(seconds, 2),
        "bytes": path.stat().st_size + (data.stat().st_size if data.is_file() else 0),
        "external_data": data.name if data.is_file() else None,
        "ops": sorted(graph_ops(path)),
        "thresholds": {"max_rel": spec.max_rel, "min_photos_global_cos": spec.min_cos},
        "summary": summary,
        "checks": records,
    }


def graph_input(encoder: Encoder, uint8_input: bool) -> str:
    """The graph's input as export.json describes it (clips of ``frames_per_clip`` for video models)."""
    temporal = encoder.config.temporal
    lead = "batch" if temporal is None else f"batch,{temporal.frames_per_clip}"
    return f"images uint8 [{lead},S,S,3]" if uint8_input else f"pixel_values float32 [{lead},3,S,S]"


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
    config = encoder.config
    return {
        "format": "jepa-export",
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": config.name,
        "source": str(opts.source),
        "image_size": config.image_size,
        "num_patches": num_tokens(encoder),
        "embed_dim": config.embed_dim,
        "exporter": EXPORTER,
        "opset": opts.opset,
        "relative_error": "max |onnx - torch| / max |torch| per output; reference is the fp32 PyTorch encoder",
        "versions": versions(),
        "verification_images": {"source": photos.source, "names": list(photos.names)},
    }


def num_tokens(encoder: Encoder) -> int:
    """Tokens per input: the patch grid, times the clip's tubelets for a video model."""
    temporal = encoder.config.temporal
    if temporal is None:
        return encoder.config.architecture.num_patches
    return temporal.frames_per_clip // temporal.tubelet_size * encoder.config.architecture.num_patches


def run_export(encoder: Encoder, opts: ExportOptions, step: Callable[[str], None] = lambda _: None) -> dict:
    """Export, verify and publish; returns the export.json content. ``step`` reports progress."""
    from jepa import save_model_dir

    ensure_writable(opts.out)
    photos = load_photos(encoder.config, opts.images)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=opts.out))
    try:
        step("save model directory")
        save_model_dir(encoder, staging)
        report = {**report_header(encoder, opts, photos), "graphs": {}}
        for spec in graph_specs(encoder, opts, staging):
            step(f"export + verify {spec.file}")
            report["graphs"][spec.file] = produce(encoder, spec, staging, photos)
        if opts.triton is not None:
            from export.triton import write_triton_repo

            step("write Triton repository")
            repo = write_triton_repo(opts.triton, staging / "model.onnx", encoder.config.name, opts.triton_max_batch)
            report["triton"] = str(repo)
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        publish(staging, opts.out, list(report["graphs"]))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
