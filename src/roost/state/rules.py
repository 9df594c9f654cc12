"""Device state documents with AWS IoT Device Shadow semantics (pure).

A document holds what operators want (``desired``) and what the device says it has
(``reported``), a ``version`` that rises with every update, and per-field ``metadata`` (the time
each leaf was last written). An update is a partial document:

* objects merge key by key, recursively; any other value (arrays included) replaces the old one
  whole;
* ``null`` deletes a field (``"desired": null`` deletes every desired field); an object left
  empty by deletions disappears too;
* an update naming a ``version`` that is not the current one is refused (optimistic concurrency:
  the caller read a stale document).

The **delta** is every desired field that the reported side lacks or holds a different value of,
compared recursively through objects and whole for arrays and scalars. It is what a device must
do to match what is wanted, and what it receives on ``devices/{id}/state/delta``.

Limits keep documents small enough to send to a device in one message: a size in bytes of the
``desired`` and ``reported`` sections together, and a nesting depth (AWS: 8 KB and 6 levels).

Every device has the default document; named ones are made by their first update. A name goes
into URLs and MQTT topics, so it is a short slug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from roost.core.ids import is_slug
from roost.errors import Conflict, InvalidInput, PayloadTooLarge

SECTIONS = ("desired", "reported")
DEFAULT_MAX_BYTES = 8 * 1024
DEFAULT_MAX_DEPTH = 6
DEFAULT_STATE = "default"
# State names appear in URLs and MQTT topics: a slug, short.
MAX_NAME_LENGTH = 64


def check_name(name: str) -> str:
    """The state name, or InvalidInput when it cannot be one (it goes into URLs and topics)."""
    if len(name) > MAX_NAME_LENGTH or not is_slug(name):
        raise InvalidInput(
            f"a state name is 1-{MAX_NAME_LENGTH} characters: letters, digits and . _ : - "
            "(not starting with a symbol)"
        )
    return name


@dataclass(frozen=True, slots=True)
class StateLimits:
    """How large a state document may grow."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclass(slots=True)
class StateDocument:
    """One device's (named) state: desired, reported, their metadata, a version."""

    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=lambda: {"desired": {}, "reported": {}})
    version: int = 0

    @property
    def delta(self) -> dict[str, Any]:
        """Desired fields the reported side lacks or holds differently."""
        return delta(self.desired, self.reported)

    def as_dict(self) -> dict[str, Any]:
        """The document as the API answers it."""
        return {
            "desired": self.desired,
            "reported": self.reported,
            "delta": self.delta,
            "metadata": self.metadata,
            "version": self.version,
        }


def delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """The part of ``desired`` that ``reported`` does not match (objects compared recursively)."""
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = reported.get(key, _MISSING)
        if isinstance(want, dict) and isinstance(have, dict):
            inner = delta(want, have)
            if inner:
                out[key] = inner
        elif have is _MISSING or not _same(want, have):
            out[key] = want
    return out


def apply_update(
    doc: StateDocument,
    update: Any,
    *,
    now_ms: int,
    limits: StateLimits = StateLimits(),
) -> StateDocument:
    """The document after a partial update ``{"desired"?, "reported"?, "version"?}``.

    Raises InvalidInput for a malformed update, Conflict for a stale ``version``, and
    PayloadTooLarge when the result would exceed the limits. ``doc`` is left unchanged.
    """
    if not isinstance(update, dict):
        raise InvalidInput("a state update is a JSON object with desired and/or reported")
    unknown = sorted(set(update) - {*SECTIONS, "version"})
    if unknown:
        raise InvalidInput(f"unknown state field(s): {', '.join(unknown)}")
    if not any(section in update for section in SECTIONS):
        raise InvalidInput("a state update needs desired or reported")
    expected = update.get("version")
    if expected is not None:
        if type(expected) is not int or expected < 0:
            raise InvalidInput("version must be a non-negative integer")
        if expected != doc.version:
            raise Conflict(f"version {expected} is stale: the document is at version {doc.version}")
    sections = {"desired": doc.desired, "reported": doc.reported}
    metadata = {name: doc.metadata.get(name, {}) for name in SECTIONS}
    for name in SECTIONS:
        if name not in update:
            continue
        patch = update[name]
        if patch is None:
            sections[name], metadata[name] = {}, {}
            continue
        if not isinstance(patch, dict):
            raise InvalidInput(f"{name} must be an object or null")
        _check_depth(patch, limits.max_depth, name)
        _check_text(patch, name)
        sections[name], metadata[name] = _merge(sections[name], metadata[name], patch, now_ms)
    try:
        size = len(orjson.dumps({"desired": sections["desired"], "reported": sections["reported"]}))
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise InvalidInput(f"the state cannot be stored as JSON: {exc}") from exc
    if size > limits.max_bytes:
        raise PayloadTooLarge(
            f"the state would hold {size} bytes of desired and reported; the limit is "
            f"{limits.max_bytes}"
        )
    return StateDocument(
        desired=sections["desired"],
        reported=sections["reported"],
        metadata=metadata,
        version=doc.version + 1,
    )


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 and 1.0 are the same number, True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _merge(
    current: dict[str, Any], meta: dict[str, Any], patch: dict[str, Any], now_ms: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge ``patch`` into copies of ``current`` and its metadata."""
    out = dict(current)
    out_meta = dict(meta)
    for key, value in patch.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput("state field names must be non-empty strings")
        if value is None:
            out.pop(key, None)
            out_meta.pop(key, None)
            continue
        old = out.get(key)
        if isinstance(value, dict):
            base = old if isinstance(old, dict) else {}
            base_meta = out_meta.get(key) if isinstance(old, dict) else {}
            merged, merged_meta = _merge(base, base_meta or {}, value, now_ms)
            if merged:
                out[key], out_meta[key] = merged, merged_meta
            else:  # emptied (or an empty object written): nothing left to hold
                out.pop(key, None)
                out_meta.pop(key, None)
        else:
            out[key] = value
            out_meta[key] = {"timestamp": now_ms}
    return out, out_meta


def _check_depth(value: Any, limit: int, where: str, depth: int = 0) -> None:
    if isinstance(value, dict):
        if depth >= limit:
            raise InvalidInput(f"{where} nests deeper than {limit} levels")
        for key, inner in value.items():
            _check_depth(inner, limit, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for inner in value:
            _check_depth(inner, limit, where, depth + 1)


def _check_text(value: Any, where: str) -> None:
    """Refuse NUL characters in names and strings: PostgreSQL's JSONB cannot hold them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"{where}: text must not contain NUL (\\u0000) characters")
    elif isinstance(value, dict):
        for key, inner in value.items():
            _check_text(key, where)
            _check_text(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for inner in value:
            _check_text(inner, where)
