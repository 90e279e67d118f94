"""The embedding viewer: ``GET /ui`` serves a small static page (``service/static/ui/``) that calls
``/info`` and ``/embed`` like any client and draws what the encoder sees.

The page is plain files shipped in the package (no CDN, no build step): the server only hands them
out; every number on the page (PCA of the patches, cosine similarities) is computed in the browser
from the ``/embed`` response, so the page costs the service nothing but these few kilobytes and adds
no dependency to the torch-free image. ``--no-ui`` (``JEPA_UI=false``) leaves the routes out: ``/``
and ``/ui`` are then plain 404s.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response

from service.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static" / "ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Only our own files, only our own origin; pictures and (for a video model) videos come from the
# user's files (blob:). The page's API key never leaves for another origin, and the page cannot be
# framed by another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # small files: revalidate, so an upgraded server serves its own page
}


def load_assets(directory: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """``{file name: (bytes, media type)}`` for the page's files, read once at start-up.

    Raises ``FileNotFoundError`` naming the folder when the page is missing (a wheel built without
    its package data), rather than serving 404s to the first visitor.
    """
    assets = {
        path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
        for path in sorted(directory.glob("*"))
        if path.suffix in MEDIA_TYPES
    }
    if "index.html" not in assets:
        raise FileNotFoundError(f"the UI page is missing: no index.html in {directory} (or start with --no-ui)")
    return assets


def install_ui(app: FastAPI) -> None:
    """Add ``GET /`` (a redirect to the page), ``GET /ui`` (the page) and ``GET /ui/<file>``."""
    assets = load_assets()

    def serve(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"no file {name!r} in the UI page")
        body, media = assets[name]
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("ui", status_code=307)  # relative: also right behind a path prefix

    @app.get("/ui", include_in_schema=False)
    async def page() -> Response:
        return serve("index.html")

    @app.get("/ui/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        return serve(name)
