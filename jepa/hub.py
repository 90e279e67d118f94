"""Model sources by name: a catalogue short name, a Hugging Face Hub id (``org/name[@revision]``) or
an ``http(s)://`` checkpoint URL becomes local files before any format is detected.

Hub repositories are fetched with ``huggingface_hub.snapshot_download`` into its standard cache,
so ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` mean what
they mean everywhere else; only :data:`HUB_FILES` are fetched (configs and safetensors weights).
huggingface_hub checks each file's length and renames it into place only when complete, but it
does not hash plain-HTTP downloads, so :func:`verify_snapshot` checks every file against the
ETag the Hub named it by (sha256 for LFS files, the git blob sha1 for small ones) and deletes a
file that does not match: a corrupt download is never served. URLs go through
:mod:`jepa.download`. Torch-free: the service resolves ``--model`` with it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from jepa import catalogue
from jepa.errors import ModelSourceError
from jepa.formats.native import sha256_file

log = logging.getLogger(__name__)

# What a JEPA encoder needs from a Hub repository: configs and weights (one file or shards), and
# the graphs of a directory `python -m export` wrote (so a torch-free ONNX Runtime image can serve
# it by name). Not *.bin / *.pth duplicates, onnx/ folders of other exporters, READMEs, notebooks.
HUB_FILES = (
    "config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "export.json",
    "model*.onnx",
    "model*.onnx.data",
)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "model.onnx")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})$")
_HEX = re.compile(r"^[0-9a-f]+$")
VERIFIED_DIR = ".jepa-verified"


@dataclass(frozen=True)
class Resolved:
    """Local files for a model source; ``origin`` names where they came from (provenance)."""

    path: Path
    origin: str | None = None


def resolve(
    source: str | Path,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    offline: bool | None = None,
) -> Resolved:
    """Local path for ``source``, downloading it first when it names a Hub repo or a URL.

    An existing path wins over any name, and a ``Path`` object is never taken for a name.
    ``cache_dir`` / ``endpoint`` / ``offline`` default to
    huggingface_hub's (``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return Resolved(path, origin_of(path))
    if isinstance(source, Path):  # a Path means a file or directory, never a name to download
        raise ModelSourceError(text, "no such file or directory")
    if offline is None:
        from huggingface_hub import constants

        offline = constants.HF_HUB_OFFLINE
    entry = catalogue.find(text)
    if text.startswith(("http://", "https://")):
        from jepa import download

        sha = entry.url_sha256 if entry is not None else None
        local = download.fetch_url(text, sha256=sha, offline=offline)
        return Resolved(local, f"url:{text}")
    repo, revision = (entry.hub_id, None) if entry is not None else split_repo_id(text)
    return fetch_hub(repo, revision, cache_dir=cache_dir, endpoint=endpoint, offline=offline)


def split_repo_id(text: str) -> tuple[str, str | None]:
    """``org/name[@revision]`` -> (repo, revision); anything else is not a model source we know."""
    repo, at, revision = text.partition("@")
    if not _REPO_ID.match(repo) or ".." in repo or (at and not revision):
        names = ", ".join(e.name for e in catalogue.CATALOGUE)
        raise ModelSourceError(
            text,
            f"no such file or directory (it does not exist), and not a catalogue name ({names}), "
            "a Hugging Face Hub id (org/name or org/name@revision) or an http(s) URL; "
            "`python -m jepa models` lists the published encoders",
        )
    return repo, revision or None


def fetch_hub(
    repo: str, revision: str | None, *, cache_dir: str | Path | None, endpoint: str | None, offline: bool
) -> Resolved:
    """Download (or find in the cache) the files of ``repo`` at ``revision`` and verify them."""
    from huggingface_hub import constants, snapshot_download

    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    where = f"{repo}@{revision}" if revision else repo
    try:
        folder = snapshot_download(
            repo, revision=revision, allow_patterns=list(HUB_FILES), cache_dir=cache_dir, endpoint=endpoint,
            local_files_only=offline,
        )  # fmt: skip
    except Exception as e:  # every failure becomes one typed error that names what to do
        raise hub_error(e, where, repo, cache, endpoint or constants.ENDPOINT, offline) from e
    snapshot = Path(folder)
    verify_snapshot(snapshot, where)
    return Resolved(snapshot, f"hf:{repo}@{snapshot.name}")


def hub_error(e: Exception, where: str, repo: str, cache: Path, endpoint: str, offline: bool) -> ModelSourceError:
    """The one message for a failed Hub fetch: what happened, then how to get the files here."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    folder = cache / ("models--" + repo.replace("/", "--"))
    remedy = (
        f"Download it where the Hub is reachable (`python -m jepa download {where}`, or "
        f"`hf download {repo} --include {' '.join(HUB_FILES[:4])}`) and copy {folder.name}/ into this "
        f"machine's Hub cache ({cache}; set HF_HOME or HF_HUB_CACHE to use another), or pass the downloaded "
        "directory as --model PATH."
    )
    if isinstance(e, GatedRepoError):
        return ModelSourceError(where, f"gated on {endpoint}: accept its terms on the Hub and set HF_TOKEN")
    if isinstance(e, RepositoryNotFoundError):
        return ModelSourceError(
            where,
            f"no such Hub repository on {endpoint} (or it is private: set HF_TOKEN), "
            "and no local file or directory of that name",
        )
    if isinstance(e, RevisionNotFoundError):
        return ModelSourceError(where, f"the repository has no such revision on {endpoint}")
    if isinstance(e, LocalEntryNotFoundError):
        mode = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else f"the Hub at {endpoint} cannot be reached"
        return ModelSourceError(
            where,
            f"no local file or directory of that name, not in the Hub cache {cache} (or only partly), "
            f"and {mode}. {remedy}",
        )
    return ModelSourceError(
        where,
        f"download from {endpoint} failed ({type(e).__name__}: {_first_line(e)}); no partial file was kept. "
        f"Run the command again (files already complete are not fetched again), or: {remedy}",
    )


def verify_snapshot(snapshot: Path, where: str) -> None:
    """Check the snapshot holds a config and weights, and every file matches the ETag it is stored under."""
    names = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    if "config.json" not in names or not set(WEIGHTS) & set(names):
        raise ModelSourceError(
            where,
            "the repository has no config.json and model.safetensors (or model.onnx) "
            f"(fetched: {', '.join(names) or 'nothing'}); not an encoder this project loads",
        )
    for name in names:
        verify_blob(snapshot / name, where)


def verify_blob(pointer: Path, where: str) -> None:
    """Hash the blob behind ``pointer`` once (a marker remembers size and mtime) against its ETag.

    A mismatch deletes the blob and the pointer, so the next run downloads the file again.
    Without symlinks (some Windows setups) the ETag is unknown and nothing is checked.
    """
    if not pointer.is_symlink():
        return
    blob = pointer.resolve()
    etag = blob.name
    if not _HEX.match(etag) or len(etag) not in (40, 64):
        return
    stat = blob.stat()
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    marker = blob.parent.parent / VERIFIED_DIR / etag
    if marker.is_file() and marker.read_text() == stamp:
        return
    actual = sha256_file(blob) if len(etag) == 64 else _git_blob_sha1(blob)
    if actual != etag:
        blob.unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)
        kind = "sha256" if len(etag) == 64 else "git blob sha1"
        raise ModelSourceError(
            where,
            f"{pointer.name} is corrupt ({kind} {actual}, the Hub names {etag}); deleted it, "
            "run the command again to download it anew",
        )
    try:
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(stamp)
    except OSError as e:  # a read-only cache (a mounted volume): verify again next time
        log.debug("cannot record verification of %s: %s", blob, e)


def origin_of(path: Path) -> str | None:
    """``hf:org/name@commit`` for a Hub cache snapshot directory, ``url:...`` for a downloaded
    checkpoint (its sidecar names the URL), else None (a plain local path)."""
    match = _SNAPSHOT.search(path.resolve().as_posix()) if path.is_dir() else None
    if match:
        return f"hf:{match['org']}/{match['name']}@{match['commit']}"
    from jepa.download import recorded_url

    return recorded_url(path) if path.is_file() else None


def _git_blob_sha1(path: Path) -> str:
    """Git's object id of a file: sha1 over ``blob <size>\\0`` and the bytes (the ETag of non-LFS files)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""
