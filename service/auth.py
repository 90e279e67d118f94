"""Optional API key: ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from pydantic import SecretStr
from starlette.requests import Request

from service.errors import Unauthorized


def require_key(api_key: SecretStr | None) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that checks the key, or does nothing when no key is configured."""
    expected = f"Bearer {api_key.get_secret_value()}".encode() if api_key else None

    async def check(request: Request) -> None:  # async: FastAPI would run a sync one in a thread
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'",
                               headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    return check
