"""Lifecycles of commands and job executions: the states and the moves allowed between them (pure).

Commands (DESIGN.md §3 "Commands")::

    QUEUED ─► SENT ─► DELIVERED ─► SUCCEEDED | FAILED
       │        │          └─────► TIMED_OUT
       └────────┴─► EXPIRED | CANCELED | TIMED_OUT

Job executions follow AWS IoT Jobs: ``QUEUED → IN_PROGRESS → SUCCEEDED | FAILED | TIMED_OUT |
REJECTED``, ``QUEUED → REJECTED`` (the device declines at once), ``QUEUED | IN_PROGRESS →
CANCELED`` (a cancelled job; IN_PROGRESS only when forced), ``→ REMOVED`` (the device left the
target), and ``IN_PROGRESS → IN_PROGRESS`` (a progress update). A terminal state never moves again
(a retry is a new attempt, not a move).
"""

from __future__ import annotations

from enum import StrEnum

from roost.errors import Conflict


class CommandStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"


class ExecutionStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    REJECTED = "REJECTED"
    REMOVED = "REMOVED"
    CANCELED = "CANCELED"


_C = CommandStatus
COMMAND_MOVES: dict[CommandStatus, frozenset[CommandStatus]] = {
    _C.QUEUED: frozenset({_C.SENT, _C.EXPIRED, _C.CANCELED, _C.TIMED_OUT}),
    # SENT → SUCCEEDED/FAILED: a device may answer without acknowledging delivery first.
    _C.SENT: frozenset(
        {_C.DELIVERED, _C.SUCCEEDED, _C.FAILED, _C.TIMED_OUT, _C.EXPIRED, _C.CANCELED}
    ),
    _C.DELIVERED: frozenset({_C.SUCCEEDED, _C.FAILED, _C.TIMED_OUT, _C.CANCELED}),
}
COMMAND_TERMINAL = frozenset(set(_C) - set(COMMAND_MOVES))

_E = ExecutionStatus
EXECUTION_MOVES: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    _E.QUEUED: frozenset({_E.IN_PROGRESS, _E.REJECTED, _E.CANCELED, _E.REMOVED, _E.TIMED_OUT}),
    _E.IN_PROGRESS: frozenset(
        {
            _E.IN_PROGRESS,
            _E.SUCCEEDED,
            _E.FAILED,
            _E.TIMED_OUT,
            _E.REJECTED,
            _E.CANCELED,
            _E.REMOVED,
        }
    ),
}
EXECUTION_TERMINAL = frozenset(set(_E) - set(EXECUTION_MOVES))
# What a device may set itself (the rest is the service's doing: timeouts, cancel, removal).
DEVICE_EXECUTION_STATUSES = frozenset({_E.IN_PROGRESS, _E.SUCCEEDED, _E.FAILED, _E.REJECTED})
DEVICE_COMMAND_STATUSES = frozenset({_C.DELIVERED, _C.SUCCEEDED, _C.FAILED})


def command_move(current: CommandStatus, target: CommandStatus) -> CommandStatus:
    """``target`` when a command may go there from ``current``; Conflict otherwise."""
    if target not in COMMAND_MOVES.get(current, frozenset()):
        raise Conflict(_refusal("command", current, target, current in COMMAND_TERMINAL))
    return target


def execution_move(current: ExecutionStatus, target: ExecutionStatus) -> ExecutionStatus:
    """``target`` when a job execution may go there from ``current``; Conflict otherwise."""
    if target not in EXECUTION_MOVES.get(current, frozenset()):
        raise Conflict(_refusal("job execution", current, target, current in EXECUTION_TERMINAL))
    return target


def _refusal(what: str, current: str, target: str, terminal: bool) -> str:
    if terminal:
        return f"the {what} is {current}, which is final: it cannot become {target}"
    return f"a {what} cannot go from {current} to {target}"
