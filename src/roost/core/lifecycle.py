"""Lifecycles as data: the moves allowed between a thing's states, and a clear refusal of any
other (pure). The commands and jobs rooms declare their own (``commands/lifecycle.py``,
``jobs/lifecycle.py``); a state with no move out of it is terminal and never moves again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

from roost.errors import Conflict

S = TypeVar("S", bound=StrEnum)


def terminal(states: Iterable[S], moves: Mapping[S, frozenset[S]]) -> frozenset[S]:
    """The states with no move out of them."""
    return frozenset(set(states) - set(moves))


def check_move(what: str, moves: Mapping[S, frozenset[S]], current: S, target: S) -> S:
    """``target`` when ``what`` may go there from ``current``; Conflict saying why otherwise."""
    if target not in moves.get(current, frozenset()):
        if current not in moves:
            raise Conflict(f"the {what} is {current}, which is final: it cannot become {target}")
        raise Conflict(f"a {what} cannot go from {current} to {target}")
    return target
