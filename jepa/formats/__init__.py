"""Model sources: detect which format a path holds, and load it as an :class:`~jepa.vit.Encoder`.

Three formats, each with pure key-mapping modules: ``native`` (our directory), ``meta`` (official
``.pth.tar`` of I-JEPA or ``.pt`` of V-JEPA 2), ``hf`` (``IJepaModel`` or ``VJEPA2Model``
directory; :mod:`~jepa.formats.hf` and :mod:`~jepa.formats.vjepa2`); :mod:`jepa.formats.loader`
does the reading.
Detection needs no torch. Every failure raises :class:`~jepa.errors.CheckpointError` naming the
path and the problem; a model is either loaded completely or not returned at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jepa.errors import CheckpointError
from jepa.formats import native

if TYPE_CHECKING:
    from jepa.vit import Encoder
    from jepa.vjepa2 import VideoEncoder

Format = Literal["native", "meta", "hf"]
EncoderChoice = Literal["target_encoder", "encoder"]

HF_MODEL_TYPES = ("ijepa", "vjepa2")

__all__ = ["EncoderChoice", "Format", "detect_format", "load"]


def detect_format(source: str | Path) -> Format:
    """Name the format of ``source`` or raise, saying what was found there.

    A directory is ours when its ``config.json`` says ``"format": "jepa-encoder"`` and Hugging
    Face's when it says ``"model_type": "ijepa"`` or ``"vjepa2"``; any file is taken for an official checkpoint
    (reading it then says whether it is one).
    """
    path = Path(source)
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if not path.is_dir():
        if path.suffix == ".safetensors":
            raise CheckpointError(
                path, "a bare safetensors file has no config; pass its directory (ours or Hugging Face's)"
            )
        return "meta"
    config_path = path / native.CONFIG_NAME
    if not config_path.is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise CheckpointError(path, f"no config.json: not a jepa or Hugging Face model directory (found: {found})")
    config = _read_json_object(config_path)
    if config.get("format") == "jepa-encoder":
        return "native"
    if config.get("model_type") in HF_MODEL_TYPES:
        return "hf"
    raise CheckpointError(
        config_path,
        f'neither our format ("format": "jepa-encoder", found {config.get("format")!r}) nor a Hugging Face '
        f'IJepa or VJEPA2 config ("model_type": "ijepa" or "vjepa2", found {config.get("model_type")!r})',
    )


def load(
    source: str | Path,
    *,
    encoder: EncoderChoice = "target_encoder",
    num_heads: int | None = None,
    verify: bool = True,
    image_size: int | None = None,
) -> Encoder | VideoEncoder:
    """Load any supported source as an encoder (CPU, float32, eval mode).

    ``image_size`` is the crop of a V-JEPA 2 ``.pt`` file, which does not record it (default 256).
    """
    from jepa.formats import loader

    path = Path(source)
    fmt = detect_format(path)
    if fmt == "native":
        config, state = native.read_weights(path, verify=verify)
    elif fmt == "hf":
        config, state = loader.read_hf(path)
    else:
        config, state = loader.read_meta(path, encoder, num_heads, image_size)
    return loader.build_and_load(config, state, path)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"unreadable JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(path, f"expected a JSON object, found {type(data).__name__}")
    return data
