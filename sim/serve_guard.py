"""The render server's gate: a request-body size limit and an optional access token.

Both are plain ASGI middleware wrapped around the FastAPI application by
:func:`sim.serve.create_app`, so they hold before FastAPI parses (or buffers) anything:

- **Body size**: a request whose ``Content-Length`` exceeds ``max_body_bytes`` is answered
  ``413`` at once, before a byte of the body is read; a body sent without a length (chunked) is
  counted while it arrives and cut off with ``413`` as soon as it passes the limit. The default,
  :data:`MAX_BODY_BYTES` = 1 MiB, is far above the largest valid request (an actor edit of a few
  hundred actors is a few tens of kB).
- **Access token**: when a token is configured, every request must carry
  ``Authorization: Bearer <token>`` (compared in constant time); otherwise ``401``. The server
  refuses to bind a non-loopback address without a token (:func:`check_bind`).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sim.errors import LoopdriveError

__all__ = ["LOOPBACK_HOSTS", "MAX_BODY_BYTES", "ServeConfigError", "check_bind", "guard"]

#: Default cap on one request body: 1 MiB.
MAX_BODY_BYTES = 1024 * 1024
#: Host names and addresses that only this machine can reach.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Shortest access token accepted (characters).
MIN_TOKEN_CHARS = 16

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServeConfigError(LoopdriveError):
    """The server was asked to bind or guard itself in an unsafe or invalid way."""


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_bind(host: str, *, allow_remote: bool, token: str | None) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote`` is set and a ``token`` (at least
    :data:`MIN_TOKEN_CHARS` characters) guards the server; refuse a too-short token anywhere."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ServeConfigError(f"expected an access token of at least {MIN_TOKEN_CHARS} characters, got {len(token)}", field="--token")
    if _is_loopback(host):
        return
    if not allow_remote:
        raise ServeConfigError(f"binding to {host} exposes the server beyond this machine: pass --allow-remote and a --token "
                               "(or bind 127.0.0.1)", field="--host")
    if token is None:
        raise ServeConfigError(f"binding to {host} needs an access token (--token or $LOOPDRIVE_SERVE_TOKEN)", field="--token")


def _warn_413(scope: Scope, n: int, limit: int) -> None:
    # clients that ignore status codes (NeuroNCAP's) would otherwise lose an update silently
    log.warning("413 for %s %s: body of %d bytes (or more) over the limit of %d bytes; raise it with --max-body-bytes",
                scope.get("method"), scope.get("path"), n, limit)


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def guard(app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES, token: str | None = None) -> ASGIApp:
    """``app`` behind the body-size limit and, when ``token`` is given, the bearer-token check."""
    if max_body_bytes < 1:
        raise ServeConfigError(f"expected a positive body limit, got {max_body_bytes}", field="max_body_bytes")
    expected = None if token is None else f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""), expected):
            await _reply(send, 401, "expected the header 'Authorization: Bearer <token>'")
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await _reply(send, 400, "expected an integer Content-Length")
                return
            if n > max_body_bytes:
                _warn_413(scope, n, max_body_bytes)
                await _reply(send, 413, f"request body of {n} bytes exceeds the limit of {max_body_bytes} bytes")
                return
        # read the whole body here (it is small by construction), counting as it arrives, so a
        # chunked body without a length is cut off at the limit; the app then gets it in one piece
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > max_body_bytes:
                _warn_413(scope, seen, max_body_bytes)
                await _reply(send, 413, f"request body exceeds the limit of {max_body_bytes} bytes")
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return guarded
