"""Which files hold a Hugging Face directory's weights: ``model.safetensors``, or the shards that
``model.safetensors.index.json`` names (``model-00001-of-00002.safetensors``, ...).

Why: ``save_pretrained`` splits weights above its shard size into several files plus an index,
and the Hub resolver (:mod:`jepa.hub`) fetches them; a loader that read ``model.safetensors``
only would refuse such a repository with "no model.safetensors". Torch-free, so the service's
start-up build (:mod:`service.optimize`) can key its cache on the same files the loader reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from jepa.contract import WEIGHTS_FILE
from jepa.errors import CheckpointError
from jepa.formats import _read_json_object
from jepa.formats.native import sha256_file

INDEX_FILE = "model.safetensors.index.json"


def locate(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of ``directory`` and, when they are shards, the index's map (tensor
    name -> shard file) they must agree with; ``None`` for a single ``model.safetensors``.

    Raises :class:`CheckpointError` naming the index when it is malformed, names a file outside
    the directory, or names a shard that is not there (a partial download).
    """
    single = directory / WEIGHTS_FILE
    if single.is_file():
        return [single], None
    index = directory / INDEX_FILE
    if not index.is_file():
        raise CheckpointError(directory, f"Hugging Face directory has no {WEIGHTS_FILE} (nor {INDEX_FILE} for shards)")
    weight_map = shard_map(index)
    return [directory / name for name in sorted(set(weight_map.values()))], weight_map


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of ``directory``: the single file, else every shard its index names."""
    return locate(directory)[0]


def shard_map(index: Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file name), checked."""
    weight_map = _read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(index, "no 'weight_map' object naming the shard of each tensor")
    for name in set(weight_map.values()):
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
            raise CheckpointError(index, f"shard {name!r} is not a .safetensors file name in this directory")
        if not (index.parent / name).is_file():
            raise CheckpointError(index, f"names shard {name}, which is not in the directory (a partial download?)")
    return {str(k): v for k, v in weight_map.items()}


def weights_sha256(files: list[Path]) -> str:
    """The weights' identity: a single file's sha256; for shards, the sha256 of the sorted
    ``name sha256`` lines of every shard (any changed byte in any shard changes it)."""
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{f.name} {sha256_file(f)}\n" for f in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()
