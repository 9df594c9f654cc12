"""The HTTP server protocol with request-head limits (slow and oversized heads).

uvicorn's httptools protocol waits for a request head as long as a client cares to send it and
buffers all of it, so idle, dribbling (slowloris) and endless heads pin connections and memory.
:class:`HeadLimitedHttpProtocol` bounds the head (:class:`HttpLimits`, from ``ROOST_HTTP_*``):

* **time**: from the moment the server waits for a head (the connection opens, or a response
  ends with nothing pipelined) the whole head must arrive within ``head_timeout_s``, a deadline
  that new bytes do not push back. A connection that sent nothing is closed quietly (an idle
  keep-alive connection is closed sooner, by uvicorn's keep-alive timer); one that sent part of
  a head is answered 408 and closed;
* **size**: a head (request target and header lines) over ``max_head_bytes``, or with more than
  ``max_headers`` header fields, is answered 431 and the connection closed. The parser hands
  over a header only once it is whole, so an unfinished head is measured by the bytes received
  for it, counting whole reads after the one it began in: it is refused at most one read
  (256 KiB) past the limit, whatever it holds.

Refusals are problem+json, like every other answer of the API. After one, the connection reads
and drops what the client still sends for a moment before it closes, so that the answer is not
lost to the reset that a close with unread data causes (a client sends its whole head before it
reads). A refusal that finds an earlier pipelined request's response under way waits for it.

The per-request cost is a few attribute checks and one timer per response, beside uvicorn's own
keep-alive timer. The HTTPS listener's protocol subclasses this one.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from roost.errors import ConfigError

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from roost.config import Settings

log = logging.getLogger(__name__)

# What a header line adds to its name and value on the wire (": " and CRLF): the parser gives
# names and values only, and the limit is on the head as sent.
HEADER_LINE_OVERHEAD = 4
# How long a refused connection keeps reading (and dropping) what the client still sends before
# it closes: a close with unread data makes the kernel reset the connection, which can destroy the
# answer before the client reads it; two seconds cover the round trip of any link we serve.
REFUSAL_LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long a request head may take to arrive, how large it may be, and how long an idle
    keep-alive connection stays open (uvicorn's own timer)."""

    head_timeout_s: float
    max_head_bytes: int
    max_headers: int
    keepalive_timeout_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The ``ROOST_HTTP_*`` limits, refused with the variable's name when out of range."""
        limits = cls(
            head_timeout_s=settings.http_head_timeout_s,
            max_head_bytes=settings.http_max_head_bytes,
            max_headers=settings.http_max_headers,
            keepalive_timeout_s=settings.http_keepalive_timeout_s,
        )
        for name, value in (
            ("ROOST_HTTP_HEAD_TIMEOUT_S", limits.head_timeout_s),
            ("ROOST_HTTP_MAX_HEAD_BYTES", limits.max_head_bytes),
            ("ROOST_HTTP_MAX_HEADERS", limits.max_headers),
            ("ROOST_HTTP_KEEPALIVE_TIMEOUT_S", limits.keepalive_timeout_s),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be above 0 (it is {value})")
        return limits


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a refused head (never leaves this module)."""


def refusal(status: int, detail: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole problem+json response that closes the connection."""
    phrase = http.HTTPStatus(status).phrase
    body = orjson.dumps(
        {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    )
    lines = [f"HTTP/1.1 {status} {phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/problem+json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class HeadLimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol that bounds how long a request head takes and how large it is.

    Make the class uvicorn builds per connection with :meth:`with_limits`.
    """

    limits: ClassVar[HttpLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.limits
        self._head_timeout_s = limits.head_timeout_s
        self._max_head_bytes = limits.max_head_bytes
        self._max_headers = limits.max_headers
        # A head is awaited or under way (from the end of the previous request, or the start):
        # its deadline (once the previous response is sent), how many bytes came for it in whole
        # reads, and how many of those may precede it (the read the previous request ended in).
        self._awaiting_head = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_received = 0
        self._head_slack = 0
        self._read_len = 0
        # The previous request's header list: the parser starts a new one when a head begins.
        self._finished_headers: list[tuple[bytes, bytes]] | None = None
        # Once refused: the answer, still to send while an earlier request's response is under way.
        self._refused = False
        self._refusal: bytes | None = None
        self._linger: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[Self]:
        """This protocol with these limits: the class to give uvicorn (``http=``)."""
        return cast("type[Self]", type(cls.__name__, (cls,), {"limits": limits}))

    # -- the connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start waiting for the first head."""
        super().connection_made(transport)
        self._awaiting_head = True
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the connection's timers."""
        super().connection_lost(exc)
        self._stop_deadline()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``, counting the bytes of an unfinished head."""
        if self._refused:
            return  # lingering after a refusal: what the client still sends is dropped
        self._read_len = len(data)
        if self._awaiting_head:
            self._head_received += self._read_len
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:
                return  # a callback refused the head and stopped the parser
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._awaiting_head:
            if self._head_received - self._head_slack > self._max_head_bytes:
                self._refuse_too_large()
            elif self.headers is not None and len(self.headers) > self._max_headers:
                self._refuse_too_many()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        """The head is whole: stop its deadline, and refuse it when it is too large."""
        self._awaiting_head = False
        self._stop_deadline()
        if len(self.headers) > self._max_headers:
            self._refuse_too_many()
            raise _HeadRefused
        # Whole reads bound the head from above: only a head that may be too large is measured.
        if self._head_received > self._max_head_bytes and self._head_size() > self._max_head_bytes:
            self._refuse_too_large()
            raise _HeadRefused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is all in: what follows is the next head, counted from the read it may
        begin in; its deadline starts now if the response has been sent already."""
        super().on_message_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return  # the connection is handed to the WebSocket protocol
        self._awaiting_head = True
        self._head_received = self._head_slack = self._read_len
        self._finished_headers = self.headers
        if not self.pipeline and self.cycle.response_complete:
            self._await_head()

    def on_response_complete(self) -> None:
        """A response ended: with nothing pipelined and the request all in, wait for the next
        head (or send a refusal that waited for this response)."""
        idle = not self.pipeline
        super().on_response_complete()
        if not idle or self.transport.is_closing():
            return
        if self._refusal is not None:
            self._send_refusal()
        elif self._awaiting_head:
            self._await_head()

    # -- limits ---------------------------------------------------------------------------------

    def _await_head(self) -> None:
        """Start the deadline of the head now awaited (or under way), unless it runs already."""
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._head_timeout_s, self._head_late)

    def _stop_deadline(self) -> None:
        """Cancel the head deadline, if one runs."""
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_size(self) -> int:
        """The size of the whole head that was just parsed, about as it was sent."""
        headers = self.headers
        return (
            len(self.url)
            + sum(len(name) + len(value) for name, value in headers)
            + HEADER_LINE_OVERHEAD * len(headers)
        )

    def _head_late(self) -> None:
        """The head deadline passed: close, answering 408 if part of a head came."""
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.headers is not self._finished_headers:
            self._refuse(408, f"the request head did not arrive within {self._head_timeout_s:g} s")
        else:
            self.transport.close()

    def _refuse_too_large(self) -> None:
        """Answer a head over the size limit with 431."""
        self._refuse(431, f"the request head is larger than the {self._max_head_bytes}-byte limit")

    def _refuse_too_many(self) -> None:
        """Answer a head with too many header fields with 431."""
        self._refuse(431, f"the request has more than {self._max_headers} header fields")

    def _refuse(self, status: int, detail: str) -> None:
        """Stop reading requests on this connection and answer ``status``, once any response
        under way has been sent."""
        self._refused = True
        self._awaiting_head = False
        self._stop_deadline()
        # Nothing more is parsed here: let go of what the refused head buffered. (An earlier
        # request's scope, which a response under way may still use, is not touched.)
        self.parser = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        self.headers = []
        self.url = b""
        log.debug("HTTP %s to %s: %s", status, self.client, detail)
        self._refusal = refusal(status, detail, self.server_state.default_headers)
        busy = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if not busy:
            self._send_refusal()

    def _send_refusal(self) -> None:
        """Write the refusal, end the connection's output, and close after lingering a moment."""
        transport = self.transport
        if self._refusal is None or transport.is_closing():
            return
        transport.write(self._refusal)
        self._refusal = None
        if transport.can_write_eof():
            transport.write_eof()  # the client sees the answer end at once (not over TLS)
        self._linger = self.loop.call_later(REFUSAL_LINGER_S, transport.close)
