"""Abuse limits: per-device message and byte rates, connections per device, and brute-force
protection of every device credential check (issue 5).

Every limit is kept in this process's memory, as the login limiter is (see
:mod:`roost.core.ratelimit`): behind a load balancer spreading devices over N Roost
processes a device gets at most N times its budget, which still stops a runaway or hostile one.
Each setting at 0 turns its limit off, and then costs nothing on the hot path: the MQTT session
holds no meter and skips the check.

* **Rates** (``device_max_messages_per_s``, ``device_max_bytes_per_s``): one token bucket per
  device for messages and one for bytes, shared by all its connections and doors (MQTT, HTTP,
  WebSocket), holding :data:`BURST_S` seconds' worth. A message that finds too few tokens is
  refused *before* it is taken, so nothing acknowledged is ever dropped: HTTP answers 429 with
  ``Retry-After``, the WebSocket door an error ack for that frame, MQTT 5 disconnects with 0x96
  (Message rate too high) for messages or 0x97 (Quota exceeded) for bytes, MQTT 3.1.1 closes.
  A message larger than the byte bucket passes when the bucket is full and leaves it in debt,
  so large messages are slowed to the average rate rather than refused for ever.
* **Connections** (``device_max_connections``): live MQTT connections plus WebSocket ingest
  streams per device in this process; one more is refused (MQTT 5 CONNACK 0x97, 3.1.1 return
  code 5, WebSocket 429 at the upgrade).
* **Failed credential checks** (``credential_max_failures``): bad, malformed, expired, forged or
  revoked credentials counted per source address over :data:`FAILURE_WINDOW_S`; at the limit the
  address is refused without checking what it sends until its oldest failure leaves the window
  (HTTP 429 + ``Retry-After``, MQTT 5 CONNACK 0x9F, 3.1.1 return code 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Final

from roost.config import Settings
from roost.core import redaction
from roost.core.ratelimit import FailureLimiter
from roost.errors import RateLimited

log = logging.getLogger(__name__)

#: The buckets hold this many seconds of the allowed rate: a device may send a short burst (a
#: batch saved while its network was down) at once, but not sustain more than the rate.
BURST_S: Final = 2.0
#: Failed credential checks are counted over this window (the setting is "per minute").
FAILURE_WINDOW_S: Final = 60.0
#: How often idle devices' buckets are forgotten; an idle bucket is full, so forgetting it
#: changes nothing but memory.
PRUNE_INTERVAL_S: Final = 60.0
#: What a connection refused for the per-device limit is told to wait: a slot frees when one of
#: the device's other connections ends, which the server cannot predict.
CONNECTION_RETRY_S: Final = 5

#: Verdicts of :meth:`DeviceUse.take` (0: the message passes).
MESSAGES_EXCEEDED: Final = 1
BYTES_EXCEEDED: Final = 2

_monotonic = time.monotonic


@dataclass(frozen=True, slots=True)
class RateRules:
    """The per-device rates and bucket sizes (0 rate: that bucket is off)."""

    messages_per_s: float
    bytes_per_s: float

    @property
    def message_burst(self) -> float:
        """Messages the bucket holds (at least one, so any positive rate lets a message in)."""
        return max(self.messages_per_s * BURST_S, 1.0)

    @property
    def byte_burst(self) -> float:
        """Bytes the bucket holds."""
        return self.bytes_per_s * BURST_S


class DeviceUse:
    """One device's buckets and live connection count in this process.

    A bucket that is off holds infinity, which no message empties: :meth:`take` then needs no
    branch per limit (it runs for every message of a limited device).
    """

    __slots__ = ("_byte_burst", "_byte_rate", "_msg_burst", "_msg_rate", "bytes",
                 "connections", "messages", "stamp")  # fmt: skip

    def __init__(self, rules: RateRules) -> None:
        self._msg_rate = rules.messages_per_s
        self._byte_rate = rules.bytes_per_s
        self._msg_burst = rules.message_burst if rules.messages_per_s else math.inf
        self._byte_burst = rules.byte_burst if rules.bytes_per_s else math.inf
        self.messages = self._msg_burst
        self.bytes = self._byte_burst
        self.stamp = _monotonic()
        self.connections = 0

    def take(self, nbytes: int, now: float | None = None) -> int:
        """Spend one message and ``nbytes`` at ``now`` (monotonic seconds; read when None); 0
        when they were there, else which limit refused (:data:`MESSAGES_EXCEEDED` or
        :data:`BYTES_EXCEEDED`; a refusal spends nothing)."""
        if now is None:
            now = _monotonic()
        elapsed = now - self.stamp
        if elapsed > 0.0:  # a clock read earlier by another door may be a little behind
            self.stamp = now
            messages = self.messages + elapsed * self._msg_rate
            if messages > self._msg_burst:
                messages = self._msg_burst
            have = self.bytes + elapsed * self._byte_rate
            if have > self._byte_burst:
                have = self._byte_burst
        else:
            messages = self.messages
            have = self.bytes
        if messages < 1.0:
            self.messages = messages
            self.bytes = have
            return MESSAGES_EXCEEDED
        if have < nbytes and have < self._byte_burst:
            self.messages = messages
            self.bytes = have
            return BYTES_EXCEEDED
        self.messages = messages - 1.0
        self.bytes = have - nbytes
        return 0

    def retry_after(self, nbytes: int) -> int:
        """Whole seconds (at least 1) until a message of ``nbytes`` would pass."""
        wait = 0.0
        if self._msg_rate:
            wait = (1.0 - self.messages) / self._msg_rate
        if self._byte_rate:
            need = min(float(nbytes), self._byte_burst)
            wait = max(wait, (need - self.bytes) / self._byte_rate)
        return max(1, math.ceil(wait))

    def idle(self, now: float) -> bool:
        """No connection, and both buckets full again (forgetting it loses nothing)."""
        return not self.connections and now - self.stamp >= BURST_S


class DeviceLimits:
    """The abuse limits of this process (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.rules = RateRules(
            max(settings.device_max_messages_per_s, 0.0), max(settings.device_max_bytes_per_s, 0.0)
        )
        #: Whether messages are metered at all (doors skip the check when not).
        self.rates_on = bool(self.rules.messages_per_s or self.rules.bytes_per_s)
        self.max_connections = max(settings.device_max_connections, 0)
        #: Whether devices' connections are tracked (any per-device limit is on).
        self.active = self.rates_on or bool(self.max_connections)
        self._uses: dict[int, DeviceUse] = {}
        self._failures = (
            FailureLimiter(settings.credential_max_failures, FAILURE_WINDOW_S)
            if settings.credential_max_failures > 0
            else None
        )
        self._pruner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Keep credentials out of the server's logs; forget idle devices' buckets now and then
        (server only)."""
        # Here because the server's logging is set up by now and this service starts with it;
        # the CLI may install it earlier too (idempotent).
        redaction.install()
        if self.active and self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_loop(), name="roost-limits-prune")

    async def close(self) -> None:
        """Stop the pruning."""
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None

    # -- rates -------------------------------------------------------------------------------

    def use(self, device_pk: int) -> DeviceUse:
        """The device's buckets and connection count (made on first use)."""
        use = self._uses.get(device_pk)
        if use is None:
            use = self._uses[device_pk] = DeviceUse(self.rules)
        return use

    def check_rate(self, device_pk: int, nbytes: int) -> None:
        """Spend one message of ``nbytes`` for the device, or raise :class:`RateLimited` (429)
        with the seconds to wait; does nothing when no rate limit is set."""
        if not self.rates_on:
            return
        use = self.use(device_pk)
        verdict = use.take(nbytes)
        if verdict:
            raise RateLimited(exceeded_reason(verdict), retry_after=use.retry_after(nbytes))

    # -- connections -------------------------------------------------------------------------

    def connect(self, device_pk: int) -> DeviceUse | None:
        """Count one more live connection of the device, or raise :class:`RateLimited` when it
        holds the most it may; None when nothing is tracked (every per-device limit off).

        Give what it answers back to :meth:`disconnect` when the connection ends.
        """
        if not self.active:
            return None
        use = self.use(device_pk)
        if self.max_connections and use.connections >= self.max_connections:
            raise RateLimited(
                f"this device already holds {use.connections} connection(s), the most allowed",
                retry_after=CONNECTION_RETRY_S,
            )
        use.connections += 1
        return use

    @staticmethod
    def disconnect(use: DeviceUse) -> None:
        """A connection counted by :meth:`connect` ended."""
        if use.connections > 0:
            use.connections -= 1

    # -- failed credential checks per source address -----------------------------------------

    def source_retry_after(self, address: str) -> int:
        """Seconds the address is still refused for failed credential checks; 0: not refused."""
        failures = self._failures
        if failures is None or not address:
            return 0
        return failures.retry_after(address)

    def check_source(self, address: str) -> None:
        """Raise :class:`RateLimited` (429) when the address is refused for now."""
        wait = self.source_retry_after(address)
        if wait:
            raise RateLimited(
                "too many failed credential checks from this address; try again later",
                retry_after=wait,
            )

    def credential_failed(self, address: str) -> None:
        """Count a failed credential check from ``address``."""
        failures = self._failures
        if failures is not None and address:
            failures.record_failure(address)
            if failures.retry_after(address):
                log.info(
                    "refusing %s for %d s: %d failed credential checks within %.0f s",
                    address,
                    failures.retry_after(address),
                    failures.max_failures,
                    FAILURE_WINDOW_S,
                )

    # -- upkeep ------------------------------------------------------------------------------

    def prune(self, now: float | None = None) -> None:
        """Forget devices with no connection whose buckets have filled up again."""
        now = _monotonic() if now is None else now
        for pk in [pk for pk, use in self._uses.items() if use.idle(now)]:
            del self._uses[pk]

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            self.prune()


def exceeded_reason(verdict: int) -> str:
    """What a refused message is told, by :meth:`DeviceUse.take`'s verdict."""
    if verdict == BYTES_EXCEEDED:
        return "this device is over its byte rate limit; slow down"
    return "this device is over its message rate limit; slow down"


def source_host(peer: str) -> str:
    """The address part of a connection's peer as the MQTT doors note it (``host:port``,
    ``ws:host:port``, an IPv6 ``::1:port``): the key failed checks are counted by."""
    if peer.startswith("ws:"):
        peer = peer[3:]
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer
