"""Typed errors of the core package.

Every failure to load a model surfaces as :class:`CheckpointError`, naming the file and what is
wrong with it, so callers (the service, the export CLI) can turn it into one clear message.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class JepaError(Exception):
    """Base class for errors raised by the ``jepa`` package."""


class CheckpointError(JepaError):
    """A model source could not be loaded: unknown format, corrupt file, or mismatched tensors."""

    def __init__(
        self,
        path: str | Path,
        problem: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        parts = [f"{self.path}: {problem}"]
        if self.missing:
            parts.append(f"missing keys: {_short(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {_short(self.unexpected)}")
        super().__init__("; ".join(parts))


class ConfigError(JepaError):
    """A model configuration is invalid (unknown size, inconsistent dimensions, bad values)."""


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... ({len(keys)} in all)"


class ModelSourceError(CheckpointError, ValueError):
    """A model name, Hub id or URL could not be turned into local files: unknown name, no network,
    404, a truncated or corrupt download. ``path`` is the source as given; the message says what to
    download, from where, and where to put it. Also a ``ValueError``: to the service and the CLIs it
    is a bad ``--model`` value."""
