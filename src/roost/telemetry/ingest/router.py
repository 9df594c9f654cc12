"""The device doors of HTTP: POST telemetry and events, and the WebSocket ingest stream.

The body goes straight to the ingest service as bytes (no model validation layer: the ingest
normaliser is the validation, and it is the fast path). 200 only once the data is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any, Protocol

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response, WebSocket
from starlette.websockets import WebSocketDisconnect

from roost.core import metrics
from roost.core.device_identity import (
    DeviceIdentity,
)
from roost.core.devicelink import DeviceLink
from roost.core.ingest import CommitTicket, IngestKind, IngestOutcome
from roost.core.json import OUT_OF_RANGE_CODE
from roost.core.limits import DeviceLimits
from roost.credentials.authenticator import DeviceAuthenticator
from roost.credentials.dependencies import DeviceDep, authenticate_device, websocket_credential
from roost.errors import (
    RateLimited,
    RoostError,
    Unavailable,
    ValidationFailed,
)
from roost.http import schemas as s
from roost.http.deps import get_roost
from roost.http.problems import deny
from roost.telemetry.ingest.service import IngestService
from roost.telemetry.schemas import IngestAck

log = logging.getLogger(__name__)


class Services(Protocol):
    """What the ingest doors use of the running Roost."""

    @property
    def device_auth(self) -> DeviceAuthenticator: ...

    @property
    def ingest(self) -> IngestService: ...

    @property
    def limits(self) -> DeviceLimits: ...

    @property
    def link(self) -> DeviceLink: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["ingest (devices)"])

# How long an HTTP request may wait for the writer to take it before answering 503.
BUSY_WAIT_S = 1.0
# WebSocket frames acknowledged ahead of the oldest unfinished one; the socket is not read
# further until acknowledgements catch up (pushback on a fast sender).
WS_MAX_IN_FLIGHT = 256

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One item or a JSON array of them, optionally wrapped as "
        '{"msg_id": …, "items": [...]}',
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]
                },
                "examples": {
                    "sensor form": {
                        "value": {"sensor_id": "4", "timestamp": 1526717967, "value": 21.5}
                    },
                    "key/value form": {
                        "value": {
                            "ts": 1526717967000,
                            "values": {"temperature": 21.5, "door": True},
                        }
                    },
                    "plain": {"value": {"temperature": 21.5}},
                },
            }
        },
    }
}
_EVENT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One event or a JSON array of them; each has an 'event' type",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {
                    "event": "product_pickup",
                    "product_id": 162,
                    "ts": "2026-11-22T08:30:00Z",
                },
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": s.Problem, "description": "Malformed JSON or refused items (all listed)"},
    401: {"model": s.Problem},
    403: {"model": s.Problem},
    413: {"model": s.Problem},
    422: {"model": s.Problem, "description": "An integer beyond 64 bits (its field is named)"},
    503: {"model": s.Problem, "description": "Overloaded or the store is down: retry"},
}


async def ingest_message(
    roost: Services, identity: DeviceIdentity, kind: IngestKind, payload: bytes, msg_id: str | None
) -> IngestOutcome:
    """Take one message through the ingest service, waiting a moment for room when busy."""
    recv_ns = time.time_ns()
    ctx = await roost.ingest.device_context(identity)
    outcome = roost.ingest.try_submit(ctx, kind, payload, recv_ns, msg_id)
    if outcome is None:
        outcome = await roost.ingest.submit(ctx, kind, payload, recv_ns, msg_id)
    if outcome.busy:
        try:
            await asyncio.wait_for(roost.ingest.wait_for_capacity(), BUSY_WAIT_S)
        except TimeoutError:
            raise Unavailable("ingest is overloaded; retry shortly", retry_after=1) from None
        outcome = await roost.ingest.submit(ctx, kind, payload, recv_ns, msg_id)
        if outcome.busy:
            raise Unavailable("ingest is overloaded; retry shortly", retry_after=1)
    return outcome


def refusal(outcome: IngestOutcome) -> ValidationFailed:
    """The 400 answer for a message with refused items (422 for an integer beyond 64 bits, the
    answer every door gives it: :mod:`roost.core.json`)."""
    first = outcome.errors[0]
    where = f" ({first['field']})" if first.get("field") else ""
    detail = (
        f"{len(outcome.errors)} item(s) refused, nothing stored; "
        f"item {first['index']}{where}: {first['message']}"
    )
    status = 422 if first.get("code") == OUT_OF_RANGE_CODE else 400
    return ValidationFailed(detail, outcome.errors, status=status)


async def _answer(
    roost: Services,
    identity: DeviceIdentity,
    kind: IngestKind,
    request: Request,
    idempotency_key: str | None,
) -> Response:
    payload = await request.body()
    try:
        roost.limits.check_rate(identity.device_pk, len(payload))  # 429 before anything is taken
        outcome = await ingest_message(roost, identity, kind, payload, idempotency_key)
    except RoostError as exc:
        metrics.ingest_error("http", exc)
        raise
    metrics.ingest_outcome("http", outcome)
    if outcome.errors:
        raise refusal(outcome)
    if outcome.ticket is not None:
        try:
            await outcome.ticket
        except Exception:
            raise Unavailable("the data could not be stored; retry", retry_after=1) from None
    body = {"accepted": outcome.accepted, "events": outcome.events}
    if outcome.duplicate:
        body["duplicate"] = True
    if outcome.flagged_future:
        body["flagged_future"] = outcome.flagged_future
    return Response(orjson.dumps(body), media_type="application/json")


IdempotencyKey = Annotated[
    str | None,
    Header(max_length=200, description="A message id: a resend with the same key is stored once"),
]


@router.post(
    "/telemetry",
    response_model=IngestAck,
    operation_id="ingest_telemetry",
    summary="Send telemetry (device token): one item or an array, sensor or key/value form",
    responses=_ERRORS,
    openapi_extra=_BODY_DOC,
)
async def post_telemetry(
    roost: RoostDep, identity: DeviceDep, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    return await _answer(roost, identity, IngestKind.TELEMETRY, request, idempotency_key)


@router.post(
    "/events",
    response_model=IngestAck,
    operation_id="ingest_events",
    summary="Send events (device token): JSON documents with an 'event' type",
    responses=_ERRORS,
    openapi_extra=_EVENT_DOC,
)
async def post_events(
    roost: RoostDep, identity: DeviceDep, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    return await _answer(roost, identity, IngestKind.EVENTS, request, idempotency_key)


# -- WebSocket ----------------------------------------------------------------------------------


@router.websocket("/ws/ingest", name="ws_ingest")
async def ws_ingest(websocket: WebSocket) -> None:
    """Device telemetry over a WebSocket: each text frame is a message; each gets an ack.

    ``{"ack": <frame number, from 1>, "accepted": n, "events": e}`` once the frame's data is
    durable, or ``{"ack": n, "error": {problem}}``. Acks come in frame order.
    """
    roost: Services = websocket.app.state.roost
    client = websocket.client
    try:
        identity = await authenticate_device(
            roost, lambda: websocket_credential(websocket), client.host if client else ""
        )
        use = roost.limits.connect(identity.device_pk)  # a stream counts as a connection
    except RoostError as exc:
        await deny(websocket, exc)
        return
    try:
        await websocket.accept()
    except BaseException:
        if use is not None:
            roost.limits.disconnect(use)
        raise
    requested = websocket.query_params.get("kind", "auto")
    kind = (
        IngestKind(requested) if requested in {"telemetry", "events", "auto"} else IngestKind.AUTO
    )
    pending: asyncio.Queue[tuple[int, IngestOutcome | RoostError] | None] = asyncio.Queue(
        WS_MAX_IN_FLIGHT
    )
    closed = asyncio.Event()
    revoked = roost.device_auth.on_revoked_scoped(identity.credential_id, closed.set)

    async def acknowledge() -> None:
        while (item := await pending.get()) is not None:
            seq, result = item
            if isinstance(result, RoostError):
                reply: dict[str, Any] = {"ack": seq, "error": _problem_body(result)}
            else:
                reply = {"ack": seq, "accepted": result.accepted, "events": result.events}
                if result.duplicate:
                    reply["duplicate"] = True
                ticket: CommitTicket | None = result.ticket
                if ticket is not None:
                    try:
                        await ticket
                    except Exception:
                        reply = {
                            "ack": seq,
                            "error": _problem_body(
                                Unavailable("the data could not be stored; send it again")
                            ),
                        }
            await websocket.send_text(orjson.dumps(reply).decode())

    acker = asyncio.create_task(acknowledge())
    seq = 0
    rates_on = roost.limits.rates_on
    roost.link.connection(identity, True)  # presence: online while the socket is open
    try:
        while not closed.is_set():
            receive = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait(
                {receive, asyncio.ensure_future(closed.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if receive not in done:
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            payload = data.encode() if data is not None else message.get("bytes") or b""
            seq += 1
            result: IngestOutcome | RoostError
            try:
                if rates_on:  # refused frames get a 429 ack and nothing is taken
                    roost.limits.check_rate(identity.device_pk, len(payload))
                outcome = await ingest_message(roost, identity, kind, payload, None)
                metrics.ingest_outcome("websocket", outcome)
                result = refusal(outcome) if outcome.errors else outcome
            except RoostError as exc:
                metrics.ingest_error("websocket", exc)
                result = exc
            await pending.put((seq, result))
    except WebSocketDisconnect:
        pass
    finally:
        if use is not None:
            roost.limits.disconnect(use)
        roost.link.connection(identity, False)
        revoked()
        await pending.put(None)
        try:
            await acker
        except Exception:  # the client went away; nothing left to tell it
            pass
        if closed.is_set():
            try:
                await websocket.close(code=1008, reason="credential revoked")
            except Exception:
                pass


def _problem_body(exc: RoostError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
    }
    errors = exc.extra.get("errors") if exc.extra else None
    if errors:
        body["errors"] = errors
    if isinstance(exc, RateLimited | Unavailable):
        body["retry_after"] = exc.retry_after
    return body
