"""The access log: one line per HTTP request, as plain text (default) or one JSON object.

Fields: method, path (never the query string), status, images (``POST /embed`` only, as the
route counted them), bytes received and sent, milliseconds, the client's address and a request
id: the client's ``X-Request-ID`` when it is a short token, else a new one, echoed in the
response's ``X-Request-ID`` so a client and the log can be matched. Header values (the API key)
and body bytes (the images) are never logged.

A pure ASGI middleware, so it sees what uvicorn sends and receives (a 499 for a client that left,
a 500 that escaped the handlers) and costs one log call per request; logger ``service.access``
at INFO, so ``--log-level warning`` silences it too.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

import orjson

log = logging.getLogger("service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
AccessFormat = Literal["plain", "json", "off"]


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


class AccessLog:
    """Wraps ``app``; the route may set ``request.state.images`` for the line's image count."""

    def __init__(self, app: ASGIApp, fmt: AccessFormat = "plain") -> None:
        self.app = app
        self.fmt = fmt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.fmt == "off":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        seen = {"status": 500, "in": 0, "out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            seen["in"] += len(message.get("body", b""))
            return message

        async def stamping_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, stamping_send)
        finally:
            ms = (time.perf_counter() - started) * 1000
            images = scope.get("state", {}).get("images", 0)
            self._write(scope, seen, images, ms, rid)

    def _write(self, scope: Scope, seen: dict[str, int], images: int, ms: float, rid: str) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        client = (scope.get("client") or ("-", 0))[0]
        method, path = scope["method"], scope["path"]
        if self.fmt == "json":
            fields = {
                "method": method,
                "path": path,
                "status": seen["status"],
                "images": images,
                "bytes_in": seen["in"],
                "bytes_out": seen["out"],
                "ms": round(ms, 2),
                "client": client,
                "request_id": rid,
            }
            log.info("%s", orjson.dumps(fields).decode())
        else:
            log.info(
                "%s %s %d images=%d in=%d out=%d ms=%.1f client=%s id=%s",
                method, path, seen["status"], images, seen["in"], seen["out"], ms, client, rid,
            )  # fmt: skip


def configure(fmt: AccessFormat) -> None:
    """At the entry point: JSON access lines go to stdout bare (one object per line, no level
    prefix) so log shippers can parse them; plain ones share the service's log format."""
    if fmt != "json":
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
