"""Inbound flow control: how much a connection may make us hold before we stop reading it.

A device's QoS 1/2 PUBLISH is acknowledged once its data is committed, never before (see
:mod:`roost.mqtt.inbound`); until then the message holds our memory. Instead of buffering what a
fast or misbehaving fleet sends, Roost pushes back, with three budgets:

* **messages per connection**: the MQTT 5 Receive Maximum we advertise in CONNACK
  (``GatewayConfig.receive_maximum``). A v5 client that exceeds it is disconnected (0x93, as the
  specification says); a 3.1.1 client cannot be told, so it is simply not read until our
  acknowledgements bring it back under;
* **points per connection** (:data:`CONNECTION_MAX_UNACKED_POINTS`): past it, reading pauses,
  whatever the version, until commits acknowledge enough of them;
* **points for the process**: the ingest writer's budget (``ROOST_INGEST_MAX_UNACKED_POINTS``).
  A PUBLISH that finds it used up blocks its session (reading paused, the message waits, never
  dropped) until a commit makes room.

A paused connection then holds at most one read of packets decoded but not yet taken: the
server reads :data:`READ_BUFFER_BYTES` at a time, and the rest waits in the kernel's socket
buffer, and then in the client, whose writes block. Reading also pauses while the session awaits
something (authentication, a slow submit) and while the client does not read what we send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from roost.mqtt.packets import PROTOCOL_V5

if TYPE_CHECKING:
    from roost.mqtt.session import MQTTSession

# Reasons reading is paused (a bit each): reading resumes when none is left.
PAUSE_BLOCKED: Final = 1  # awaiting authentication, a slow submit or writer capacity
PAUSE_WRITING: Final = 2  # the transport's outgoing buffer is full
PAUSE_INFLIGHT: Final = 4  # too many PUBLISHes wait for their acknowledgement (3.1.1)
PAUSE_POINTS: Final = 8  # too many points of this connection wait for their commit

# Points one connection may have accepted and not yet acknowledged. A tenth of the default
# process budget (500,000): one connection (a gateway relaying a fleet, ten 5,000-point
# messages) still keeps commits busy on its own, and no handful of connections can take the
# whole budget from the rest of the fleet.
CONNECTION_MAX_UNACKED_POINTS: Final = 50_000
# Bytes read from a socket at a time (the event loop's default is 256 KiB). Everything read is
# decoded at once, so this bounds what a paused connection holds: 32 KiB is ~70 PUBLISHes of a
# 20-value message, and 500 connections pushed back hold 16 MB, not 128 MB, of them.
READ_BUFFER_BYTES: Final = 32 * 1024


def count_inflight(session: MQTTSession) -> bool:
    """Count one more unacknowledged QoS 1/2 PUBLISH; False when a v5 client exceeded our
    Receive Maximum (a 3.1.1 client is paused instead)."""
    session.inflight_in += 1
    if session.inflight_in > session.gateway.config.receive_maximum:
        if session.level == PROTOCOL_V5:
            return False
        session.pause(PAUSE_INFLIGHT)
    return True


def release_inflight(session: MQTTSession, count: int) -> None:
    """``count`` received QoS 1/2 messages are acknowledged for good (PUBACK or PUBCOMP)."""
    session.inflight_in = max(0, session.inflight_in - count)
    if session.inflight_in < session.gateway.config.receive_maximum:
        session.resume(PAUSE_INFLIGHT)


def charge_points(session: MQTTSession, points: int) -> None:
    """``points`` more of this connection wait for their commit: pause reading past the budget."""
    session.unacked_points += points
    if session.unacked_points > CONNECTION_MAX_UNACKED_POINTS:
        session.pause(PAUSE_POINTS)


def release_points(session: MQTTSession, points: int) -> None:
    """``points`` of this connection were acknowledged: read again once under the budget."""
    session.unacked_points = max(0, session.unacked_points - points)
    if session.unacked_points <= CONNECTION_MAX_UNACKED_POINTS:
        session.resume(PAUSE_POINTS)
