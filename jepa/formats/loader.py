"""Reading official checkpoints and HF directories, and the one strict load every format ends in.

The key mapping lives in :mod:`~jepa.formats.meta` and :mod:`~jepa.formats.hf`; this module
does the I/O around them and turns every failure into a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from jepa.config import ModelConfig, Preprocess, Provenance, vjepa2_preprocess
from jepa.errors import CheckpointError, ConfigError
from jepa.formats import _read_json_object, hf, meta, native, shards, vjepa2
from jepa.vit import Encoder
from jepa.vjepa2 import VideoEncoder


def build_and_load(config: ModelConfig, state: Mapping[str, Any], path: str | Path) -> Encoder | VideoEncoder:
    """Create the encoder for ``config`` and load ``state`` strictly, or raise naming the mismatch.

    Everything is checked before any tensor is assigned, so a failure returns nothing.
    """
    with torch.device("meta"):
        model = VideoEncoder(config) if config.family == "vjepa2" else Encoder(config)
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
    # Copies, so the model owns its memory (not the caller's tensors, nor an mmap of the checkpoint file).
    owned = {k: v.to(torch.float32, copy=True).contiguous() for k, v in state.items()}
    model.load_state_dict(owned, strict=True, assign=True)
    return model.eval()


def _read_safetensors(path: Path) -> tuple[Path, str, dict[str, torch.Tensor]]:
    """``(file to name in errors, weights sha256, tensors)`` of a Hugging Face directory, from
    ``model.safetensors`` or from the shards its index names (:mod:`jepa.formats.shards`)."""
    files, expected = shards.locate(path)
    state: dict[str, torch.Tensor] = {}
    for weights in files:
        try:
            part = load_file(weights)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(weights, f"unreadable safetensors file: {e}") from e
        if expected is not None:
            stray = sorted(k for k in part if expected.get(k) != weights.name)
            if stray:
                raise CheckpointError(weights, f"holds tensors the index puts elsewhere or not at all: {stray[:5]}")
        state.update(part)
    if expected is not None and (missing := sorted(set(expected) - set(state))):
        raise CheckpointError(path / shards.INDEX_FILE, f"tensors named by the index are in no shard: {missing[:5]}")
    named = files[0] if expected is None else path / shards.INDEX_FILE
    return named, shards.weights_sha256(files), state


def read_hf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and state dict (our names) of a Hugging Face ``IJepaModel`` or ``VJEPA2Model`` directory."""
    hf_config = _read_json_object(path / "config.json")
    if hf_config.get("model_type") == "vjepa2":
        return read_hf_vjepa2(path, hf_config)
    weights, digest, raw = _read_safetensors(path)
    try:
        state = hf.convert_hf(raw)
    except (ConfigError, RuntimeError) as e:  # RuntimeError: q/k/v of different shapes cannot be fused
        raise CheckpointError(weights, str(e).splitlines()[0]) from e
    pos = state.get("pos_embed")
    positions = pos.shape[1] if isinstance(pos, torch.Tensor) and pos.ndim == 3 else None
    try:
        arch = hf.architecture_from_hf(hf_config, positions)
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(path / "config.json", f"unsupported Hugging Face config: {e}") from e
    processor_path = path / "preprocessor_config.json"
    try:
        processor = _read_json_object(processor_path) if processor_path.is_file() else None
        preprocess = hf.preprocess_from_hf(processor, arch.image_size)
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(processor_path, f"unsupported preprocessing: {e}") from e
    provenance = Provenance(source=f"hf:{path}", weights_sha256=digest)
    return ModelConfig(name=path.name, architecture=arch, preprocess=preprocess, provenance=provenance), state


def read_hf_vjepa2(path: Path, hf_config: dict[str, Any]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and encoder state dict (our names) of a Hugging Face ``VJEPA2Model`` directory.

    Preprocessing is V-JEPA 2's evaluation transform at the config's ``crop_size`` (what
    ``VJEPA2VideoProcessor`` derives from it too), so processor files are not needed.
    """
    weights, digest, raw = _read_safetensors(path)
    try:
        state = vjepa2.convert_hf(raw)
    except (ConfigError, RuntimeError) as e:
        raise CheckpointError(weights, str(e).splitlines()[0]) from e
    try:
        arch, temporal = vjepa2.architecture_from_hf(hf_config)
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(path / "config.json", f"unsupported Hugging Face config: {e}") from e
    provenance = Provenance(source=f"hf:{path}", weights_sha256=digest)
    config = ModelConfig(
        name=path.name,
        family="vjepa2",
        architecture=arch,
        temporal=temporal,
        preprocess=vjepa2_preprocess(arch.image_size),
        provenance=provenance,
    )
    return config, state


def _pick_encoder(path: Path, checkpoint: Any, which: str) -> Mapping[str, Any]:
    if not meta.looks_like_meta(checkpoint):
        found = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(path, f"not a JEPA checkpoint: expected 'target_encoder' or 'encoder', found {found}")
    if which not in checkpoint:
        raise CheckpointError(path, f"checkpoint has no {which!r} entry (has: {sorted(map(str, checkpoint))})")
    if not isinstance(checkpoint[which], Mapping):
        raise CheckpointError(path, f"{which!r} is a {type(checkpoint[which]).__name__}, not a state dict")
    return checkpoint[which]


def read_meta(
    path: Path, which: str, num_heads: int | None, image_size: int | None = None
) -> tuple[ModelConfig, dict[str, Any]]:
    """Config and state dict of one encoder (``target_encoder`` or ``encoder``) of an official checkpoint.

    I-JEPA (``.pth.tar``, ``module.`` keys, 4-D patch kernel) or V-JEPA 2 (``.pt``,
    ``module.backbone.`` keys, 5-D tubelet kernel): the kernel's rank decides.
    """
    raw = _pick_encoder(path, _torch_load(path), which)
    if vjepa2.is_vjepa2_state(vjepa2.convert_meta(raw)):
        return _read_meta_vjepa2(path, which, raw, num_heads, image_size)
    state = meta.convert_meta(raw)
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


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, any failure as a CheckpointError.

    Unpickling arbitrary bytes fails in many ways (UnpicklingError, KeyError, EOFError, OSError,
    RuntimeError, UnicodeDecodeError, struct.error, ... all seen on truncated or random files), so
    every exception is turned into one error that names the file and keeps the cause.
    """
    try:
        # mmap keeps the optimizer state of multi-GB checkpoints on disk; only zip files support it.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        text = " ".join(str(e).split())
        # torch's weights-only refusal is a long text; its "Unsupported ..." part says what was refused.
        reason = text[text.index("Unsupported") :] if "Unsupported" in text else text
        reason = reason.split(". ")[0].split(" Check the documentation")[0][:160]
        problem = "not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)"
        raise CheckpointError(path, f"{problem}: {type(e).__name__}: {reason}") from e


def _read_meta_vjepa2(
    path: Path, which: str, raw: Mapping[str, Any], num_heads: int | None, image_size: int | None
) -> tuple[ModelConfig, dict[str, Any]]:
    state = vjepa2.convert_meta(raw)
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(path, f"{which}: entries that are not tensors: {', '.join(not_tensors[:5])}")
    try:
        arch, temporal = vjepa2.infer_architecture(state, num_heads, image_size or 256)
    except (ConfigError, ValueError) as e:
        raise CheckpointError(path, f"{which}: {e}") from e
    config = ModelConfig(
        name=path.name.removesuffix(".pt").removesuffix(".pth"),
        family="vjepa2",
        architecture=arch,
        temporal=temporal,
        preprocess=vjepa2_preprocess(arch.image_size),
        provenance=Provenance(source=f"meta:{path}:{which}", weights_sha256=native.sha256_file(path)),
    )
    return config, state
