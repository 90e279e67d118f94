"""Turn a ``POST /embed`` request into ``(image files as bytes, options)``, enforcing the limits.

Three body forms: ``multipart/form-data`` (files in field ``image``, options as query
parameters), a raw body (``image/*``, ``application/octet-stream`` or no Content-Type; options as
query parameters; the format is sniffed from the bytes), and JSON (:class:`EmbedRequest`,
options inside; query parameters are refused so nothing is silently ignored).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from concurrent.futures import Executor
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from service.errors import (
    ClientClosed,
    InvalidParameters,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    validation_message,
)
from service.multipart import MultipartError, TooManyParts, parse_multipart
from service.plan import RequestLimits
from service.schemas import EmbedOptions, EmbedRequest


async def read_body(request: Request, limits: RequestLimits) -> bytes:
    """The whole body within ``body_timeout_s`` (else 408), refused with 413 as soon as it (or its
    Content-Length) passes ``max_body_bytes``."""
    try:
        return await asyncio.wait_for(_read_limited(request, limits.max_body_bytes), limits.body_timeout_s)
    except asyncio.TimeoutError as e:
        raise RequestTimeout(f"the request body did not arrive within {limits.body_timeout_s:g} s") from e


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes is over the limit of {max_bytes}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"body is over the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect as e:  # the client's doing: its own outcome, no traceback, no 500
        raise ClientClosed(f"the client disconnected after sending {size} bytes of the body") from e
    return b"".join(chunks)


# A raw body in any of these is one image file whose format is sniffed from its bytes (the
# declared image/* subtype is not trusted either). application/octet-stream is what many HTTP
# clients send for bytes; some send no Content-Type at all.
RAW_TYPES = ("application/octet-stream", "")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def parse_embed_request(
    request: Request, limits: RequestLimits, pool: Executor
) -> tuple[list[bytes], EmbedOptions]:
    kind = media_type(request)
    if kind == "application/json":
        if request.query_params:
            raise InvalidParameters(
                f"JSON requests take options in the body, not the query: {list(request.query_params)}"
            )
        body = await read_body(request, limits)
        loop = asyncio.get_running_loop()  # JSON parsing and base64 are CPU work: off the event loop
        req, decoded = await loop.run_in_executor(pool, parse_json_images, body, limits.max_images_per_request)
        blobs = [b if b is not None else await fetch_url(req.images[i], i, limits) for i, b in enumerate(decoded)]
        return blobs, EmbedOptions(**req.model_dump(exclude={"images"}))
    if kind == "multipart/form-data":
        options = options_from_query(request)
        return await files_from_multipart(request, limits), options
    if kind.startswith(("image/", "video/")) or kind in RAW_TYPES:  # video/*: for video models
        options = options_from_query(request)
        body = await read_body(request, limits)
        if not body:
            raise InvalidRequest("empty body: send the image file as the request body")
        return [body], options
    hint = ""
    if kind == "application/x-www-form-urlencoded":  # what `curl --data-binary @photo.jpg` sends by default
        hint = " (curl sends this for --data-binary: add -H 'Content-Type: application/octet-stream')"
    raise UnsupportedMediaType(
        f"Content-Type {kind} is not supported: use multipart/form-data, image/*, video/*, "
        f"application/octet-stream or application/json{hint}"
    )


def options_from_query(request: Request) -> EmbedOptions:
    """Query parameters -> options; ``outputs`` may repeat or be comma-separated; unknown keys -> 422."""
    raw: dict[str, object] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        if key == "outputs":
            raw[key] = [v.strip() for value in values for v in value.split(",") if v.strip()]
        elif len(values) > 1:
            raise InvalidParameters(f"query parameter {key!r} given {len(values)} times")
        else:
            raw[key] = values[0]
    try:
        return EmbedOptions.model_validate(raw)
    except ValidationError as e:
        raise InvalidParameters(validation_message(e.errors())) from e


def parse_json(body: bytes, max_images: int) -> EmbedRequest:
    if not body:
        raise InvalidRequest("empty body: send a JSON object with an 'images' list")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"malformed JSON: {e}") from e
    if not isinstance(raw, dict):
        raise InvalidRequest("the JSON body must be an object with an 'images' list")
    images = raw.get("images")
    if isinstance(images, list) and len(images) > max_images:
        raise InvalidParameters(f"{len(images)} images in one request; the limit is {max_images}")
    try:
        return EmbedRequest.model_validate(raw)
    except ValidationError as e:
        raise InvalidParameters(validation_message(e.errors())) from e


def parse_json_images(body: bytes, max_images: int) -> tuple[EmbedRequest, list[bytes | None]]:
    """The request and each image's bytes (``None`` for URLs, fetched later on the event loop)."""
    req = parse_json(body, max_images)
    urls = ("http://", "https://")
    return req, [None if item.startswith(urls) else decode_base64(item, i) for i, item in enumerate(req.images)]


def decode_base64(item: str, index: int) -> bytes:
    """Plain base64 or a ``data:image/...;base64,`` URI -> bytes."""
    if item.startswith("data:"):
        header, sep, payload = item.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidRequest(f"image {index}: data URI must look like data:image/...;base64,<data>", index=index)
        mime = header[5:].split(";")[0].lower()
        if mime and not mime.startswith(("image/", "video/")):
            raise UnsupportedMediaType(f"image {index}: data URI type {mime} is not an image type", index=index)
        item = payload
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"image {index}: malformed base64 ({e})", index=index) from e


async def fetch_url(url: str, index: int, limits: RequestLimits) -> bytes:
    """Download one image URL, only when enabled and the host is allow-listed (SSRF guard)."""
    if not limits.allow_url_fetch:
        raise InvalidRequest(f"image {index}: URLs are not accepted by this server; send the image bytes", index=index)
    host = (urlsplit(url).hostname or "").lower()
    if host not in limits.url_allowlist:
        raise InvalidRequest(f"image {index}: host {host!r} is not in the server's URL allow-list", index=index)
    import httpx

    try:
        async with (
            httpx.AsyncClient(timeout=limits.url_timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise InvalidRequest(f"image {index}: GET {url} answered {resp.status_code}", index=index)
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise PayloadTooLarge(f"image {index}: {url} is over {limits.max_body_bytes} bytes", index=index)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as e:
        raise InvalidRequest(f"image {index}: fetching {url} failed: {type(e).__name__}", index=index) from e


async def files_from_multipart(request: Request, limits: RequestLimits) -> list[bytes]:
    body = await read_body(request, limits)
    if not body:
        raise InvalidRequest("empty body: send files in the multipart field 'image'")
    limit = limits.max_images_per_request
    try:
        parts = parse_multipart(body, request.headers.get("content-type", ""), max_parts=limit + 16)
    except TooManyParts as e:
        raise InvalidParameters(f"too many images in one request; the limit is {limit}") from e
    except MultipartError as e:
        raise InvalidRequest(f"malformed multipart body: {e}") from e
    unknown = sorted({p.name for p in parts} - {"image", "video"})  # "video": the same files, by another name
    if unknown:
        raise InvalidParameters(f"unknown form fields {unknown}: files go in 'image', options in the query string")
    images = [p for p in parts if p.name in ("image", "video")]
    if not images:
        raise InvalidRequest("no files in the multipart field 'image'")
    if len(images) > limit:
        raise InvalidParameters(f"{len(images)} images in one request; the limit is {limit}")
    for i, part in enumerate(images):
        if part.filename is None:
            raise InvalidRequest(f"image {i}: the 'image' field must be a file upload", index=i)
    return [p.data for p in images]
