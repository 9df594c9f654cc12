"""Command and job-execution lifecycles: every allowed move, and every other one refused."""

from __future__ import annotations

import itertools

import pytest

from roost.commands.lifecycle import COMMAND_MOVES, COMMAND_TERMINAL, CommandStatus, command_move
from roost.errors import Conflict
from roost.jobs.lifecycle import (
    EXECUTION_MOVES,
    EXECUTION_TERMINAL,
    ExecutionStatus,
    execution_move,
)

C, E = CommandStatus, ExecutionStatus


def test_terminal_states_are_exactly_the_finished_ones() -> None:
    assert COMMAND_TERMINAL == {
        C.SUCCEEDED, C.FAILED, C.TIMED_OUT, C.EXPIRED, C.CANCELED,
    }  # fmt: skip
    assert EXECUTION_TERMINAL == {
        E.SUCCEEDED, E.FAILED, E.TIMED_OUT, E.REJECTED, E.REMOVED, E.CANCELED,
    }  # fmt: skip


def test_the_happy_paths() -> None:
    status = C.QUEUED
    for target in (C.SENT, C.DELIVERED, C.SUCCEEDED):
        status = command_move(status, target)
    assert status is C.SUCCEEDED
    job = E.QUEUED
    for target in (E.IN_PROGRESS, E.IN_PROGRESS, E.SUCCEEDED):  # a progress update between
        job = execution_move(job, target)
    assert job is E.SUCCEEDED


@pytest.mark.parametrize(("current", "target"), list(itertools.product(C, C)))
def test_every_command_move_is_allowed_or_refused_as_listed(
    current: CommandStatus, target: CommandStatus
) -> None:
    if target in COMMAND_MOVES.get(current, frozenset()):
        assert command_move(current, target) is target
    else:
        with pytest.raises(Conflict, match=f"{current}.*{target}"):
            command_move(current, target)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(E, E)))
def test_every_execution_move_is_allowed_or_refused_as_listed(
    current: ExecutionStatus, target: ExecutionStatus
) -> None:
    if target in EXECUTION_MOVES.get(current, frozenset()):
        assert execution_move(current, target) is target
    else:
        with pytest.raises(Conflict):
            execution_move(current, target)


def test_refusals_say_why() -> None:
    with pytest.raises(Conflict, match="SUCCEEDED, which is final: it cannot become IN_PROGRESS"):
        execution_move(E.SUCCEEDED, E.IN_PROGRESS)
    with pytest.raises(Conflict, match="cannot go from QUEUED to SUCCEEDED"):
        execution_move(E.QUEUED, E.SUCCEEDED)
    with pytest.raises(Conflict, match="cannot go from QUEUED to DELIVERED"):
        command_move(C.QUEUED, C.DELIVERED)
