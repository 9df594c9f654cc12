"""RFC 9457 problem+json answers for every error the API can give, never a bare 500.

An unexpected exception is answered 500 inside the app (:class:`ContainErrors`), never left to
reach the server: Starlette's outermost error middleware answers and then re-raises, and uvicorn
closes a connection whose app raised, so a keep-alive client's next request would be reset. A
value that cannot be written as JSON (orjson: an integer beyond 64 bits that slipped past the
doors' check, see :mod:`roost.core.json`) is answered 422, not 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from roost.core.json import OUT_OF_RANGE_CODE
from roost.errors import RateLimited, RoostError, Unavailable

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_TYPE, headers=all_headers
    )


async def deny(websocket: WebSocket, exc: RoostError) -> None:
    """Refuse a WebSocket upgrade with the HTTP status and problem+json of ``exc``."""
    headers = (
        {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, RateLimited | Unavailable)
        else None
    )
    await websocket.send_denial_response(
        problem(exc.status, exc.detail, title=exc.title, headers=headers)
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc if part not in {"body", "query", "path"}) or "body"


def _body_not_json(exc: RequestValidationError) -> bool:
    """FastAPI hands over as bytes a body it did not parse as JSON (Content-Type not JSON)."""
    return any(
        tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes)
        for err in exc.errors()
    )


def _validation_errors(exc: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    errors = []
    malformed = False
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            malformed = True
            ctx = err.get("ctx") or {}
            errors.append(
                {"field": "body", "message": f"malformed JSON: {ctx.get('error', 'invalid')}"}
            )
            continue
        loc = tuple(err.get("loc", ()))
        entry = {"field": _location(loc), "message": err.get("msg", "invalid")}
        if err.get("type") == OUT_OF_RANGE_CODE:
            # http.schemas.Body names where inside the field the integer sits.
            inner = (err.get("ctx") or {}).get("path")
            if inner:
                entry["field"] = f"{entry['field']}.{inner}"
            entry["code"] = OUT_OF_RANGE_CODE
        if loc and loc[0] in {"query", "path", "header"}:
            entry["in"] = loc[0]
        errors.append(entry)
    if malformed:
        return 400, "the request body is not valid JSON", errors
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return 422, summary or "invalid request", errors


def _json_encode_failure(exc: BaseException) -> BaseException | None:
    """The orjson encoding error behind ``exc`` (SQLAlchemy wraps its serialiser's), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, orjson.JSONEncodeError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def unexpected(request: Request, exc: Exception) -> Response:
    """The answer to an exception no handler took: 422 for a value JSON cannot hold, else 500."""
    encoding = _json_encode_failure(exc)
    if encoding is not None:
        log.warning(
            "%s %s: a value cannot be written as JSON: %s",
            request.method,
            request.url.path,
            encoding,
            exc_info=exc,
        )
        return problem(422, f"a value in the request cannot be stored as JSON: {encoding}")
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "an unexpected error occurred; it has been logged")


class ContainErrors:
    """Answer an exception the handlers did not take here, and keep the connection open.

    The innermost user middleware: below it Starlette's ExceptionMiddleware has had its turn;
    above it an exception would reach ServerErrorMiddleware, which re-raises to uvicorn, which
    closes the connection. Once a response has started, only closing tells the client that it
    is cut short, so then the exception goes on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            await unexpected(Request(scope), exc)(scope, receive, send)


def allowed_methods(request: Request) -> list[str]:
    """The methods a 405 lists in Allow (RFC 9110): those the OpenAPI document gives this path.

    Where a concrete path and a templated one both match (``/devices/import`` and
    ``/devices/{device_id}``), the concrete one is the path (OpenAPI's rule). Starlette's own
    405 named only the methods of the first route whose path matched. A path outside the
    document (``/docs``) is tried against the routes, method by method.
    """
    path = request.scope.get("path", "")
    matching = [
        (template.count("{"), item)
        for template, item in request.app.openapi().get("paths", {}).items()
        if re.fullmatch(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)), path)
    ]
    if matching:
        fewest = min(params for params, _ in matching)
        return sorted(
            {
                method.upper()
                for params, item in matching
                if params == fewest
                for method in item
                if method.upper() in _METHODS
            }
        )
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def install(app: FastAPI) -> None:
    """Register handlers that turn every exception into problem+json (see the module)."""

    @app.exception_handler(RoostError)
    async def _roost_error(request: Request, exc: RoostError) -> Response:
        headers = {}
        if isinstance(exc, RateLimited | Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.detail)
        errors = exc.extra.get("errors") if exc.extra else None
        return problem(exc.status, exc.detail, title=exc.title, errors=errors, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _body_not_json(exc):
            return problem(415, "send the body as JSON with Content-Type: application/json")
        status, detail, errors = _validation_errors(exc)
        return problem(status, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem(exc.status_code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Only errors of the middleware outside ContainErrors get here.
        return unexpected(request, exc)

    # Added before every other middleware (create_app adds them after install): the innermost.
    app.add_middleware(ContainErrors)
