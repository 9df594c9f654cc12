"""Incremental sans-IO MQTT 3.1 / 3.1.1 / 5.0 decoder: bytes in, packet objects out.

See :mod:`roost.mqtt.codec` for the contract (roles, protocol level learning, errors) and the
performance notes on the inlined PUBLISH hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, TypeAlias

from roost.mqtt.packets import (
    _AUTH,
    _CONNECT_PROTOCOLS,
    _DISCONNECT,
    _PINGREQ,
    _PINGRESP,
    _PUB_DUP,
    _PUB_QOS,
    _PUB_RETAIN,
    EMPTY_PROPERTIES,
    MAX_PACKET_SIZE,
    PROTOCOL_V5,
    PROTOCOL_V31,
    PROTOCOL_V311,
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTProtocolError,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    _malformed,
    _protocol,
    _PublishBuilder,
)
from roost.mqtt.topics import validate_topic_name
from roost.mqtt.wire import (
    _P_ACK,
    _P_AUTH,
    _P_CONNACK,
    _P_CONNECT,
    _P_DISCONNECT,
    _P_PUBLISH,
    _P_SUBSCRIBE,
    _P_UNSUBSCRIBE,
    _P_WILL,
    _RC_AUTH,
    _RC_CONNACK_V5,
    _RC_DISCONNECT,
    _RC_PUBACK,
    _RC_PUBREL,
    _RC_SUBACK_V5,
    _RC_SUBACK_V311,
    _RC_UNSUBACK,
    _check_end,
    _check_packet_id,
    _check_reason,
    _read_bin,
    _read_properties,
    _read_str,
    _read_u16,
)

_Parser: TypeAlias = Callable[["MQTTDecoder", bytes, int, int, int], Packet]

#: Required fixed-header flags for every packet type except PUBLISH.
_REQUIRED_FLAGS: Final[dict[int, int]] = {
    1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0,
}  # fmt: skip
_CLIENT_TO_SERVER: Final = (1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15)
_SERVER_TO_CLIENT: Final = (2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15)
_TOPIC_CACHE_SIZE: Final = 4096


class MQTTDecoder:
    """Incremental sans-IO MQTT decoder: ``feed(bytes)`` returns the completed packets."""

    __slots__ = (
        "_buf",
        "_connect_seen",
        "_error",
        "_level",
        "_need",
        "_role",
        "_table",
        "_topics",
        "max_packet_size",
    )

    def __init__(
        self,
        max_packet_size: int = MAX_PACKET_SIZE,
        *,
        role: Literal["server", "client"] = "server",
        protocol_level: int | None = None,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        if protocol_level not in (None, PROTOCOL_V31, PROTOCOL_V311, PROTOCOL_V5):
            raise ValueError(f"unsupported protocol level {protocol_level!r}")
        if protocol_level == PROTOCOL_V31:
            protocol_level = PROTOCOL_V311  # the same bytes after CONNECT
        if role == "client" and protocol_level is None:
            raise ValueError("a client-role decoder needs the protocol_level it connected with")
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2")
        #: Packets whose total size (fixed header included) exceeds this raise 0x95.
        self.max_packet_size = max_packet_size
        self._role = role
        self._level = protocol_level
        self._connect_seen = False
        self._error: MQTTProtocolError | None = None
        self._buf = bytearray()
        self._need = 2
        self._topics: dict[bytes, str] = {}
        self._table: tuple[_Parser | None, ...] = ()
        self._build_table()

    @property
    def protocol_level(self) -> int | None:
        """Protocol level in use (4 or 5; MQTT 3.1 decodes as 4), or ``None`` before CONNECT."""
        return self._level

    @property
    def role(self) -> str:
        """``"server"`` (decodes client packets) or ``"client"`` (decodes server packets)."""
        return self._role

    @property
    def buffered(self) -> int:
        """Number of bytes held back as an incomplete packet."""
        return len(self._buf)

    def _build_table(self) -> None:
        """Pick the first-byte → parser table for the current state (shared by all decoders:
        a table per decoder would be most of an idle connection's memory)."""
        key = (self._role, self._level, self._connect_seen)
        table = _TABLES.get(key)
        if table is None:
            table = _TABLES[key] = _make_table(*key)
        self._table = table

    def _header_error(self, b0: int) -> MQTTProtocolError:
        ptype = b0 >> 4
        flags = b0 & 0x0F
        if ptype == 0 or (ptype == 15 and self._level == PROTOCOL_V311):
            return _malformed(f"reserved packet type {ptype}")
        if ptype == 3:
            qos = (flags >> 1) & 3
            if qos == 3:
                return _malformed("PUBLISH with QoS 3")
            if qos == 0 and flags & 8:
                return _malformed("PUBLISH QoS 0 with DUP set")
        elif flags != _REQUIRED_FLAGS[ptype]:
            return _malformed(f"invalid fixed header flags for packet type {ptype}")
        if self._level is None:
            return _protocol("first packet must be CONNECT")
        if ptype == 1 and self._connect_seen:
            return _protocol("second CONNECT")
        return _protocol(f"packet type {ptype} not allowed in this direction")

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes; return the packets they complete (raises MQTTProtocolError)."""
        if self._error is not None:
            raise MQTTProtocolError(
                self._error.reason_code, f"decoder unusable after earlier error: {self._error}"
            )
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        elif not data:
            return []
        out: list[Packet] = []
        try:
            self._parse(data, out)
        except MQTTProtocolError as exc:
            exc.packets = out
            self._error = exc
            buf.clear()
            raise
        return out

    def _parse(self, data: bytes, out: list[Packet]) -> None:
        append = out.append
        table = self._table
        parse_publish = _PARSE_PUBLISH
        topics = self._topics
        max_size = self.max_packet_size
        v5 = self._level == PROTOCOL_V5
        new = object.__new__
        builder = _PublishBuilder
        pub_qos = _PUB_QOS
        pub_retain = _PUB_RETAIN
        pub_dup = _PUB_DUP
        empty = EMPTY_PROPERTIES
        n = len(data)
        pos = 0
        need = 2
        while pos < n:
            b0 = data[pos]
            handler = table[b0]
            if handler is None:
                raise self._header_error(b0)
            if pos + 1 >= n:
                need = 2
                break
            rl = data[pos + 1]
            if rl < 0x80:
                hl = 2
            else:
                rl, hl = self._long_length(data, pos, n)
                if not hl:
                    need = n - pos + 1
                    break
            total = hl + rl
            if total > max_size:
                raise MQTTProtocolError(
                    ReasonCode.PACKET_TOO_LARGE,
                    f"packet of {total} bytes exceeds maximum packet size {max_size}",
                )
            end = pos + total
            if end > n:
                need = total
                break
            if handler is parse_publish:
                # Inlined hot path; mirrors MQTTDecoder._parse_publish.
                p = pos + hl
                if rl < 2:
                    raise _malformed("truncated PUBLISH topic")
                q = p + 2 + ((data[p] << 8) | data[p + 1])
                if q > end:
                    raise _malformed("PUBLISH topic exceeds packet")
                raw = data[p + 2 : q]
                topic = topics.get(raw)
                if topic is None:
                    topic = self._topic_name(raw)
                qos = pub_qos[b0]
                packet_id: int | None = None
                if qos:
                    if q + 2 > end:
                        raise _malformed("truncated PUBLISH packet identifier")
                    packet_id = (data[q] << 8) | data[q + 1]
                    if not packet_id:
                        raise _protocol("packet identifier 0")
                    q += 2
                props = empty
                if v5:
                    if q >= end:
                        raise _malformed("missing PUBLISH property length")
                    if data[q]:
                        props, q = self._publish_properties(data, q, end)
                    else:
                        q += 1
                    if not topic and props.topic_alias is None:
                        raise _protocol("empty topic name without topic alias")
                elif not topic:
                    raise _protocol("empty topic name")
                # Same as _build_publish(), inlined.
                pkt = new(builder)
                pkt.topic = topic
                pkt.payload = data[q:end]
                pkt.qos = qos
                pkt.retain = pub_retain[b0]
                pkt.dup = pub_dup[b0]
                pkt.packet_id = packet_id
                pkt.properties = props
                pkt.__class__ = Publish  # type: ignore[assignment]
                append(pkt)  # type: ignore[arg-type]
            else:
                append(handler(self, data, pos + hl, end, b0))
                # CONNECT changes the protocol level and the acceptable packets.
                table = self._table
                v5 = self._level == PROTOCOL_V5
            pos = end
        if pos < n:
            self._buf += memoryview(data)[pos:]
        self._need = need

    @staticmethod
    def _long_length(data: bytes, pos: int, n: int) -> tuple[int, int]:
        """Decode a multi-byte remaining length: (value, header length) or (0, 0) if partial."""
        value = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= n:
                return 0, 0
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                if not b:
                    raise _malformed("non-minimal remaining length")
                return value, i - pos
            shift += 7
            if shift == 28:
                raise _malformed("remaining length longer than 4 bytes")

    def _topic_name(self, raw: bytes) -> str:
        """Validate a PUBLISH topic name and remember it."""
        try:
            topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("invalid UTF-8 topic name") from None
        if "\x00" in topic:
            raise _malformed("U+0000 in topic name")
        if "+" in topic or "#" in topic:
            raise MQTTProtocolError(ReasonCode.TOPIC_NAME_INVALID, "wildcard in topic name")
        topics = self._topics
        if len(topics) >= _TOPIC_CACHE_SIZE:
            topics.clear()
        topics[raw] = topic
        return topic

    def _publish_properties(self, data: bytes, p: int, end: int) -> tuple[Properties, int]:
        props, p = _read_properties(data, p, end, _P_PUBLISH)
        if props.subscription_identifiers and self._role == "server":
            raise _protocol("subscription identifier in PUBLISH from a client")
        return props, p

    # -- per packet type parsers: (data, body start, body end, first byte) -> packet -----

    def _parse_connect(self, data: bytes, p: int, end: int, b0: int) -> Connect:
        name_len = _read_u16(data, p, end)
        p += 2
        name = data[p : p + name_len]
        p += name_len
        if p >= end:
            raise _malformed("truncated CONNECT variable header")
        level = data[p]
        if (name, level) not in _CONNECT_PROTOCOLS:
            raise UnsupportedProtocolVersion(name.decode("utf-8", "replace"), level)
        # 3.1's packets are 3.1.1's; the Connect keeps level 3 so the session can tell them apart.
        self._level = PROTOCOL_V311 if level == PROTOCOL_V31 else level
        v5 = level == PROTOCOL_V5
        if p + 4 > end:
            raise _malformed("truncated CONNECT variable header")
        flags = data[p + 1]
        keep_alive = (data[p + 2] << 8) | data[p + 3]
        p += 4
        if flags & 0x01:
            raise _malformed("CONNECT reserved flag set")
        will_flag = flags & 0x04
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        has_password = flags & 0x40
        has_username = flags & 0x80
        clean_start = bool(flags & 0x02)
        if will_qos == 3:
            raise _malformed("will QoS 3")
        if not will_flag and (will_qos or will_retain):
            raise _malformed("will QoS/retain set without will flag")
        if has_password and not has_username and not v5:
            raise _malformed("password flag without user name flag")
        props = EMPTY_PROPERTIES
        if v5:
            props, p = _read_properties(data, p, end, _P_CONNECT)
            if props.authentication_data is not None and props.authentication_method is None:
                raise _protocol("authentication data without authentication method")
        client_id, p = _read_str(data, p, end)
        if not v5 and not client_id and not clean_start:
            raise MQTTProtocolError(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                "empty client identifier requires clean session",
            )
        will = None
        if will_flag:
            will_props = EMPTY_PROPERTIES
            if v5:
                will_props, p = _read_properties(data, p, end, _P_WILL)
            will_topic, p = _read_str(data, p, end)
            validate_topic_name(will_topic)
            will_payload, p = _read_bin(data, p, end)
            will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
        username = None
        if has_username:
            username, p = _read_str(data, p, end)
        password = None
        if has_password:
            password, p = _read_bin(data, p, end)
        _check_end(p, end)
        if self._role == "server":
            self._connect_seen = True
        self._build_table()
        return Connect(client_id, level, clean_start, keep_alive, username, password, will, props)

    def _parse_connack(self, data: bytes, p: int, end: int, b0: int) -> Connack:
        if end - p < 2:
            raise _malformed("truncated CONNACK")
        flags = data[p]
        code = data[p + 1]
        p += 2
        if flags & 0xFE:
            raise _malformed("CONNACK reserved flags set")
        props = EMPTY_PROPERTIES
        if self._level == PROTOCOL_V5:
            _check_reason(code, _RC_CONNACK_V5)
            props, p = _read_properties(data, p, end, _P_CONNACK)
        elif code > 5:
            raise _malformed(f"invalid CONNACK return code {code}")
        _check_end(p, end)
        if flags and code:
            raise _protocol("session present with a refusing CONNACK")
        return Connack(bool(flags), code, props)

    def _parse_publish(self, data: bytes, p: int, end: int, b0: int) -> Publish:
        # Reference (non-inlined) implementation; _parse inlines the same logic.
        if end - p < 2:
            raise _malformed("truncated PUBLISH topic")
        q = p + 2 + ((data[p] << 8) | data[p + 1])
        if q > end:
            raise _malformed("PUBLISH topic exceeds packet")
        raw = data[p + 2 : q]
        topic = self._topics.get(raw)
        if topic is None:
            topic = self._topic_name(raw)
        qos = (b0 >> 1) & 3
        packet_id = None
        if qos:
            packet_id = _check_packet_id(_read_u16(data, q, end))
            q += 2
        props = EMPTY_PROPERTIES
        if self._level == PROTOCOL_V5:
            props, q = self._publish_properties(data, q, end)
            if not topic and props.topic_alias is None:
                raise _protocol("empty topic name without topic alias")
        elif not topic:
            raise _protocol("empty topic name")
        return Publish(topic, data[q:end], qos, bool(b0 & 1), bool(b0 & 8), packet_id, props)

    def _parse_ack(
        self, data: bytes, p: int, end: int, valid: frozenset[int]
    ) -> tuple[int, int, Properties]:
        """Parse the shared PUBACK/PUBREC/PUBREL/PUBCOMP layout."""
        packet_id = _check_packet_id(_read_u16(data, p, end))
        size = end - p
        if self._level != PROTOCOL_V5:
            if size != 2:
                raise _malformed("acknowledgement remaining length must be 2")
            return packet_id, 0, EMPTY_PROPERTIES
        if size == 2:
            return packet_id, 0, EMPTY_PROPERTIES
        code = data[p + 2]
        _check_reason(code, valid)
        if size == 3:
            return packet_id, code, EMPTY_PROPERTIES
        props, p = _read_properties(data, p + 3, end, _P_ACK)
        _check_end(p, end)
        return packet_id, code, props

    def _parse_puback(self, data: bytes, p: int, end: int, b0: int) -> Puback:
        return Puback(*self._parse_ack(data, p, end, _RC_PUBACK))

    def _parse_pubrec(self, data: bytes, p: int, end: int, b0: int) -> Pubrec:
        return Pubrec(*self._parse_ack(data, p, end, _RC_PUBACK))

    def _parse_pubrel(self, data: bytes, p: int, end: int, b0: int) -> Pubrel:
        return Pubrel(*self._parse_ack(data, p, end, _RC_PUBREL))

    def _parse_pubcomp(self, data: bytes, p: int, end: int, b0: int) -> Pubcomp:
        return Pubcomp(*self._parse_ack(data, p, end, _RC_PUBREL))

    def _parse_subscribe(self, data: bytes, p: int, end: int, b0: int) -> Subscribe:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        v5 = self._level == PROTOCOL_V5
        props = EMPTY_PROPERTIES
        if v5:
            props, p = _read_properties(data, p, end, _P_SUBSCRIBE)
            if len(props.subscription_identifiers) > 1:
                raise _protocol("more than one subscription identifier in SUBSCRIBE")
        subs: list[Subscription] = []
        while p < end:
            topic_filter, p = _read_str(data, p, end)
            if p >= end:
                raise _malformed("missing subscription options")
            options = data[p]
            p += 1
            qos = options & 0x03
            if v5:
                if options & 0xC0:
                    raise _malformed("subscription options reserved bits set")
                if qos == 3:
                    raise _protocol("subscription QoS 3")
                retain_handling = (options >> 4) & 0x03
                if retain_handling == 3:
                    raise _protocol("retain handling 3")
                no_local = bool(options & 0x04)
                if no_local and topic_filter.startswith("$share/"):
                    raise _protocol("no local on a shared subscription")
                subs.append(
                    Subscription(topic_filter, qos, no_local, bool(options & 0x08), retain_handling)
                )
            else:
                if options & 0xFC or qos == 3:
                    raise _malformed("invalid requested QoS byte")
                subs.append(Subscription(topic_filter, qos))
        if not subs:
            raise _protocol("SUBSCRIBE without subscriptions")
        return Subscribe(packet_id, tuple(subs), props)

    def _parse_suback(self, data: bytes, p: int, end: int, b0: int) -> Suback:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        props = EMPTY_PROPERTIES
        valid = _RC_SUBACK_V311
        if self._level == PROTOCOL_V5:
            props, p = _read_properties(data, p, end, _P_ACK)
            valid = _RC_SUBACK_V5
        codes = tuple(data[p:end])
        if not codes:
            raise _protocol("SUBACK without reason codes")
        for code in codes:
            _check_reason(code, valid)
        return Suback(packet_id, codes, props)

    def _parse_unsubscribe(self, data: bytes, p: int, end: int, b0: int) -> Unsubscribe:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        props = EMPTY_PROPERTIES
        if self._level == PROTOCOL_V5:
            props, p = _read_properties(data, p, end, _P_UNSUBSCRIBE)
        filters: list[str] = []
        while p < end:
            topic_filter, p = _read_str(data, p, end)
            filters.append(topic_filter)
        if not filters:
            raise _protocol("UNSUBSCRIBE without topic filters")
        return Unsubscribe(packet_id, tuple(filters), props)

    def _parse_unsuback(self, data: bytes, p: int, end: int, b0: int) -> Unsuback:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        if self._level != PROTOCOL_V5:
            _check_end(p, end)
            return Unsuback(packet_id)
        props, p = _read_properties(data, p, end, _P_ACK)
        codes = tuple(data[p:end])
        if not codes:
            raise _protocol("UNSUBACK without reason codes")
        for code in codes:
            _check_reason(code, _RC_UNSUBACK)
        return Unsuback(packet_id, codes, props)

    def _parse_pingreq(self, data: bytes, p: int, end: int, b0: int) -> Pingreq:
        _check_end(p, end)
        return _PINGREQ

    def _parse_pingresp(self, data: bytes, p: int, end: int, b0: int) -> Pingresp:
        _check_end(p, end)
        return _PINGRESP

    def _parse_reason_props(
        self, data: bytes, p: int, end: int, valid: frozenset[int], allowed: frozenset[int]
    ) -> tuple[int, Properties]:
        """Parse the optional reason code + optional properties of DISCONNECT/AUTH."""
        if p == end:
            return 0, EMPTY_PROPERTIES
        code = data[p]
        _check_reason(code, valid)
        if p + 1 == end:
            return code, EMPTY_PROPERTIES
        props, p = _read_properties(data, p + 1, end, allowed)
        _check_end(p, end)
        return code, props

    def _parse_disconnect(self, data: bytes, p: int, end: int, b0: int) -> Disconnect:
        if self._level != PROTOCOL_V5:
            _check_end(p, end)
            return _DISCONNECT
        code, props = self._parse_reason_props(data, p, end, _RC_DISCONNECT, _P_DISCONNECT)
        if not code and props is EMPTY_PROPERTIES:
            return _DISCONNECT
        return Disconnect(code, props)

    def _parse_auth(self, data: bytes, p: int, end: int, b0: int) -> Auth:
        code, props = self._parse_reason_props(data, p, end, _RC_AUTH, _P_AUTH)
        if not code and props is EMPTY_PROPERTIES:
            return _AUTH
        return Auth(code, props)


_PARSE_PUBLISH: Final = MQTTDecoder._parse_publish
_PARSERS: Final[dict[int, _Parser]] = {
    1: MQTTDecoder._parse_connect,
    2: MQTTDecoder._parse_connack,
    3: MQTTDecoder._parse_publish,
    4: MQTTDecoder._parse_puback,
    5: MQTTDecoder._parse_pubrec,
    6: MQTTDecoder._parse_pubrel,
    7: MQTTDecoder._parse_pubcomp,
    8: MQTTDecoder._parse_subscribe,
    9: MQTTDecoder._parse_suback,
    10: MQTTDecoder._parse_unsubscribe,
    11: MQTTDecoder._parse_unsuback,
    12: MQTTDecoder._parse_pingreq,
    13: MQTTDecoder._parse_pingresp,
    14: MQTTDecoder._parse_disconnect,
    15: MQTTDecoder._parse_auth,
}
#: (role, protocol level, CONNECT seen) → first byte → parser, or None when not acceptable.
_TABLES: dict[tuple[str, int | None, bool], tuple[_Parser | None, ...]] = {}


def _make_table(role: str, level: int | None, connect_seen: bool) -> tuple[_Parser | None, ...]:
    table: list[_Parser | None] = [None] * 256
    if level is None:
        table[0x10] = _PARSERS[1]
        return tuple(table)
    types = _CLIENT_TO_SERVER if role == "server" else _SERVER_TO_CLIENT
    for ptype in types:
        if ptype == 15 and level == PROTOCOL_V311:
            continue
        if ptype == 1 and connect_seen:
            continue
        parser = _PARSERS[ptype]
        if ptype == 3:
            for flags in range(16):
                qos = (flags >> 1) & 3
                if qos == 3 or (qos == 0 and flags & 8):
                    continue
                table[0x30 | flags] = parser
        else:
            table[(ptype << 4) | _REQUIRED_FLAGS[ptype]] = parser
    return tuple(table)
