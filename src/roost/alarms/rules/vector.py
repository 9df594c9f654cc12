"""Plain thresholds and ranges over whole batches (numpy), for the rules engine's hot path.

Every vector rule on one sensor of one tenant shares a :class:`SensorVector`: the sorted series
keys of that sensor across the tenant's devices, and per rule two boolean columns aligned with
them: ``member`` (the device is a target) and ``held`` (the rule is pending or active for it).
A batch is matched against the series once per sensor; per rule a few array operations find the
points whose outcome differs from the rule's state — usually none — and only those are
evaluated one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from roost.alarms.rules.model import Condition

BoolArray = npt.NDArray[np.bool_]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def may_hold(condition: Condition) -> Callable[[float, float], bool]:
    """Whether the condition can hold for some value between ``low`` and ``high`` (the batch's
    extremes): a rule holding no device needs no closer look when it cannot."""
    if condition.type == "range":
        a, b = condition.low, condition.high
        assert a is not None and b is not None
        if condition.inside:
            return lambda low, high: high >= a and low <= b
        return lambda low, high: low < a or high > b
    limit = float(condition.value)
    return {
        ">": lambda low, high: high > limit,
        ">=": lambda low, high: high >= limit,
        "<": lambda low, high: low < limit,
        "<=": lambda low, high: low <= limit,
    }[str(condition.op)]


def vector_test(condition: Condition) -> Callable[[F64], BoolArray]:
    """The condition as a function of a value column (NaN, i.e. text, never holds)."""
    if condition.type == "range":
        low, high = condition.low, condition.high
        assert low is not None and high is not None
        if condition.inside:
            return lambda v: (v >= low) & (v <= high)
        return lambda v: (v < low) | (v > high)
    limit = float(condition.value)
    op = condition.op
    if op == ">":
        return lambda v: v > limit
    if op == ">=":
        return lambda v: v >= limit
    if op == "<":
        return lambda v: v < limit
    return lambda v: v <= limit


@dataclass(eq=False, slots=True)
class VectorSlot:
    """One rule's columns in a sensor vector."""

    rule: Any  # LoadedRule (kept untyped here: the evaluation module owns that type)
    test: Callable[[F64], BoolArray]
    clear: Callable[[F64], BoolArray] | None
    possible: Callable[[float, float], bool]
    member: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    held: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    held_count: int = 0


@dataclass(eq=False, slots=True)
class SensorVector:
    """Vector rules of one (tenant, sensor) and the series they watch."""

    tenant_id: str
    sensor: str
    series: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    devices: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    position: dict[int, int] = field(default_factory=dict)  # device pk → index
    position_of_series: dict[int, int] = field(default_factory=dict)  # series pk → index
    slots: list[VectorSlot] = field(default_factory=list)
    owners: dict[int, int] = field(default_factory=dict)  # series pk → device pk

    def add_series(self, series_to_device: dict[int, int]) -> None:
        """Take new series in (a device's first point of this sensor): rebuild the columns."""
        self.set_series({**self.owners, **series_to_device})

    def set_series(self, series_to_device: dict[int, int]) -> None:
        """(Re)build the aligned columns for this set of series."""
        self.owners = dict(series_to_device)
        keys = np.array(sorted(series_to_device), dtype=np.int64)
        self.series = keys
        self.devices = np.array([series_to_device[int(k)] for k in keys], dtype=np.int64)
        self.position = {int(d): i for i, d in enumerate(self.devices.tolist())}
        self.position_of_series = {int(k): i for i, k in enumerate(keys.tolist())}
        for slot in self.slots:
            self.align(slot)

    def align(self, slot: VectorSlot) -> None:
        """Fill a slot's columns from its rule's targets and committed states."""
        rule = slot.rule
        targets = rule.devices
        if targets is None:
            slot.member = np.ones(len(self.devices), dtype=bool)
        else:
            slot.member = np.isin(self.devices, np.fromiter(targets, np.int64, len(targets)))
        slot.held = np.zeros(len(self.devices), dtype=bool)
        for device_pk, state in rule.states.items():  # only devices the rule keeps state for
            index = self.position.get(device_pk)
            if index is not None and state.phase != "idle":
                slot.held[index] = True
        slot.held_count = int(slot.held.sum())

    def mark(self, rule: Any, device_pk: int, held: bool) -> None:
        """Keep a rule's ``held`` column in step with the state just decided."""
        index = self.position.get(device_pk)
        if index is None:
            return
        for slot in self.slots:
            if slot.rule is rule and bool(slot.held[index]) != held:
                slot.held[index] = held
                slot.held_count += 1 if held else -1

    def candidates(
        self, series: I64, values: F64, skip: int
    ) -> Iterable[tuple[VectorSlot, I64, F64, I64]]:
        """Per rule, the points to evaluate one by one: (slot, positions, values, device keys)."""
        if not len(self.series):
            return
        # One binary search per point finds both whether its series is this sensor's and where
        # (cheaper than np.isin, which sorts the batch and the series together).
        found = np.searchsorted(self.series, series)
        found[found == len(self.series)] = 0
        where = np.flatnonzero(self.series[found] == series)
        if skip:
            where = where[where >= skip]
        if not len(where):
            return
        vals = values[where]
        numeric = vals[~np.isnan(vals)]
        if not len(numeric):
            return  # text in a numeric rule's sensor: no threshold holds for it
        low, high = float(numeric.min()), float(numeric.max())
        index: I64 | None = None
        for slot in self.slots:
            if slot.held_count == 0 and not slot.possible(low, high):
                continue
            if index is None:
                index = found[where]
            cond = slot.test(vals)
            held = slot.held[index]
            if slot.clear is None:
                interesting = cond != held
            else:
                interesting = np.where(held, ~cond | slot.clear(vals), cond)
            interesting &= slot.member[index]
            if not interesting.any():
                continue
            # Every point of a device with an interesting one, in order: the state it reaches at
            # one point decides what the next means (a clear right after a crossing).
            chosen = np.flatnonzero(np.isin(index, index[interesting]))
            yield slot, where[chosen], vals[chosen], self.devices[index[chosen]]
