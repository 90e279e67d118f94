"""The JEPA core (I-JEPA images, V-JEPA 2 video and images) shared by training, export and the service.

``load_encoder`` reads any supported model source; ``build_encoder`` makes a fresh one;
``save_model_dir`` writes our directory format. Torch-dependent names are imported lazily, so
``jepa.config`` and ``jepa.preprocess`` work in the torch-free ONNX Runtime service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jepa.config import SIZES, Architecture, ModelConfig, Preprocess, Provenance, Temporal
from jepa.errors import CheckpointError, ConfigError, JepaError, ModelSourceError

if TYPE_CHECKING:
    from pathlib import Path

    from jepa.vit import Encoder
    from jepa.vjepa2 import VideoEncoder

__all__ = [
    "SIZES",
    "Architecture",
    "CheckpointError",
    "ConfigError",
    "Encoder",
    "JepaError",
    "ModelConfig",
    "ModelSourceError",
    "Preprocess",
    "Provenance",
    "Temporal",
    "VideoEncoder",
    "build_encoder",
    "build_video_encoder",
    "load_encoder",
    "save_model_dir",
]


def load_encoder(
    source: str | Path,
    *,
    encoder: str = "target_encoder",
    num_heads: int | None = None,
    device: str = "cpu",
    verify: bool = True,
    image_size: int | None = None,
) -> Encoder | VideoEncoder:
    """Load a model directory, an official ``.pth.tar``/``.pt`` or an HF ``IJepaModel``/``VJEPA2Model``
    directory, or a name for one: a catalogue short name (``python -m jepa models``), a Hugging Face
    Hub id (``org/name[@revision]``) or a checkpoint URL, downloaded first (:mod:`jepa.hub`).

    Official checkpoints give their ``target_encoder`` (what the paper evaluates) unless
    ``encoder="encoder"`` asks for the context encoder; ``num_heads`` overrides the head count
    inferred from the width; ``image_size`` is the crop of a V-JEPA 2 ``.pt`` (not recorded in it;
    default 256, use 384 for ViT-g/16-384). Returns the encoder in eval mode; ``config.provenance.source``
    names the Hub repo and commit (``hf:org/name@sha``) or the URL when the files came from one.
    """
    from jepa.formats import load
    from jepa.hub import resolve

    if encoder not in ("target_encoder", "encoder"):
        raise ValueError(f"encoder must be 'target_encoder' or 'encoder', got {encoder!r}")
    resolved = resolve(source)
    model = load(resolved.path, encoder=encoder, num_heads=num_heads, verify=verify, image_size=image_size)  # type: ignore[arg-type]
    if resolved.origin is not None:
        old = model.config.provenance.source  # meta:<path>:<encoder> keeps saying which encoder
        origin = f"meta:{resolved.origin}:{encoder}" if old.startswith("meta:") else resolved.origin
        provenance = model.config.provenance.model_copy(update={"source": origin})
        model.config = model.config.model_copy(update={"provenance": provenance})
    return model.to(device)


def build_encoder(
    size: str = "tiny",
    *,
    patch_size: int = 16,
    image_size: int = 224,
    name: str | None = None,
    preprocess: Preprocess | None = None,
    **overrides: int,
) -> Encoder:
    """A randomly initialised I-JEPA encoder of a named size (``tiny`` .. ``giant``)."""
    from jepa.config import architecture_for
    from jepa.vit import Encoder, init_weights

    arch = architecture_for(size, patch_size=patch_size, image_size=image_size, **overrides)
    config = ModelConfig(
        name=name or f"jepa-vit-{size}-{patch_size}-{image_size}",
        architecture=arch,
        preprocess=preprocess or Preprocess(resize_size=image_size),
    )
    model = Encoder(config)
    init_weights(model)
    return model.eval()


def build_video_encoder(
    size: str = "tiny",
    *,
    patch_size: int = 16,
    image_size: int = 256,
    temporal: Temporal | None = None,
    name: str | None = None,
    preprocess: Preprocess | None = None,
    **overrides: int,
) -> VideoEncoder:
    """A randomly initialised V-JEPA 2 encoder of a named size (``large``, ``huge``, ``giant``, ...)."""
    from jepa.config import architecture_for, vjepa2_preprocess
    from jepa.vit import init_weights
    from jepa.vjepa2 import VideoEncoder

    arch = architecture_for(size, patch_size=patch_size, image_size=image_size, family="vjepa2", **overrides)
    config = ModelConfig(
        name=name or f"vjepa2-vit-{size}-{patch_size}-{image_size}",
        family="vjepa2",
        architecture=arch,
        temporal=temporal or Temporal(),
        preprocess=preprocess or vjepa2_preprocess(image_size),
    )
    model = VideoEncoder(config)
    init_weights(model)
    return model.eval()


def save_model_dir(model: Encoder, path: str | Path, config: ModelConfig | None = None) -> Path:
    """Write ``model`` as ``config.json`` + ``model.safetensors``; see :mod:`jepa.formats.native`."""
    from jepa.formats.native import save_model_dir as _save

    return _save(model, path, config)


def __getattr__(name: str) -> Any:
    if name == "Encoder":
        from jepa.vit import Encoder

        return Encoder
    if name == "VideoEncoder":
        from jepa.vjepa2 import VideoEncoder

        return VideoEncoder
    raise AttributeError(f"module 'jepa' has no attribute {name!r}")
