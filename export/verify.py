"""Verify an exported graph against the PyTorch encoder: random inputs and real photos, batch 1 and 7.

The reference is always the float32 PyTorch encoder. Errors per output: max absolute error,
relative error (max absolute error / max |reference|, so it is scale-free and stays finite where
single elements are near zero) and the cosine similarity of each row (mean and min).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from jepa.contract import GRAPH_OUTPUT_NAMES, INPUT_NAME, OUTPUTS, UINT8_INPUT_NAME
from jepa.heads import embed_tensors
from jepa.photos import Photos, panning_clips
from jepa.preprocess import normalize
from jepa.video_preprocess import normalize_clips
from jepa.vit import Encoder

BATCH_SIZES = (1, 7)


class VerificationError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond its threshold; the message holds the numbers."""


def compare(reference: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Max absolute, relative (to max |reference|) error and row-wise cosine of two ``[B, ..., D]`` arrays."""
    ref = reference.astype(np.float64).reshape(-1, reference.shape[-1])
    got = actual.astype(np.float64).reshape(-1, actual.shape[-1])
    diff = float(np.abs(ref - got).max())
    cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-30)
    return {
        "max_abs": diff,
        "rel": diff / max(float(np.abs(ref).max()), 1e-30),
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
    }


@torch.inference_mode()
def torch_reference(encoder: Encoder, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the fp32 encoder, by graph output name."""
    result = embed_tensors(encoder, torch.from_numpy(pixel_values).float(), frozenset(OUTPUTS))
    return {name: result.get(o).numpy() for o, name in zip(OUTPUTS, GRAPH_OUTPUT_NAMES, strict=True)}  # type: ignore[union-attr]


def check_graph_against_torch(
    encoder: Encoder, graph: Path, photos: Photos, *, uint8_input: bool = False, seed: int = 0
) -> list[dict]:
    """Run ``graph`` in ONNX Runtime (CPU) and the fp32 encoder on the same inputs; one record per case."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    config = encoder.config
    rng = np.random.default_rng(seed)
    frames = config.temporal.frames_per_clip if config.temporal is not None else None
    records = []
    for kind in ("random", "photos"):
        for batch in BATCH_SIZES:
            if kind == "photos":
                pixels = photos.pixels[:batch] if frames is None else panning_clips(photos.pixels[:batch], frames)
            else:
                pixels = rng.integers(0, 256, (batch, *config.pixel_shape), dtype=np.uint8)
            normalised = (normalize if frames is None else normalize_clips)(pixels, config.preprocess)
            if kind == "random" and not uint8_input:
                normalised = rng.standard_normal(normalised.shape).astype(np.float32)
            feed = {UINT8_INPUT_NAME: pixels} if uint8_input else {INPUT_NAME: normalised}
            outputs = session.run(list(GRAPH_OUTPUT_NAMES), feed)
            references = torch_reference(encoder, normalised)
            record = {"inputs": kind, "batch": batch}
            for name, got in zip(GRAPH_OUTPUT_NAMES, outputs, strict=True):
                ref = references[name]
                if got.shape != ref.shape:
                    raise VerificationError(f"{graph.name}: {name} has shape {got.shape}, PyTorch gives {ref.shape}")
                record[name] = compare(ref, got)
            records.append(record)
    return records


def summarise(records: list[dict]) -> dict[str, float]:
    """Worst case over all records, and the mean global-embedding cosine on photos."""
    cells = [r[name] for r in records for name in GRAPH_OUTPUT_NAMES]
    photo_cos = [r["global_embedding"]["cos_mean"] for r in records if r["inputs"] == "photos"]
    return {
        "max_abs": max(c["max_abs"] for c in cells),
        "max_rel": max(c["rel"] for c in cells),
        "min_cos": min(c["cos_min"] for c in cells),
        "photos_global_cos_mean": float(np.mean(photo_cos)),
    }


def enforce(graph: Path, summary: dict[str, float], *, max_rel: float | None, min_cos: float | None) -> None:
    """Raise :class:`VerificationError` with the measured numbers when a threshold is exceeded."""
    numbers = (
        f"max abs {summary['max_abs']:.3g}, max rel {summary['max_rel']:.3g}, "
        f"min cos {summary['min_cos']:.6f}, mean global cos on photos {summary['photos_global_cos_mean']:.6f}"
    )
    if not all(math.isfinite(v) for v in summary.values()):
        raise VerificationError(f"{graph.name}: non-finite outputs or errors (overflow in the graph?) ({numbers})")
    if max_rel is not None and summary["max_rel"] > max_rel:
        raise VerificationError(f"{graph.name}: relative error {summary['max_rel']:.3g} > {max_rel:g} ({numbers})")
    if min_cos is not None and summary["photos_global_cos_mean"] < min_cos:
        cos = summary["photos_global_cos_mean"]
        raise VerificationError(f"{graph.name}: mean cosine to fp32 on photos {cos:.6f} < {min_cos:g} ({numbers})")
