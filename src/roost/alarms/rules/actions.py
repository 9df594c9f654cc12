"""The rule actions outbox: derived events and points ingested, desired states set.

The engine writes these in the transaction that decided them (``rule_actions``); this pass
carries them out and deletes each once done, so a decided action survives a crash (at least
once; a derived item ingested again after a crash is dropped by ingest's message-id
de-duplication, its id being the outbox row's). An action that keeps failing is given up after
:data:`MAX_ATTEMPTS` with its error logged and set on the rule.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import sqlalchemy as sa

from roost.alarms.rules.tables import rule_actions, rules
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.core.ingest import IngestKind
from roost.errors import NotFound, RoostError
from roost.state.rules import DEFAULT_STATE
from roost.state.service import StateService, Writer
from roost.telemetry.ingest.service import IngestService

log = logging.getLogger(__name__)

TIMER: Final = "rule-actions"
#: Outbox rows carried out per pass.
BATCH: Final = 200
#: Attempts before an action is given up (the pass runs every second or when woken).
MAX_ATTEMPTS: Final = 10


class RuleActions:
    """Carries out the outbox of rule actions (see the module docstring)."""

    def __init__(self, deps: ServiceDeps, ingest: IngestService, state: StateService) -> None:
        self.deps = deps
        self.ingest = ingest
        self.state = state
        self.done = 0

    async def start(self) -> None:
        """Register the pass with the scheduler."""
        self.deps.scheduler.every(TIMER, 1.0, self.run)

    async def close(self) -> None:
        """Nothing to stop (the scheduler stops the pass)."""

    def wake(self) -> None:
        """New actions were committed."""
        self.deps.scheduler.wake(TIMER)

    async def run(self) -> float | None:
        """Carry out what the outbox holds (oldest first)."""
        async with self.deps.db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(rule_actions).order_by(rule_actions.c.id).limit(BATCH)
                    )
                )
                .mappings()
                .all()
            )
        for row in rows:
            try:
                await self._carry_out(dict(row))
            except Exception as exc:
                await self._failed(dict(row), exc)
                continue
            async with self.deps.db.write() as conn:
                await conn.execute(rule_actions.delete().where(rule_actions.c.id == row["id"]))
            self.done += 1
        return time.time() if len(rows) == BATCH else None

    async def _carry_out(self, row: dict[str, Any]) -> None:
        kind = row["kind"]
        if kind == "set_desired":
            await self.state.apply(
                row["tenant_id"],
                row["device_id"],
                DEFAULT_STATE,
                row["payload"],
                Writer("user", f"rule:{row['rule_id']}"),
            )
            return
        identity = DeviceIdentity(
            row["tenant_id"], row["device_id"], row["device_pk"], f"rule:{row['rule_id']}"
        )
        ctx = await self.ingest.device_context(identity)
        what = IngestKind.EVENTS if kind == "emit_event" else IngestKind.TELEMETRY
        outcome = await self.ingest.submit(
            ctx, what, row["payload"], time.time_ns(), msg_id=f"rule-action-{row['id']}"
        )
        if outcome.errors:
            raise ValueError(f"ingest refused the derived item: {outcome.errors[0]}")
        if outcome.ticket is not None:
            await outcome.ticket

    async def _failed(self, row: dict[str, Any], exc: Exception) -> None:
        attempts = row["attempts"] + 1
        message = str(exc) if isinstance(exc, RoostError | ValueError) else repr(exc)
        gone = isinstance(exc, NotFound)  # the device was deleted: nothing to retry
        async with self.deps.db.write() as conn:
            if attempts >= MAX_ATTEMPTS or gone:
                log.warning(
                    "rule %s/%s: %s action for %s given up after %d attempts: %s",
                    row["tenant_id"], row["rule_id"], row["kind"], row["device_id"], attempts,
                    message,
                )  # fmt: skip
                await conn.execute(rule_actions.delete().where(rule_actions.c.id == row["id"]))
                await conn.execute(
                    rules.update()
                    .where(rules.c.tenant_id == row["tenant_id"], rules.c.id == row["rule_id"])
                    .values(error=f"{row['kind']} for {row['device_id']} failed: {message}")
                )
            else:
                await conn.execute(
                    rule_actions.update()
                    .where(rule_actions.c.id == row["id"])
                    .values(attempts=attempts, last_error=message[:2000])
                )
