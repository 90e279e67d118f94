"""Our model directory: ``config.json`` (ModelConfig) + ``model.safetensors`` (the target encoder).

Exported graphs (``model.onnx``) sit beside them. Reading the config needs no torch, so the
ONNX Runtime service can use :func:`read_config` on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from jepa.config import ModelConfig
from jepa.contract import CONFIG_FILE, WEIGHTS_FILE
from jepa.errors import CheckpointError

if TYPE_CHECKING:
    import torch

CONFIG_NAME = CONFIG_FILE  # the contract's names (jepa/contract.py)
WEIGHTS_NAME = WEIGHTS_FILE


def read_config(path: str | Path) -> ModelConfig:
    """Parse and validate ``path/config.json``; raises :class:`CheckpointError` naming the problem."""
    config_path = Path(path) / CONFIG_NAME
    try:
        raw = json.loads(config_path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(config_path, "no config.json in the model directory") from e
    except (OSError, ValueError) as e:
        raise CheckpointError(config_path, f"unreadable config: {e}") from e
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as e:
        raise CheckpointError(config_path, f"invalid config: {e}") from e


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: str | Path, verify: bool = True) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and state dict of a model directory, checking the weights' sha256 when recorded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(weights, "no model.safetensors in the model directory")
    expected = config.provenance.weights_sha256
    if verify and expected and (actual := sha256_file(weights)) != expected:
        raise CheckpointError(weights, f"sha256 {actual} does not match config.json's {expected} (corrupt or replaced)")
    try:
        return config, load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(weights, f"unreadable safetensors file: {e}") from e


def save_model_dir(model: torch.nn.Module, path: str | Path, config: ModelConfig | None = None) -> Path:
    """Write ``model`` (an Encoder) as a model directory and return its path.

    Files are written to temporary names and renamed, so a crash never leaves a directory whose
    config and weights disagree. The weights' sha256 is recorded in the config.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = config or model.config
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_weights = _temp_path(path, WEIGHTS_NAME)
    save_file(state, str(tmp_weights), metadata={"format": "pt", "name": config.name})
    digest = sha256_file(tmp_weights)
    provenance = config.provenance.model_copy(update={"weights_sha256": digest})
    config = config.model_copy(update={"provenance": provenance})
    tmp_config = _temp_path(path, CONFIG_NAME)
    tmp_config.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    for tmp, final in ((tmp_weights, WEIGHTS_NAME), (tmp_config, CONFIG_NAME)):
        # mkstemp (and safetensors' rewrite) leave 0600; model directories are often read by
        # another user (a container, Triton), so make them world-readable like any data file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path / final)
    if hasattr(model, "config"):
        model.config = config
    return path


def _temp_path(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    os.close(fd)
    return Path(tmp)
