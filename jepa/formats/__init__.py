"""Model sources: detect which format a path holds and load it as an :class:`~jepa.vit.Encoder`.

Three formats, each a pure key-mapping function in its own module (no I/O there):
``native`` (our directory), ``meta`` (official ``.pth.tar``), ``hf`` (``IJepaModel`` directory).
Every failure raises :class:`~jepa.errors.CheckpointError` naming the path and the problem; a
model is either loaded completely or not returned at all.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch

from jepa.config import ModelConfig, Preprocess, Provenance
from jepa.errors import CheckpointError, ConfigError
from jepa.formats import hf, meta, native
from jepa.vit import Encoder

Format = Literal["native", "meta", "hf"]
EncoderChoice = Literal["target_encoder", "encoder"]


def detect_format(source: str | Path) -> Format:
    """Name the format of ``source`` or raise, saying what was found there."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if path.is_dir():
        if native.is_model_dir(path):
            return "native"
        config = _read_json(path / "config.json") if (path / "config.json").is_file() else None
        if config is not None and config.get("model_type") == "ijepa":
            return "hf"
        found = sorted(p.name for p in path.iterdir())[:10]
        raise CheckpointError(
            path,
            f"directory is neither a jepa model directory nor a Hugging Face IJepa one "
            f"(found: {', '.join(found) or 'nothing'})",
        )
    return "meta"


def load(
    source: str | Path,
    *,
    encoder: EncoderChoice = "target_encoder",
    num_heads: int | None = None,
    verify: bool = True,
) -> Encoder:
    """Load any supported source as an Encoder (CPU, float32, eval mode)."""
    path = Path(source)
    fmt = detect_format(path)
    if fmt == "native":
        config, state = native.read_weights(path, verify=verify)
    elif fmt == "hf":
        config, state = _read_hf(path)
    else:
        config, state = _read_meta(path, encoder, num_heads)
    return build_and_load(config, state, path)


def build_and_load(config: ModelConfig, state: dict[str, torch.Tensor], path: str | Path) -> Encoder:
    """Create the encoder for ``config`` and load ``state`` strictly, or raise naming the mismatch."""
    with torch.device("meta"):
        model = Encoder(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(path, "tensors do not match the architecture", missing, unexpected)
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {shape}"
        for k, shape in expected.items()
        if tuple(state[k].shape) != shape
    ]
    if wrong:
        raise CheckpointError(path, "shape mismatch: " + "; ".join(wrong[:5]))
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"unreadable JSON: {e}") from e


def _read_hf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(path, "Hugging Face directory has no model.safetensors")
    try:
        state = hf.convert_hf(load_file(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(weights, f"unreadable safetensors file: {e}") from e
    except ConfigError as e:
        raise CheckpointError(weights, str(e)) from e
    processor_path = path / "preprocessor_config.json"
    processor = _read_json(processor_path) if processor_path.is_file() else None
    pos = state.get("pos_embed")
    try:
        arch = hf.architecture_from_hf(_read_json(path / "config.json"), None if pos is None else pos.shape[1])
        preprocess = hf.preprocess_from_hf(processor)
    except (ConfigError, ValueError, KeyError) as e:
        raise CheckpointError(path, f"unsupported Hugging Face config: {e}") from e
    provenance = Provenance(source=f"hf:{path}", weights_sha256=native.sha256_file(weights))
    return ModelConfig(name=path.name, architecture=arch, preprocess=preprocess, provenance=provenance), state


def _read_meta(path: Path, which: EncoderChoice, num_heads: int | None) -> tuple[ModelConfig, dict[str, Any]]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not meta.looks_like_meta(checkpoint):
        keys = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(path, f"not an I-JEPA checkpoint: expected 'target_encoder' or 'encoder', found {keys}")
    if which not in checkpoint:
        raise CheckpointError(path, f"checkpoint has no {which!r} entry (has: {sorted(checkpoint)})")
    state = meta.convert_meta(checkpoint[which])
    try:
        arch = meta.infer_architecture(state, num_heads)
    except (ConfigError, ValueError) as e:
        raise CheckpointError(path, str(e)) from e
    preprocess = Preprocess(resize="shorter_crop", resize_size=round(arch.image_size * 256 / 224))
    provenance = Provenance(source=f"meta:{path}", training_run=which, weights_sha256=native.sha256_file(path))
    name = path.name.removesuffix(".tar").removesuffix(".pth")
    return ModelConfig(name=name, architecture=arch, preprocess=preprocess, provenance=provenance), state
