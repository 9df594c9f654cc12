"""Dynamic group filters: which devices a rule like ``{"site_id": "paris", "tags": {}}`` holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roost.errors import InvalidInput

# The device fields a dynamic group may select on, besides tags.
FILTER_FIELDS = ("site_id", "model_id", "firmware_id", "customer_id")


def validate_filter(rule: Any) -> dict[str, Any]:
    """Check a group filter's shape and answer it normalised, or raise InvalidInput saying why."""
    if not isinstance(rule, Mapping):
        raise InvalidInput("filter must be an object")
    unknown = set(rule) - {*FILTER_FIELDS, "tags"}
    if unknown:
        raise InvalidInput(
            f"filter has unknown keys {sorted(unknown)}; allowed: {[*FILTER_FIELDS, 'tags']}"
        )
    clean: dict[str, Any] = {}
    for field in FILTER_FIELDS:
        if field in rule and rule[field] is not None:
            if not isinstance(rule[field], str):
                raise InvalidInput(f"filter.{field} must be a string")
            clean[field] = rule[field]
    tags = rule.get("tags") or {}
    if not isinstance(tags, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise InvalidInput("filter.tags must map tag names to string values")
    if tags:
        clean["tags"] = dict(tags)
    if not clean:
        raise InvalidInput(
            "filter must select on at least one of site_id, model_id, "
            "firmware_id, customer_id or tags"
        )
    return clean


def matches(rule: Mapping[str, Any], device: Mapping[str, Any]) -> bool:
    """True when the device (with its ``tags`` mapping) satisfies every part of the rule."""
    for field in FILTER_FIELDS:
        if field in rule and device.get(field) != rule[field]:
            return False
    tags: Mapping[str, str] = device.get("tags") or {}
    return all(tags.get(key) == value for key, value in (rule.get("tags") or {}).items())
