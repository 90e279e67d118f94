"""Reading official checkpoints and HF directories, and the one strict load every format ends in.

The key mapping lives in :mod:`~jepa.formats.meta` and :mod:`~jepa.formats.hf`; this module
does the I/O around them and turns every failure into a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from jepa.config import ModelConfig, Preprocess, Provenance
from jepa.errors import CheckpointError, ConfigError
from jepa.formats import _read_json_object, hf, meta, native
from jepa.vit import Encoder

# What torch.load raises on files that are not (complete) checkpoints.
_TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError)


def build_and_load(config: ModelConfig, state: Mapping[str, Any], path: str | Path) -> Encoder:
    """Create the encoder for ``config`` and load ``state`` strictly, or raise naming the mismatch.

    Everything is checked before any tensor is assigned, so a failure returns nothing.
    """
    with torch.device("meta"):
        model = Encoder(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(path, "tensors do not match the architecture", missing, unexpected)
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(path, f"entries that are not tensors: {', '.join(not_tensors[:5])}")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {s}" for k, s in expected.items() if state[k].shape != s]
    if wrong:
        raise CheckpointError(path, "shape mismatch: " + "; ".join(wrong[:5]))
    model.load_state_dict({k: v.to(torch.float32).contiguous() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def read_hf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and state dict (our names) of a Hugging Face ``IJepaModel`` directory."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(path, "Hugging Face directory has no model.safetensors")
    try:
        state = hf.convert_hf(load_file(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(weights, f"unreadable safetensors file: {e}") from e
    except ConfigError as e:
        raise CheckpointError(weights, str(e)) from e
    pos = state.get("pos_embed")
    try:
        arch = hf.architecture_from_hf(_read_json_object(path / "config.json"), None if pos is None else pos.shape[1])
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(path / "config.json", f"unsupported Hugging Face config: {e}") from e
    processor_path = path / "preprocessor_config.json"
    try:
        processor = _read_json_object(processor_path) if processor_path.is_file() else None
        preprocess = hf.preprocess_from_hf(processor, arch.image_size)
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(processor_path, f"unsupported preprocessing: {e}") from e
    provenance = Provenance(source=f"hf:{path}", weights_sha256=native.sha256_file(weights))
    return ModelConfig(name=path.name, architecture=arch, preprocess=preprocess, provenance=provenance), state


def read_meta(path: Path, which: str, num_heads: int | None) -> tuple[ModelConfig, dict[str, Any]]:
    """Config and state dict of one encoder (``target_encoder`` or ``encoder``) of an official checkpoint."""
    try:
        # mmap keeps the optimizer state of multi-GB checkpoints on disk; only zip files support it.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except _TORCH_LOAD_ERRORS as e:
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not meta.looks_like_meta(checkpoint):
        found = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(path, f"not an I-JEPA checkpoint: expected 'target_encoder' or 'encoder', found {found}")
    if which not in checkpoint:
        raise CheckpointError(path, f"checkpoint has no {which!r} entry (has: {sorted(map(str, checkpoint))})")
    if not isinstance(checkpoint[which], Mapping):
        raise CheckpointError(path, f"{which!r} is a {type(checkpoint[which]).__name__}, not a state dict")
    state = meta.convert_meta(checkpoint[which])
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(path, f"{which}: entries that are not tensors: {', '.join(not_tensors[:5])}")
    try:
        arch = meta.infer_architecture(state, num_heads)
    except (ConfigError, ValueError) as e:  # ValueError includes pydantic's ValidationError
        raise CheckpointError(path, f"{which}: {e}") from e
    preprocess = Preprocess(resize="shorter_crop", resize_size=round(arch.image_size * 256 / 224))
    provenance = Provenance(source=f"meta:{path}:{which}", weights_sha256=native.sha256_file(path))
    name = path.name.removesuffix(".tar").removesuffix(".pth")
    return ModelConfig(name=name, architecture=arch, preprocess=preprocess, provenance=provenance), state
