"""Job rollout maths (pure): release rates, abort rules and retry decisions.

These follow AWS IoT Jobs (``jobExecutionsRolloutConfig``, ``abortConfig``,
``jobExecutionsRetryConfig``). Nothing here reads a clock or a database: the job service passes
the stored figures and the time in, and stores what comes out, so that a restart continues with
exactly the same state.

Rate limiting is the generic cell rate algorithm (GCRA): a job stores its *theoretical arrival
time* (``tat``, epoch seconds). A release is allowed at ``now`` when ``tat - burst_allowance <=
now``; each release moves ``tat`` to ``max(tat, now) + 60 / rate``. Over any window of ``w``
seconds a job therefore releases at most ``w * rate / 60 + burst`` executions, however often or
late the passes run, and an idle job does not save up releases beyond ``burst``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from roost.errors import InvalidInput
from roost.jobs.lifecycle import ExecutionStatus

# A release burst of one second's worth of the rate (at least one execution): passes run about
# once per timer interval, and a burst of one second lets a pass that ran a little late catch up
# without ever exceeding the rate by more than one second's share.
BURST_WINDOW_S = 1.0
# AWS's bounds: maxPerMinute 1..1000, numberOfRetries 0..10, incrementFactor 1.1..5.
MAX_PER_MINUTE = 1000
MAX_RETRIES = 10
MIN_INCREMENT_FACTOR = 1.1
MAX_INCREMENT_FACTOR = 5.0


class FailureType(StrEnum):
    """Which terminal outcomes an abort or retry rule counts."""

    FAILED = "FAILED"
    REJECTED = "REJECTED"
    TIMED_OUT = "TIMED_OUT"
    ALL = "ALL"


_E = ExecutionStatus
_FAILURES: dict[FailureType, frozenset[ExecutionStatus]] = {
    FailureType.FAILED: frozenset({_E.FAILED}),
    FailureType.REJECTED: frozenset({_E.REJECTED}),
    FailureType.TIMED_OUT: frozenset({_E.TIMED_OUT}),
    FailureType.ALL: frozenset({_E.FAILED, _E.REJECTED, _E.TIMED_OUT}),
}
#: Terminal outcomes that count as "executed" for abort rules (cancelled or removed ones did not
#: run to an outcome).
EXECUTED = frozenset({_E.SUCCEEDED, _E.FAILED, _E.REJECTED, _E.TIMED_OUT})
#: What a retry rule may name (a rejection is the device's decision: never retried).
RETRYABLE = frozenset({FailureType.FAILED, FailureType.TIMED_OUT, FailureType.ALL})


# -- rollout rate ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rollout:
    """How fast a job's executions are released to devices (None rates: no limit)."""

    max_per_minute: float | None = None
    base_rate_per_minute: float | None = None  # exponential rollout when set
    increment_factor: float = 1.0
    notified_step: int | None = None  # raise the rate after this many more released ...
    succeeded_step: int | None = None  # ... or this many more succeeded executions

    @property
    def limited(self) -> bool:
        """Whether releases are rate limited at all."""
        return self.max_per_minute is not None or self.base_rate_per_minute is not None

    def rate(self, notified: int, succeeded: int) -> float | None:
        """Executions per minute allowed now, after ``notified`` releases and ``succeeded``."""
        if self.base_rate_per_minute is None:
            return self.max_per_minute
        step = self.notified_step or self.succeeded_step
        count = notified if self.notified_step else succeeded
        raises = count // step if step else 0
        rate = self.base_rate_per_minute * self.increment_factor**raises
        if self.max_per_minute is not None:
            rate = min(rate, self.max_per_minute)
        return rate


def parse_rollout(raw: Mapping[str, Any] | None) -> Rollout:
    """A job's ``rollout`` object checked and turned into a :class:`Rollout`."""
    if raw is None:
        return Rollout()
    if not isinstance(raw, Mapping):
        raise InvalidInput("rollout must be an object")
    max_pm = raw.get("max_per_minute")
    if max_pm is not None:
        max_pm = _rate(max_pm, "rollout.max_per_minute")
    expo = raw.get("exponential")
    if expo is None:
        return Rollout(max_per_minute=max_pm)
    if not isinstance(expo, Mapping):
        raise InvalidInput("rollout.exponential must be an object")
    base = _rate(expo.get("base_rate_per_minute"), "rollout.exponential.base_rate_per_minute")
    factor = expo.get("increment_factor")
    if (
        not isinstance(factor, int | float)
        or isinstance(factor, bool)
        or not MIN_INCREMENT_FACTOR <= factor <= MAX_INCREMENT_FACTOR
    ):
        raise InvalidInput(
            f"rollout.exponential.increment_factor must be a number from "
            f"{MIN_INCREMENT_FACTOR} to {MAX_INCREMENT_FACTOR}"
        )
    criteria = expo.get("rate_increase_criteria")
    if not isinstance(criteria, Mapping) or len(criteria) != 1:
        raise InvalidInput(
            "rollout.exponential.rate_increase_criteria must name exactly one of "
            "number_of_notified_things or number_of_succeeded_things"
        )
    (name, value), *_ = criteria.items()
    if name not in ("number_of_notified_things", "number_of_succeeded_things"):
        raise InvalidInput(f"unknown rate_increase_criteria {name!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"rate_increase_criteria.{name} must be a positive integer")
    if max_pm is not None and max_pm < base:
        raise InvalidInput("rollout.max_per_minute must be at least the exponential base rate")
    return Rollout(
        max_per_minute=max_pm,
        base_rate_per_minute=base,
        increment_factor=float(factor),
        notified_step=value if name == "number_of_notified_things" else None,
        succeeded_step=value if name == "number_of_succeeded_things" else None,
    )


def _rate(value: Any, label: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 1 <= value <= MAX_PER_MINUTE
    ):
        raise InvalidInput(f"{label} must be a number from 1 to {MAX_PER_MINUTE}")
    return float(value)


def burst_for(rate_per_minute: float) -> int:
    """How many releases may happen at once at this rate (see :data:`BURST_WINDOW_S`)."""
    return max(1, math.floor(rate_per_minute * BURST_WINDOW_S / 60))


def releases_due(
    now: float, tat: float | None, rate_per_minute: float, wanted: int
) -> tuple[int, float | None]:
    """How many of ``wanted`` executions to release at ``now``, and the new stored ``tat``.

    ``tat`` None means nothing was released yet. The answer's ``tat`` is unchanged when nothing
    is released.
    """
    if wanted <= 0:
        return 0, tat
    interval = 60.0 / rate_per_minute
    allowance = (burst_for(rate_per_minute) - 1) * interval
    current = now if tat is None else tat
    count = 0
    while count < wanted and current - allowance <= now:
        current = max(current, now) + interval
        count += 1
    return count, (current if count else tat)


def next_release_at(tat: float | None, rate_per_minute: float) -> float | None:
    """When the next release becomes allowed (epoch seconds); None when allowed now."""
    if tat is None:
        return None
    return tat - (burst_for(rate_per_minute) - 1) * 60.0 / rate_per_minute


# -- abort -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AbortRule:
    """Cancel the job when ``threshold_pct`` % of at least ``min_executed`` executed failed."""

    failure_type: FailureType
    min_executed: int
    threshold_pct: float

    def describe(self) -> str:
        """The rule in words (the cancelled job's reason)."""
        return (
            f"abort rule: {self.failure_type} reached {self.threshold_pct:g}% "
            f"of at least {self.min_executed} executed"
        )


def parse_abort(raw: Any) -> list[AbortRule]:
    """A job's ``abort`` list checked."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("abort must be a list of rules")
    rules = []
    for i, item in enumerate(raw):
        label = f"abort[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{label} must be an object")
        unknown = set(item) - {"failure_type", "action", "min_executed", "threshold_pct"}
        if unknown:
            raise InvalidInput(f"{label} has unknown fields {sorted(unknown)}")
        if item.get("action", "CANCEL") != "CANCEL":
            raise InvalidInput(f"{label}.action must be CANCEL")
        failure = _failure_type(item.get("failure_type"), label, set(FailureType))
        min_executed = item.get("min_executed")
        if not isinstance(min_executed, int) or isinstance(min_executed, bool) or min_executed < 1:
            raise InvalidInput(f"{label}.min_executed must be a positive integer")
        pct = item.get("threshold_pct")
        if not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 < pct <= 100:
            raise InvalidInput(f"{label}.threshold_pct must be a number above 0, at most 100")
        rules.append(AbortRule(failure, min_executed, float(pct)))
    return rules


def abort_rule_hit(rules: Iterable[AbortRule], counts: Mapping[str, int]) -> AbortRule | None:
    """The first rule the execution counts (status → number) meet, or None."""
    executed = sum(counts.get(s, 0) for s in EXECUTED)
    for rule in rules:
        if executed < rule.min_executed:
            continue
        failed = sum(counts.get(s, 0) for s in _FAILURES[rule.failure_type])
        if failed * 100 >= rule.threshold_pct * executed:
            return rule
    return None


# -- retries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryRule:
    """Retry executions that end in ``failure_type`` up to ``max_attempts`` more times."""

    failure_type: FailureType
    max_attempts: int


def parse_retries(raw: Any) -> list[RetryRule]:
    """A job's ``retries`` list checked (one rule per failure type)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("retries must be a list of rules")
    rules: list[RetryRule] = []
    for i, item in enumerate(raw):
        label = f"retries[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{label} must be an object")
        unknown = set(item) - {"failure_type", "max_attempts"}
        if unknown:
            raise InvalidInput(f"{label} has unknown fields {sorted(unknown)}")
        failure = _failure_type(item.get("failure_type"), label, RETRYABLE)
        attempts = item.get("max_attempts")
        if (
            not isinstance(attempts, int)
            or isinstance(attempts, bool)
            or not 0 <= attempts <= MAX_RETRIES
        ):
            raise InvalidInput(f"{label}.max_attempts must be an integer from 0 to {MAX_RETRIES}")
        if any(r.failure_type == failure for r in rules):
            raise InvalidInput(f"{label}: a second rule for {failure}")
        rules.append(RetryRule(failure, attempts))
    return rules


def retry_allowed(
    rules: Iterable[RetryRule], outcome: ExecutionStatus, retried: Mapping[str, int]
) -> bool:
    """Whether an attempt that ended in ``outcome`` is retried.

    ``retried`` counts the retries already made per outcome (``FAILED``, ``TIMED_OUT``). Every
    rule that covers the outcome must have retries left: its own type counts retries after that
    outcome, ``ALL`` counts every retry (as AWS counts ``numberOfRetries`` per failure type).
    """
    if outcome not in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT):
        return False
    kind = FailureType(outcome.value)
    applicable = [r for r in rules if r.failure_type in (FailureType.ALL, kind)]
    if not applicable:
        return False
    for rule in applicable:
        if rule.failure_type == FailureType.ALL:
            used = sum(retried.values())
        else:
            used = retried.get(rule.failure_type.value, 0)
        if used >= rule.max_attempts:
            return False
    return True


def _failure_type(
    value: Any, label: str, allowed: set[FailureType] | frozenset[FailureType]
) -> FailureType:
    names = sorted(t.value for t in allowed)
    if value not in names:
        raise InvalidInput(f"{label}.failure_type must be one of {names}")
    return FailureType(value)
