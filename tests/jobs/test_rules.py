"""Job specifications and device execution updates, checked (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from roost.errors import InvalidInput, PayloadTooLarge
from roost.jobs.lifecycle import ExecutionStatus
from roost.jobs.rules import (
    MAX_DOCUMENT_BYTES,
    TargetSelection,
    parse_device_update,
    parse_job_spec,
    parse_start_options,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def spec(**fields: Any) -> dict[str, Any]:
    return {"document": {"op": "x"}, "targets": {"devices": ["a"]}, **fields}


def test_a_full_spec_is_parsed() -> None:
    parsed = parse_job_spec(
        spec(
            targets={"devices": ["a", "a", "b"], "groups": ["g"], "query": {"tag": "ring:1"}},
            target_selection="CONTINUOUS",
            rollout={"max_per_minute": 30},
            abort=[{"failure_type": "ALL", "min_executed": 2, "threshold_pct": 10}],
            retries=[{"failure_type": "FAILED", "max_attempts": 3}],
            timeout_in_progress_s=60,
            schedule_at=NOW + timedelta(minutes=5),
            end_at=NOW + timedelta(hours=1),
        ),
        NOW,
    )
    assert parsed.targets.devices == ("a", "b")
    assert parsed.targets.query == {"tags": {"ring": "1"}}
    assert parsed.target_selection is TargetSelection.CONTINUOUS
    assert parsed.rollout.max_per_minute == 30
    assert len(parsed.abort) == 1 and len(parsed.retries) == 1


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"document": ["a"]}, "document"),
        ({"document": "text"}, "document"),
        ({"targets": {}}, "at least one"),
        ({"targets": {"devices": "a"}}, "list of ids"),
        ({"targets": {"devices": ["a"], "things": []}}, "unknown"),
        ({"targets": {"query": {"colour": "red"}}}, "unknown keys"),
        ({"targets": {"query": {}}}, "at least one"),
        ({"target_selection": "SOMETIMES"}, "SNAPSHOT"),
        ({"timeout_in_progress_s": 0}, "timeout_in_progress_s"),
        ({"timeout_in_progress_s": 8 * 24 * 3600}, "timeout_in_progress_s"),
        ({"end_at": NOW - timedelta(seconds=1)}, "end_at"),
        ({"schedule_at": NOW + timedelta(hours=2), "end_at": NOW + timedelta(hours=1)}, "end_at"),
        ({"description": 5}, "description"),
    ],
)
def test_bad_specs_are_refused_saying_why(fields: dict[str, Any], phrase: str) -> None:
    with pytest.raises(InvalidInput, match=phrase):
        parse_job_spec(spec(**fields), NOW)


def test_an_oversize_document_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_job_spec(spec(document={"x": "y" * MAX_DOCUMENT_BYTES}), NOW)


def test_device_updates() -> None:
    update = parse_device_update(
        {
            "status": "IN_PROGRESS",
            "status_details": {"p": 5},
            "expected_version": 3,
            "step_timeout_s": 30,
            "client_token": "c",
        }  # fmt: skip
    )
    assert update.status is ExecutionStatus.IN_PROGRESS
    assert (update.expected_version, update.step_timeout_s, update.client_token) == (3, 30, "c")
    for bad, phrase in [
        ("text", "object"),
        ({"status": "CANCELED"}, "status"),
        ({"status": "TIMED_OUT"}, "status"),
        ({}, "status"),
        ({"status": "FAILED", "expected_version": "3"}, "expected_version"),
        ({"status": "FAILED", "status_details": [1]}, "status_details"),
        ({"status": "FAILED", "step_timeout_s": -1}, "step_timeout_s"),
        ({"status": "FAILED", "colour": 1}, "unknown"),
    ]:
        with pytest.raises(InvalidInput, match=phrase):
            parse_device_update(bad)


def test_start_options() -> None:
    assert parse_start_options(None).step_timeout_s is None
    assert parse_start_options({"step_timeout_s": 5}).step_timeout_s == 5
    with pytest.raises(InvalidInput, match="unknown"):
        parse_start_options({"status": "IN_PROGRESS"})
