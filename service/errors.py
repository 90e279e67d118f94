"""The service's errors: one hierarchy, one status table, one JSON shape, one set of handlers.

Every failure a client can cause is an :class:`ApiError` subclass raised where it is found;
the handlers installed by :func:`install_handlers` turn it into
``{"error": {"type", "message", "index"?}}`` with the status from :data:`STATUS`. Anything
else is a bug: it becomes a generic 500 and is logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("service")


class ApiError(Exception):
    """An error answered to the client. ``index`` names the image at fault in a multi-image request."""

    type = "internal_error"

    def __init__(self, message: str, *, index: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.headers = headers or {}


class InvalidRequest(ApiError):
    """Malformed body: bad JSON, bad base64, bad multipart, empty body."""

    type = "invalid_request"


class InvalidImage(ApiError):
    """Bytes that are not a decodable image (not an image, truncated, corrupt, too slow to decode)."""

    type = "invalid_image"


class InvalidVideo(ApiError):
    """Bytes in a video container that do not decode: corrupt, truncated, no video stream, too slow."""

    type = "invalid_video"


class Unauthorized(ApiError):
    type = "unauthorized"


class NotFound(ApiError):
    type = "not_found"


class MethodNotAllowed(ApiError):
    type = "method_not_allowed"


class NotAcceptable(ApiError):
    """The ``Accept`` header asks for an encoding that cannot hold what the request asked for."""

    type = "not_acceptable"


class RequestTimeout(ApiError):
    """The body did not arrive within ``body_timeout_s`` (a stalled or deliberately slow client)."""

    type = "request_timeout"


class PayloadTooLarge(ApiError):
    """Body over ``max_body_bytes``, or an image over ``max_pixels`` (decompression bombs included)."""

    type = "payload_too_large"


class UnsupportedMediaType(ApiError):
    type = "unsupported_media_type"


class InvalidParameters(ApiError):
    """Unknown or invalid options, too many images."""

    type = "invalid_parameters"


class Overloaded(ApiError):
    """The queue is full; the client should retry after ``Retry-After`` seconds."""

    type = "overloaded"


class NotReady(ApiError):
    """Model not loaded or warmed yet, shutting down, or a fatal device error latched."""

    type = "not_ready"


class InferenceFailed(ApiError):
    """The backend raised while running the batch this request was in."""

    type = "inference_error"


class ClientClosed(ApiError):
    """The client disconnected before its result was ready (nginx's 499; nobody reads the body)."""

    type = "client_closed"


class InternalError(ApiError):
    type = "internal_error"


# The one status table.
STATUS: dict[type[ApiError], int] = {
    InvalidRequest: 400,
    InvalidImage: 400,
    InvalidVideo: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    NotAcceptable: 406,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidParameters: 422,
    ClientClosed: 499,
    InferenceFailed: 500,
    InternalError: 500,
    Overloaded: 503,
    NotReady: 503,
}


def status_of(error: ApiError) -> int:
    """The status of the nearest class in ``error``'s MRO that the table lists (a subclass of a
    400 error is a 400); 500 for none."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def error_response(error: ApiError) -> Response:
    body: dict[str, object] = {"type": error.type, "message": error.message}
    if error.index is not None:
        body["index"] = error.index
    return Response(
        orjson.dumps({"error": body}),
        status_code=status_of(error),
        media_type="application/json",
        headers=error.headers,
    )


def _http_error(exc: StarletteHTTPException) -> ApiError:
    if exc.status_code == 404:
        return NotFound(str(exc.detail))
    if exc.status_code == 405:
        return MethodNotAllowed(str(exc.detail))
    return InvalidRequest(str(exc.detail))


def validation_message(errors: Sequence[Any]) -> str:
    """pydantic / FastAPI validation errors -> ``"where: what; ..."`` (``body``/``query`` left out of where)."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid parameters"


def install_handlers(app: FastAPI) -> None:
    """Route every exception through :func:`error_response`."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidParameters(validation_message(exc.errors())))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(_http_error(exc))

    async def on_unknown(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(InternalError("internal server error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unknown)
