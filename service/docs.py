"""``GET /docs``: Swagger UI from the service itself, so it renders with no network.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a public CDN: on an
air-gapped host it is a blank page. Here the same page points at a copy shipped inside the
package (``service/static/swagger-ui/``, Swagger UI 5.35.0 from npm's ``swagger-ui-dist``, Apache-2.0,
see its README.md), mounted at ``/docs-assets``. ``/redoc`` (also CDN-only) is not offered.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).with_name("static") / "swagger-ui"
PREFIX = "/docs-assets"


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` for ``app``'s OpenAPI document (create the app with ``docs_url=None``)."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - docs",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )
