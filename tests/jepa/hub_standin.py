"""A loopback stand-in for the Hugging Face Hub (and for Meta's download server), for tests.

It speaks the part of the Hub's protocol ``huggingface_hub.snapshot_download`` uses (read from
huggingface_hub 2.4's ``_snapshot_download.py``, ``file_download.py`` and ``hf_api.py``):

- ``GET /api/models/{repo}/revision/{rev}`` -> ``{"id", "sha"}`` (``HfApi.repo_info``);
- ``GET /api/models/{repo}/tree/{commit}?recursive=...`` -> the file list, with ``lfs`` (sha256,
  size) for LFS files (``HfApi.list_repo_tree``);
- ``HEAD/GET /{repo}/resolve/{rev}/{file}``: small files answer 200 with ``X-Repo-Commit``,
  ``ETag`` (the git blob sha1) and ``Content-Length``; LFS files answer 302 to ``/cdn/{sha256}``
  (on ``localhost``: another host) with ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``, as
  the real Hub redirects to its CDN;
- errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), which
  huggingface_hub turns into its typed errors.

Plain URLs (``/files/NAME``) serve bytes with ``Range`` support, as dl.fbaipublicfiles.com does.
Faults make the failure modes real: ``truncate`` (the body is shorter than the announced size),
``corrupt`` (same length, other bytes), ``drop`` / ``drop_once`` (every / the first GET closes the
connection halfway through the announced length, so the client must resume with ``Range``).
Every request is recorded with its headers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".tar", ".pt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]
    revisions: tuple[str, ...] = ("main",)

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)


@dataclass
class StandIn:
    """State shared with the handler: repos, plain files, faults, and the request log."""

    repos: dict[str, Repo] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes (the "CDN")
    urls: dict[str, bytes] = field(default_factory=dict)  # /files/NAME -> bytes
    faults: dict[str, str] = field(default_factory=dict)  # "repo/file" or "/files/NAME" -> fault
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> Repo:
        commit = commit or hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values()))).hexdigest()
        repo = Repo(commit, files)
        self.repos[repo_id] = repo
        for name, data in files.items():
            if repo.is_lfs(name):
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return repo

    def start(self) -> StandIn:
        standin = self

        class Handler(_Handler):
            state = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method is None or m == method]


class _Handler(BaseHTTPRequestHandler):
    state: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, body: bool) -> None:
        self.state.requests.append((self.command, self.path, dict(self.headers.items())))
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/api/models/"):
            return self._api(path.removeprefix("/api/models/"))
        if path.startswith("/cdn/"):
            return self._blob(path.removeprefix("/cdn/"), body)
        if path.startswith("/files/"):
            return self._plain(path, body)
        if "/resolve/" in path:
            return self._resolve(path.lstrip("/"), body)
        return self._error(404, "RepoNotFound", "not found")

    def _api(self, rest: str) -> None:
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_id, _, rev = rest.partition(marker)
                break
        else:
            return self._error(404, "RepoNotFound", "unknown API path")
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if rev not in (*repo.revisions, repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if marker == "/revision/":
            return self._json({"id": repo_id, "sha": repo.commit, "siblings": [{"rfilename": n} for n in repo.files]})
        entries = []
        for name, data in repo.files.items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
            if repo.is_lfs(name):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return self._json(entries)

    def _resolve(self, path: str, body: bool) -> None:
        repo_id, _, rest = path.partition("/resolve/")
        rev, _, name = rest.partition("/")
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if rev not in (*repo.revisions, repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if name not in repo.files:
            return self._error(404, "EntryNotFound", f"{name} does not exist", commit=repo.commit)
        data = repo.files[name]
        if repo.is_lfs(name):
            sha = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            # Another host name for the same server, as the Hub's CDN is another host: the client
            # must not follow it during the HEAD, and drops the Authorization header for it.
            port = self.state.endpoint.rsplit(":", 1)[1]
            self.send_header("Location", f"http://localhost:{port}/cdn/{sha}?key={repo_id}/{name}")
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{git_blob_sha1(data)}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_sha1(data)}"'}
        return self._bytes(data, body, f"{repo_id}/{name}", headers)

    def _blob(self, rest: str, body: bool) -> None:
        sha = rest.partition("?")[0]
        key = unquote(urlsplit(self.path).query).removeprefix("key=")
        data = self.state.blobs.get(sha)
        if data is None:
            return self._error(404, "EntryNotFound", "no such blob")
        return self._bytes(data, body, key, {})

    def _plain(self, path: str, body: bool) -> None:
        data = self.state.urls.get(path)
        if data is None:
            return self._error(404, None, "Not Found")
        return self._bytes(data, body, path, {})

    def _bytes(self, data: bytes, body: bool, key: str, headers: dict[str, str]) -> None:
        """Send ``data`` (or the asked ``Range`` of it), applying the fault registered for ``key``."""
        fault = self.state.faults.get(key)
        if fault == "corrupt":
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng.removeprefix("bytes=").split("-")[0])
        if start >= len(data) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        part = data[start:]
        sent = part[: len(part) // 2] if fault == "truncate" else part
        self.send_response(206 if start else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        # HEAD announces the whole file; a truncated GET body is well-formed HTTP, just short.
        self.send_header("Content-Length", str(len(sent) if body else len(part)))
        self.end_headers()
        if not body:
            return
        drop = fault == "drop" or (fault == "drop_once" and key not in self.state.dropped and not start)
        if drop and self.command == "GET":
            self.state.dropped.add(key)
            # Announce the whole length, send half, close: the client sees a broken transfer.
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(sent)

    def _json(self, obj: object) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
