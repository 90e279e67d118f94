"""Batch results -> the response body, in the encoding the request and ``Accept`` ask for.

- JSON (default): ``{"model", "dim", "grid", "dtype", "data": [{"index", "embedding"?, "patch_embeddings"?,
  "multilayer_embedding"?}]}`` with float lists (orjson writes numpy arrays directly) or base64 of
  little-endian raw arrays. Keys are :data:`jepa.contract.OUTPUT_SPECS`' ``field`` names.
- ``Accept: application/vnd.safetensors``: tensors ``embedding [B, D]``, ``patch_embeddings
  [B, N, D]`` and ``multilayer_embedding [B, L*D]`` (those asked for), metadata ``model``, ``dim``,
  ``grid`` ("gh,gw").
- ``Accept: application/x-npz``: the same arrays in a NumPy ``.npz`` (``np.load`` gives a dict).
- ``Accept: application/x-npy``: one ``.npy`` array, ``embedding [B, D]``, so only for
  ``outputs=global``; asking for patches with it is a 406 pointing at the two formats above.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import orjson

from jepa.contract import OUTPUT_SPECS, OUTPUTS
from service.accept import choose
from service.errors import NotAcceptable
from service.image_queue import Result
from service.schemas import EmbedOptions

JSON_TYPE, NPY_TYPE = "application/json", "application/x-npy"
BINARY_TYPES = {
    "application/vnd.safetensors": "safetensors",
    "application/x-npz": "npz",
    "application/x-npy": "npy",
}


@dataclass(frozen=True)
class ModelFacts:
    name: str
    dim: int
    grid: tuple[int, ...]  # (H', W'), or a video model's (T', H', W')
    multilayer_dim: int


def negotiate(accept: str | None, options: EmbedOptions) -> str:
    """``json``, ``safetensors``, ``npz`` or ``npy`` for the ``Accept`` header (RFC 9110:
    weights, wildcards, the most specific range; :mod:`service.accept`); 406 when none fits."""
    one_array = options.outputs == ("global",)  # .npy holds one array: the embedding
    offers = [JSON_TYPE, *(t for t, kind in BINARY_TYPES.items() if one_array or kind != "npy")]
    chosen = choose(accept, offers)
    if chosen is not None:
        return BINARY_TYPES.get(chosen, "json")
    if not one_array and choose(accept, [*offers, NPY_TYPE]) == NPY_TYPE:
        raise NotAcceptable(
            "application/x-npy holds one array (embedding); for other outputs use application/x-npz "
            "or application/vnd.safetensors"
        )
    shown = (accept or "")[:200]
    raise NotAcceptable(f"Accept: {shown} allows none of the response types: {', '.join(offers)}")


def gather_arrays(results: list[Result], options: EmbedOptions) -> dict[str, np.ndarray]:
    """Per-image results -> ``{"embedding": [B, D], "patch_embeddings": [B, N, D], ...}`` as asked,
    in the contract's order. ``normalize`` L2-normalises the global embedding only."""
    dtype = np.dtype("<f2" if options.dtype == "float16" else "<f4")
    arrays: dict[str, np.ndarray] = {}
    for output in OUTPUTS:
        if output not in options.outputs:
            continue
        stacked = np.stack([r.get(output) for r in results])  # type: ignore[arg-type]
        if output == "global" and options.normalize:
            stacked = stacked / np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        arrays[OUTPUT_SPECS[output].field] = np.ascontiguousarray(stacked, dtype=dtype)
    return arrays


def encode(kind: str, arrays: dict[str, np.ndarray], facts: ModelFacts, options: EmbedOptions) -> tuple[bytes, str]:
    """``(body, media type)``."""
    if kind == "safetensors":
        from safetensors.numpy import save

        meta = {"model": facts.name, "dim": str(facts.dim), "grid": ",".join(map(str, facts.grid))}
        return save(arrays, metadata=meta), "application/vnd.safetensors"
    if kind == "npz":
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue(), "application/x-npz"
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, arrays["embedding"])
        return buf.getvalue(), "application/x-npy"
    return encode_json(arrays, facts, options), "application/json"


def encode_results(kind: str, results: list[Result], facts: ModelFacts, options: EmbedOptions) -> tuple[bytes, str]:
    """Per-image results -> ``(body, media type)``; CPU work, run in the pool."""
    arrays = gather_arrays(results, options)
    if len(facts.grid) == 3 and "patch_embeddings" in arrays:  # a clip's tokens as [T', H', W', D]
        patches = arrays["patch_embeddings"]
        arrays["patch_embeddings"] = patches.reshape(len(patches), *facts.grid, patches.shape[-1])
    return encode(kind, arrays, facts, options)


def encode_json(arrays: dict[str, np.ndarray], facts: ModelFacts, options: EmbedOptions) -> bytes:
    names = list(arrays)
    count = len(next(iter(arrays.values())))
    data = []
    for i in range(count):
        item: dict[str, object] = {"index": i}
        for name in names:
            row = arrays[name][i]
            if options.encoding == "base64":
                item[name] = base64.b64encode(row.tobytes()).decode("ascii")
            else:
                item[name] = row if row.dtype == np.float32 else row.astype(np.float32)
        data.append(item)
    body = {"model": facts.name, "dim": facts.dim, "grid": list(facts.grid), "dtype": options.dtype, "data": data}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
