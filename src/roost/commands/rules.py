"""What a command is made of, and what a device may answer (pure validation).

Shared by the command service, the schedules that fire commands, and the HTTP and MQTT doors,
so every door refuses the same things with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from roost.commands.lifecycle import CommandStatus
from roost.errors import InvalidInput, PayloadTooLarge

#: A command travels in one MQTT packet; small devices read it into a fixed buffer.
MAX_PARAMS_BYTES = 16 * 1024
#: A result is kept in the row and shown in every list page that holds the command.
MAX_RESULT_BYTES = 64 * 1024
#: A device may take up to a week to answer (a field unit that reports once a day).
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_NAME = 128
#: What a device may answer; IN_PROGRESS and DELIVERED are interim acknowledgements.
DEVICE_FINAL = {"SUCCEEDED": CommandStatus.SUCCEEDED, "FAILED": CommandStatus.FAILED}
DEVICE_INTERIM = frozenset({"IN_PROGRESS", "DELIVERED"})


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What a user (or a schedule) asks a device to do."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: int | None = None
    expires_at: datetime | None = None
    schedule_at: datetime | None = None


def check_name(name: Any) -> str:
    """A command or schedule name: 1-128 characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidInput(f"name must be 1-{MAX_NAME} characters")
    return name


def check_params(params: Any) -> dict[str, Any]:
    """Command parameters: a JSON object (default empty) of at most MAX_PARAMS_BYTES."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object")
    if len(orjson.dumps(params)) > MAX_PARAMS_BYTES:
        raise PayloadTooLarge(f"params are over {MAX_PARAMS_BYTES} bytes of JSON")
    return params


def check_timeout(timeout_s: Any, name: str = "timeout_s") -> int:
    """A timeout in whole seconds, 1 s to a week."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int):
        raise InvalidInput(f"{name} must be a whole number of seconds")
    if not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"{name} must be between 1 and {MAX_TIMEOUT_S} seconds")
    return timeout_s


def parse_response(body: Any) -> tuple[str, Any, dict[str, Any] | None]:
    """A device's answer ``{"status", "result"?, "status_details"?}`` → its three parts."""
    if not isinstance(body, dict):
        raise InvalidInput('a command response must be a JSON object like {"status": "SUCCEEDED"}')
    unknown = set(body) - {"status", "result", "status_details"}
    if unknown:
        raise InvalidInput(
            f"unknown fields in the command response: {', '.join(sorted(map(str, unknown)))}"
        )
    status = body.get("status")
    if status not in DEVICE_FINAL and status not in DEVICE_INTERIM:
        raise InvalidInput(
            "status must be SUCCEEDED or FAILED (or IN_PROGRESS / DELIVERED as an interim "
            f"acknowledgement), not {status!r}"
        )
    details = body.get("status_details")
    if details is not None and not isinstance(details, dict):
        raise InvalidInput("status_details must be a JSON object")
    result = body.get("result")
    if len(orjson.dumps([result, details])) > MAX_RESULT_BYTES:
        raise PayloadTooLarge(f"the result is over {MAX_RESULT_BYTES} bytes of JSON")
    return status, result, details


def device_message(row: dict[str, Any]) -> dict[str, Any]:
    """What the device receives: on MQTT and from the HTTP long-poll alike.

    A schedule's command also names the schedule and the fire it is (``schedule_id``,
    ``fire_at``: the schedule's due time, kept in the command's ``schedule_at``), so an agent
    that ran that fire itself while offline answers with what it did instead of running it again.
    """
    message = {"id": row["id"], "name": row["name"], "params": row["params"]}
    if row.get("schedule_id") is not None and row.get("schedule_at") is not None:
        message["schedule_id"] = row["schedule_id"]
        message["fire_at"] = rfc3339(row["schedule_at"])
    return message


def rfc3339(at: datetime) -> str:
    """``at`` as RFC 3339 in UTC with a ``Z`` (what the HTTP API writes)."""
    text = at.astimezone(UTC).isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text
