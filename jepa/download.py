"""Checkpoint URLs (Meta's ``.pth.tar`` files on dl.fbaipublicfiles.com): download once into a
cache, resumably, and serve only files that arrived whole.

The cache is ``$JEPA_CACHE`` or ``$HF_HOME/jepa`` (one volume holds Hub and URL downloads). A
download writes ``NAME.part``; an interrupted one is resumed with an HTTP ``Range`` request (a
server that ignores it sends the file from the start, which then replaces the part). A finished
file must have the length the server announced and, when the catalogue pins one, that sha256;
only then is it fsynced and renamed to ``NAME``, with ``NAME.json`` beside it recording the URL,
size and sha256 (computed when nothing pinned it: the log says so). ``NAME`` therefore exists
only when complete; a mismatch deletes the part. A file lock keeps two processes from writing
the same part. Offline (``HF_HUB_OFFLINE=1``), only the cache is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from jepa.errors import ModelSourceError
from jepa.formats.native import sha256_file

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$JEPA_CACHE``, else ``$HF_HOME/jepa`` (huggingface_hub's idea of HF_HOME, read when called)."""
    explicit = os.environ.get("JEPA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "jepa"


def cached_path(url: str, root: Path | None = None) -> Path:
    """Where ``url`` is kept: ``<root>/checkpoints/<first 12 hex of sha256(url)>-<file name>``."""
    name = Path(urlsplit(url).path).name or "download"
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return (root or cache_root()) / "checkpoints" / f"{key}-{name}"


def fetch_url(url: str, *, sha256: str | None = None, offline: bool = False, root: Path | None = None,
              progress: bool = True, timeout_s: float = 30.0) -> Path:  # fmt: skip
    """The local copy of ``url``, downloading (or resuming) it unless it is already complete."""
    final = cached_path(url, root)
    if final.is_file():
        return final
    if offline:
        raise ModelSourceError(
            url,
            f"not in the download cache and offline mode is on (HF_HUB_OFFLINE=1). Download it where the "
            f"network is reachable (`python -m jepa download {url}`, or any HTTP client) and put it at {final} "
            "(set JEPA_CACHE or HF_HOME to use another cache), or pass the file as --model PATH.",
        )
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if not final.is_file():  # another process may have finished it meanwhile
            _download(url, final, sha256, progress, timeout_s)
    return final


def recorded_url(path: Path) -> str | None:
    """``url:<url>`` when ``path`` is a finished download (its sidecar names the URL), else None."""
    sidecar = path.with_name(path.name + ".json")
    try:
        return f"url:{json.loads(sidecar.read_text())['url']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _download(url: str, final: Path, sha256: str | None, progress: bool, timeout_s: float) -> None:
    import httpx

    part = final.with_name(final.name + ".part")
    try:
        total = _stream_to_part(url, part, progress, timeout_s)
    except httpx.HTTPError as e:
        kept = part.stat().st_size if part.exists() else 0
        resume = f"{kept} bytes kept in {part}, the next run resumes there" if kept else "nothing was kept"
        raise ModelSourceError(
            url,
            f"download failed ({type(e).__name__}: {e}); {resume}. Without network here: download the file "
            f"elsewhere and put it at {final}, or pass it as --model PATH.",
        ) from e
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink()
        raise ModelSourceError(url, f"got {size} bytes, the server announced {total}; deleted {part}, run again")
    actual = sha256_file(part)
    if sha256 is not None and actual != sha256:
        part.unlink()
        raise ModelSourceError(url, f"sha256 {actual} does not match the pinned {sha256}; deleted the download")
    if sha256 is None:
        log.warning("%s: no published checksum to check; recorded its sha256 %s in %s.json", url, actual, final.name)
    record = {"url": url, "size": size, "sha256": actual, "pinned": sha256 is not None, "downloaded_at": time.time()}
    _write_atomic(final.with_name(final.name + ".json"), json.dumps(record, indent=2).encode())
    _fsync(part)
    os.replace(part, final)


def _stream_to_part(url: str, part: Path, progress: bool, timeout_s: float) -> int | None:
    """Append the rest of ``url`` to ``part``; returns the full length the server announced (or None)."""
    import httpx
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout_s) as r:
        if r.status_code == 416:  # the part is already whole (or longer): start over to be sure
            part.unlink()
            return _stream_to_part(url, part, progress, timeout_s)
        if r.status_code not in (200, 206):
            raise ModelSourceError(url, f"HTTP {r.status_code} {r.reason_phrase}; check the URL")
        resumed = r.status_code == 206
        total = _announced_total(r, have if resumed else 0)
        mode = "ab" if resumed else "wb"
        with part.open(mode) as f, tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                                        desc=part.name.removesuffix(".part"), file=sys.stderr,
                                        disable=not progress) as bar:  # fmt: skip
            for chunk in r.iter_bytes():  # as it arrives: a broken transfer keeps every byte received
                f.write(chunk)
                bar.update(len(chunk))
    return total


def _announced_total(r: object, offset: int) -> int | None:
    headers = r.headers  # type: ignore[attr-defined]
    content_range = headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _fsync(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
