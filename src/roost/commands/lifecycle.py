"""The lifecycle of a command: its states and the moves allowed between them (pure).

DESIGN.md §3 "Commands"::

    QUEUED ─► SENT ─► DELIVERED ─► SUCCEEDED | FAILED
       │        │          └─────► TIMED_OUT
       └────────┴─► EXPIRED | CANCELED | TIMED_OUT

A terminal state never moves again.
"""

from __future__ import annotations

from enum import StrEnum

from roost.core.lifecycle import check_move, terminal


class CommandStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    EXPIRED = "EXPIRED"
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
COMMAND_TERMINAL = terminal(_C, COMMAND_MOVES)


def command_move(current: CommandStatus, target: CommandStatus) -> CommandStatus:
    """``target`` when a command may go there from ``current``; Conflict otherwise."""
    return check_move("command", COMMAND_MOVES, current, target)
