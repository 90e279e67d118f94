"""Training checkpoints: atomic writes, the last N kept, and loud failures on resume.

A checkpoint holds the three networks, the optimiser, the step, the seed and the resolved
config. The data order, crops and masks are keyed by ``(seed, step)`` (see ``data.py`` and
``pretrain.py``), so restoring the step restores every random stream exactly.
Files are written to a temporary name, flushed and ``os.replace``d, so a crash (even SIGKILL)
leaves either the old file or the new one, never half of one. A missing or corrupt checkpoint on
``--resume`` raises :class:`ResumeError`; it never silently starts from scratch.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "jepa-train-checkpoint"
NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


class ResumeError(RuntimeError):
    """A checkpoint to resume from is missing, corrupt, or does not match this run."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"ckpt-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (by step)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as ``ckpt-<step>.pt`` and delete all but the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "step": step, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        final = checkpoint_path(folder, step)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(folder)[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; any problem raises :class:`ResumeError`."""
    if not path.is_file():
        raise ResumeError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (pickle, zip, EOF) for a damaged file
        raise ResumeError(f"{path}: corrupt or unreadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResumeError(f"{path}: not a training checkpoint of this project (format {FORMAT!r} expected)")
    missing = [k for k in ("step", "seed", "encoder", "predictor", "target_encoder", "optimizer") if k not in state]
    if missing:
        raise ResumeError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def find_resume_checkpoint(folder: Path, explicit: str | None = None) -> Path:
    """The checkpoint ``--resume`` should load: ``explicit`` if given, else the newest in ``folder``."""
    if explicit:
        return Path(explicit)
    found = list_checkpoints(folder)
    if not found:
        raise ResumeError(f"--resume: no checkpoint (ckpt-*.pt) in {folder}; run without --resume to start fresh")
    return found[-1]
