"""The ASGI layer every request crosses before any route: request id, Host check, API key,
rate limit, body-size limit, and a JSON 500 for anything unexpected.

Authentication happens here, before the body is read, so an anonymous client cannot make the
server spool an upload, and a bad key answers 401 whatever the body holds.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Collection

import anyio.to_thread
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jupyter_sandbox._exceptions import APIError, AuthenticationError, PermissionDeniedError
from jupyter_sandbox.server import strict_json
from jupyter_sandbox.server.auth import KeyRing
from jupyter_sandbox.server.errors import (
    INTERNAL_MESSAGE,
    BodyTooLarge,
    api_error_parts,
    error_body,
    send_error,
    too_large_message,
)
from jupyter_sandbox.server.limits import RateLimiter

logger = logging.getLogger("jupyter_sandbox.server.access")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_THREAD_PARSE_BYTES = 64 * 2**10
"""Bodies at least this big are parsed in a worker thread, off the event loop."""
PUBLIC_PATHS = frozenset({"/openapi.json", "/health"})


async def _read_body(receive: Receive) -> bytes:
    """The whole body (the caller's `receive` enforces the size limit)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _parse(raw: bytes) -> None:
    if len(raw) < _THREAD_PARSE_BYTES:
        strict_json.parse(raw)
    else:
        await anyio.to_thread.run_sync(strict_json.parse, raw)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the buffered body once, then waits as the original."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


def host_name(host_header: str) -> str:
    """`example.com` from `example.com:8000`, `::1` from `[::1]:8000`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Response:
    """`send` that stamps `x-request-id` and remembers whether and how the response began."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._request_id = request_id
        self.status = 0
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            MutableHeaders(scope=message)["x-request-id"] = self._request_id
        await self._send(message)


class _LimitedBody:
    """`receive` that counts the body against the limit and raises `BodyTooLarge` past it."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._received = 0
        self._done = False

    async def drain(self) -> None:
        """Read and drop the rest of an oversized body (at most as much again as the limit),
        so the client reads our 413 instead of a reset connection."""
        budget = self._limit
        while not self._done and budget > 0:
            message = await self._receive()
            if message["type"] != "http.request":
                break
            budget -= len(message.get("body", b""))
            self._done = not message.get("more_body", False)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._done = not message.get("more_body", False)
            if self._received > self._limit:
                await self.drain()
                raise BodyTooLarge(self._limit)
        return message


async def _send_too_large(send: Send, limit: int) -> None:
    await send_error(
        send,
        413,
        error_body(
            too_large_message(limit), type="invalid_request_error", code="request_too_large"
        ),
        {"connection": "close"},
    )


class RequestContext:
    """Wraps the app: every response gets `x-request-id: req_<hex>`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        rate_limiter: Callable[[], RateLimiter],
        max_body: int,
        allowed_hosts: Collection[str] | None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.rate_limiter = rate_limiter  # the one in force: a shared one after start-up
        self.max_body = max_body
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.monotonic()
        request_id = "req_" + secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        response = _Response(send, request_id)
        try:
            await self._handle(scope, receive, response.send)
        except BodyTooLarge as exc:
            if not response.started:
                await _send_too_large(response.send, exc.limit)
        except Exception:
            logger.exception("request %s failed", request_id)
            if not response.started:
                await send_error(
                    response.send, 500, error_body(INTERNAL_MESSAGE, type="server_error")
                )
        finally:
            logger.info(
                "%s %s %s %d %.1fms",
                request_id,
                scope.get("method"),
                scope.get("path"),
                response.status,
                (time.monotonic() - started_at) * 1000,
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, or check the body's size and JSON, then run the app."""
        headers = Headers(scope=scope)
        body = _LimitedBody(receive, self.max_body)
        refusal = await self._refuse(scope, headers)
        if refusal is not None:
            await send_error(send, *refusal)
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await body.drain()
            await _send_too_large(send, self.max_body)
            return
        app_receive: Receive = body.receive
        if scope.get("method") in _BODY_METHODS and strict_json.is_json_type(
            headers.get("content-type")
        ):
            # Every JSON body passes the strict parser before a route sees it.
            raw = await _read_body(body.receive)
            if raw:
                try:
                    await _parse(raw)
                except APIError as exc:
                    await send_error(send, *api_error_parts(exc))
                    return
            app_receive = _replay(raw, receive)
        await self.app(scope, app_receive, send)

    async def _refuse(
        self, scope: Scope, headers: Headers
    ) -> tuple[int, dict[str, object], dict[str, str]] | None:
        """Why this request stops here (Host, key, rate), or None."""
        if self.allowed_hosts is not None and "*" not in self.allowed_hosts:
            host = host_name(headers.get("host", ""))
            if host not in self.allowed_hosts:
                # DNS rebinding: a browser page must not reach a loopback-bound server.
                return api_error_parts(
                    PermissionDeniedError(f"Host {host!r:.100} is not allowed by this server")
                )
        if scope.get("path") in PUBLIC_PATHS:
            return None
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return api_error_parts(
                AuthenticationError(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
            )
        key = self.keys.lookup(token.strip())
        if key is None:
            return api_error_parts(AuthenticationError("Incorrect API key provided."))
        try:
            await self.rate_limiter().acheck(key.key_id)
        except APIError as exc:
            return api_error_parts(exc)
        scope["state"]["api_key"] = key
        return None
