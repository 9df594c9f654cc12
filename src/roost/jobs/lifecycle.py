"""The lifecycle of a job execution: its states and the moves allowed between them (pure).

Job executions follow AWS IoT Jobs: ``QUEUED → IN_PROGRESS → SUCCEEDED | FAILED | TIMED_OUT |
REJECTED``, ``QUEUED → REJECTED`` (the device declines at once), ``QUEUED | IN_PROGRESS →
CANCELED`` (a cancelled job; IN_PROGRESS only when forced), ``→ REMOVED`` (the device left the
target), and ``IN_PROGRESS → IN_PROGRESS`` (a progress update). A terminal state never moves again
(a retry is a new attempt, not a move).
"""

from __future__ import annotations

from enum import StrEnum

from roost.core.lifecycle import check_move, terminal


class ExecutionStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    REJECTED = "REJECTED"
    REMOVED = "REMOVED"
    CANCELED = "CANCELED"


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
EXECUTION_TERMINAL = terminal(_E, EXECUTION_MOVES)
# What a device may set itself (the rest is the service's doing: timeouts, cancel, removal).
DEVICE_EXECUTION_STATUSES = frozenset({_E.IN_PROGRESS, _E.SUCCEEDED, _E.FAILED, _E.REJECTED})


def execution_move(current: ExecutionStatus, target: ExecutionStatus) -> ExecutionStatus:
    """``target`` when a job execution may go there from ``current``; Conflict otherwise."""
    return check_move("job execution", EXECUTION_MOVES, current, target)
