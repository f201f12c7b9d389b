"""ASGI middleware of the server: the request body limit and the per-route request metrics.

Both are plain ASGI (no ``BaseHTTPMiddleware``), so a body over the limit is refused before it
is read in full: by its ``Content-Length`` when it declares one, else as soon as the chunks
received pass the limit.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visionops.serving.metrics import ServingMetrics

#: The route label of a request no route matched (its path would be unbounded cardinality).
UNMATCHED_ROUTE = "unmatched"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServingMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over the limit of {self.max_bytes:,} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            self.metrics.errors.labels("body_too_large").inc()
            await _send_json(send, 413, {"detail": detail})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    self.metrics.errors.labels("body_too_large").inc()
                    # Raised inside the route's body read: the app's exception handling
                    # answers it like any HTTPException.
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited_receive, send)


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what the client gets when the app fails before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or UNMATCHED_ROUTE
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.request_duration.labels(label).observe(time.monotonic() - started)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1")).strip()
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),  # the unread body makes the connection unusable
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
