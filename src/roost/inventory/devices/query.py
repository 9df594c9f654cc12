"""Selecting devices: the filters of a device query, device tags and their rules, group SQL.

A :class:`DeviceQuery` says which devices a list, an export or a fleet query wants; tags are
filtered as ``key:value`` or ``key`` (:func:`parse_tag_filter`) and written as a checked object
(:func:`check_tags`). :func:`group_condition` is the SQL that selects a group's members, static
or dynamic, which other rooms use to address a group of devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from roost.errors import InvalidInput
from roost.inventory.rules import FILTER_FIELDS
from roost.inventory.tables import device_tags, devices, group_members

DEVICE_STATUSES = ("online", "offline", "never_seen")
MAX_TAGS = 64
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """Filters over devices; ``tags`` are (key, value) pairs, value None meaning "has the tag"."""

    site_id: str | None = None
    model_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    group: str | None = None
    tags: tuple[tuple[str, str | None], ...] = ()
    q: str | None = None
    status: str | None = None  # presence: online, offline, never_seen


def parse_tag_filter(raw: str) -> tuple[str, str | None]:
    """``key:value`` → (key, value); a bare ``key`` → (key, None)."""
    key, sep, value = raw.partition(":")
    if not key:
        raise InvalidInput(f"tag filter {raw!r} must look like key:value or key")
    return key, (value if sep else None)


def check_tags(tags: Any, *, allow_null: bool) -> dict[str, str | None]:
    """Validate a tags object; with ``allow_null`` a null value means "remove this tag"."""
    if not isinstance(tags, Mapping):
        raise InvalidInput("tags must be an object mapping tag names to string values")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"a device has at most {MAX_TAGS} tags")
    clean: dict[str, str | None] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_KEY or ":" in key:
            raise InvalidInput(f"tag name {key!r} must be 1-{MAX_TAG_KEY} characters without ':'")
        if value is None and allow_null:
            clean[key] = None
        elif isinstance(value, str) and len(value) <= MAX_TAG_VALUE:
            clean[key] = value
        elif isinstance(value, bool | int | float):
            clean[key] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            raise InvalidInput(
                f"tag {key!r} must have a string value of at most {MAX_TAG_VALUE} characters"
            )
    return clean


def tag_condition(key: str, value: str | None) -> sa.ColumnElement[bool]:
    """SQL selecting the devices that have tag ``key`` (with ``value`` unless it is None)."""
    cond = sa.and_(device_tags.c.device_pk == devices.c.pk, device_tags.c.key == key)
    if value is not None:
        cond = sa.and_(cond, device_tags.c.value == value)
    return sa.exists(sa.select(1).select_from(device_tags).where(cond))


def group_condition(
    tenant_id: str,
    group: Mapping[str, Any],
    device_pk: sa.ColumnElement[int] = devices.c.pk,
) -> sa.ColumnElement[bool]:
    """SQL that selects the members of a group, static or dynamic.

    A static group's condition is on ``device_pk`` alone (a query of sensors may pass
    ``sensors.c.device_pk`` and skip the devices join); a dynamic one reads ``devices`` columns.
    """
    rule = group.get("filter")
    if rule is None:
        return device_pk.in_(
            sa.select(group_members.c.device_pk).where(
                group_members.c.tenant_id == tenant_id, group_members.c.group_id == group["id"]
            )
        )
    parts = [devices.c[f] == rule[f] for f in FILTER_FIELDS if f in rule]
    parts += [tag_condition(k, v) for k, v in (rule.get("tags") or {}).items()]
    return sa.and_(*parts)
