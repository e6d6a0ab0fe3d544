"""Checks made before any handler or parser sees a request: the token and the body size."""

from __future__ import annotations

import json
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Answer 413 to bodies above ``max_bytes``: at once from ``Content-Length``, otherwise while
    the (chunked) body streams in, without buffering more than the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, declared)
            return
        # Read the whole body up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(send, None)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, declared: int | None) -> None:
        got = f"{declared} bytes" if declared is not None else "more"
        detail = f"request body too large: {got}; this server accepts at most {self.max_bytes} bytes"
        await send_error(send, 413, detail, [(b"connection", b"close")])


class TokenMiddleware:
    """401 for requests to protected paths without ``Authorization: Bearer <token>``, before the
    body is read or validated (an unauthenticated client learns nothing about the API's rules)."""

    def __init__(self, app: ASGIApp, token: str | None, protected: tuple[str, ...] = ("/v1", "/metrics")) -> None:
        self.app = app
        self.expected = None if token is None else f"Bearer {token}".encode()
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or not scope["path"].startswith(self.protected):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"authorization") or b""
        if not secrets.compare_digest(given, self.expected):
            detail = "missing or wrong token: send 'Authorization: Bearer <token>' with the server's --token"
            await send_error(send, 401, detail, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


async def send_error(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    """A JSON ``{"detail": ...}`` answer straight from ASGI, shaped like the app's own errors."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
