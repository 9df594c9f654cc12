"""Pure ASGI middleware: request body limit, Prometheus request metrics and the access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import HTTPException
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The access log's logger (ROOST_ACCESS_LOG): one INFO line per HTTP request.
access_log = logging.getLogger("roost.access")

REQUESTS = Counter(
    "roost_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "roost_http_request_duration_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _too_large(limit: int) -> list[Message]:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "Payload too large",
            "status": 413,
            "detail": f"the request body is larger than the {limit}-byte limit",
        }
    )
    return [
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413: by Content-Length at once, else while reading.

    Starlette's own RequestBodyLimitMiddleware answers text/plain; the API promises problem+json.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.default_max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > max_bytes:
                    for message in _too_large(max_bytes):
                        await send(message)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # FastAPI lets its own HTTPException through body parsing (anything else
                    # would become a 400), and the app's handler renders it as problem+json.
                    raise HTTPException(
                        413, f"the request body is larger than the {max_bytes}-byte limit"
                    )
            return message

        await self.app(scope, limited_receive, send)


class Metrics:
    """Count requests and time them per route template (not per URL, to bound label sets), and
    log each request when the access log is on (the path without its query, which may hold a
    token)."""

    def __init__(
        self, app: ASGIApp, access_log: bool = False, templates: Mapping[int, str] | None = None
    ) -> None:
        self.app = app
        self.access_log = access_log
        # Whole templates by route object, for routes included under a prefix.
        self.templates = templates or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = self.templates.get(id(route)) or getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            elapsed = time.perf_counter() - start
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(elapsed)
            if self.access_log:
                _log_access(scope, method, status, elapsed)


def _log_access(scope: Scope, method: str, status: int, elapsed: float) -> None:
    """One access line; its fields also go to the JSON log as fields of their own."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    path = scope.get("root_path", "") + scope["path"]
    duration_ms = round(elapsed * 1000, 3)
    access_log.info(
        "%s %s %s %d %.1fms",
        peer,
        method,
        path,
        status,
        duration_ms,
        extra={
            "client": peer,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
        },
    )
