"""A content-addressed cache of built model directories, safe across processes and crashes.

Layout under the root (``--cache-dir`` / ``JEPA_CACHE_DIR``, default ``$XDG_CACHE_HOME/jepa-embed``)::

    <key>/              a finished entry: the built files + manifest.json (sha256 and size of each)
    <key>.lock          flock'ed by whoever checks or builds <key>
    .stage-<key>-XXXX/  an entry being built (renamed to <key>/ only when complete)

Why each piece: an entry appears by one ``rename`` of a complete staging directory, so a reader
never sees half an entry; the manifest is written last and lists every file's checksum, so a
partial copy, a truncated file or a bit flip is detected (and the entry rebuilt, never served);
``fcntl.flock`` on a per-key lock file serialises builders of the same key (several replicas or
workers on one volume) while leaving other keys free, and the kernel releases it when a builder
dies, so a crash cannot wedge the cache. Leftover staging directories of a dead builder are
removed by the next holder of the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("service")
MANIFEST = "manifest.json"
APP_DIR = "jepa-embed"


class CacheError(OSError):
    """No usable cache directory, or an entry could not be published."""


@dataclass(frozen=True)
class Manifest:
    """What an entry holds (``files``: name -> ``{"sha256", "bytes"}``) and how it was made (``facts``)."""

    key: str
    files: dict[str, dict[str, object]]
    facts: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "files": self.files, "facts": self.facts}


def default_root() -> Path:
    """``$XDG_CACHE_HOME/jepa-embed``, else ``~/.cache/jepa-embed`` (the XDG base directory rule)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / APP_DIR


def tmp_root() -> Path:
    """The fallback where the home directory is read-only (a container's read-only root filesystem):
    under ``/tmp``, usually an emptyDir or tmpfs there; per user, so users cannot race each other."""
    return Path(tempfile.gettempdir()) / f"{APP_DIR}-cache-{os.getuid()}"


def writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def usable_root(preferred: Path | None) -> Path:
    """The first writable of ``preferred`` (or the XDG default) and the ``/tmp`` fallback."""
    candidates = [preferred or default_root(), tmp_root()]
    for candidate in candidates:
        if writable(candidate):
            if candidate != candidates[0]:
                log.warning("cache: %s is not writable; using %s instead", candidates[0], candidate)
            return candidate
    raise CacheError(f"no writable cache directory (tried {', '.join(map(str, candidates))}); set JEPA_CACHE_DIR")


def file_sum(path: Path, chunk: int = 1 << 22) -> dict[str, object]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def write_manifest(stage: Path, key: str, facts: dict[str, object]) -> Manifest:
    """Checksum every file of ``stage`` and write the manifest last (temp file + rename)."""
    files = {p.name: file_sum(p) for p in sorted(stage.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = Manifest(key, files, facts)
    tmp = stage / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest.as_dict(), indent=2) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, stage / MANIFEST)
    return manifest


def verify(entry: Path, key: str) -> tuple[Manifest | None, str]:
    """``(manifest, "")`` when ``entry`` is complete and every checksum matches, else ``(None, why)``."""
    if not entry.is_dir():
        return None, "not built yet"
    try:
        raw = json.loads((entry / MANIFEST).read_text())
        manifest = Manifest(raw["key"], dict(raw["files"]), dict(raw["facts"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"no readable manifest ({type(e).__name__}: {e})"
    if manifest.key != key or not manifest.files:
        return None, "manifest is for another key or lists no files"
    present = {p.name for p in entry.iterdir() if p.name != MANIFEST}
    if extra := present - set(manifest.files):
        return None, f"files not in the manifest: {sorted(extra)}"
    for name, expected in manifest.files.items():
        path = entry / name
        if not path.is_file():
            return None, f"{name} is missing"
        if path.stat().st_size != expected.get("bytes"):
            return None, f"{name} has {path.stat().st_size} bytes, the manifest says {expected.get('bytes')}"
        if file_sum(path)["sha256"] != expected.get("sha256"):
            return None, f"{name} does not match its sha256 in the manifest"
    return manifest, ""


@contextlib.contextmanager
def locked(root: Path, key: str, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the exclusive lock of ``key``; ``on_wait`` is called once if another process holds it."""
    with open(root / f"{key}.lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def new_stage(root: Path, key: str) -> Path:
    """A fresh staging directory for ``key``; call with the key's lock held."""
    for stale in root.glob(f".stage-{key}-*"):  # a builder died here: nobody else can own it
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".stage-{key}-", dir=root))


def publish(stage: Path, entry: Path) -> None:
    """Make ``stage`` the entry at ``entry`` by one rename, moving a rejected old entry aside first."""
    if entry.exists():
        trash = entry.with_name(f".trash-{entry.name}-{uuid.uuid4().hex[:8]}")
        os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(stage, entry)
    except OSError as e:
        raise CacheError(f"cannot publish cache entry {entry}: {e}") from e
