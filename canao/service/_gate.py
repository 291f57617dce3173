"""The token gate: every request but the health check carries the bearer token (ASGI)."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from canao.service._config import EXPORT_ID

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                Awaitable[None]]
PUBLIC = ("/api/health",)  # the only path a token does not guard
ARCHIVE = re.compile(EXPORT_ID.pattern + r"\.tar\.gz")


class Gate:
    """ASGI middleware in front of every route: the bearer token, then the body size.

    The body is read here (up to ``max_body`` bytes) so an oversized upload is refused
    with 413 before any handler or multipart parser sees it.
    """

    def __init__(self, app: ASGI, token: str | None, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.expected = f"Bearer {token}".encode() if token else b""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token and scope["path"] not in PUBLIC:
            given = headers.get(b"authorization", b"")
            # compare_digest's time does not depend on where the bytes first differ
            if not hmac.compare_digest(given, self.expected):
                await _reply(send, 401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                             [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, f"request body of {int(length)} bytes is over the "
                         f"service's limit of {self.max_body} bytes")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _reply(send, 413, f"request body is over the service's limit of "
                             f"{self.max_body} bytes")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Any, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
