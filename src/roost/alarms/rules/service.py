"""Rules: create, read, change and delete them, checked against the tenant's inventory.

A definition is checked twice: its shape by :func:`roost.alarms.rules.model.parse_rule` (field
by field, an expression error says at which column), then against the tenant — the devices and
groups it targets, the sensor it watches, the channels it notifies, the reference tables it
joins must exist, and its derived events or points must not feed back into it through other
rules (a loop is refused when it is made, not found at run time). Every change is audited and
reaches the engine at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from roost.alarms.notify.service import NotificationService
from roost.alarms.reference.service import ReferenceService
from roost.alarms.rules.feeds import FEED_BY_NAME, feed_of, start_position
from roost.alarms.rules.fleet import Fleet
from roost.alarms.rules.model import RuleSpec, parse_rule
from roost.alarms.rules.tables import rule_cursors, rule_states, rules
from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.ids import SLUG_RULE, generate_id, is_slug
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, order_by, text_match

SORTS: Final = ("id", "name", "created_at", "updated_at")
#: Rules per tenant: enough for any fleet we know, a bound on what each message is checked by.
MAX_RULES: Final = 1000
DEFINITION_FIELDS: Final = (
    "source", "targets", "condition", "clear", "for_s", "where", "enrich", "actions",
)  # fmt: skip
_TOP_FIELDS: Final = frozenset({"id", "name", "description", "enabled", *DEFINITION_FIELDS})


def rule_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as the API answers it."""
    definition = row["definition"] or {}
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "enabled": row["enabled"],
        **{name: definition.get(name) for name in DEFINITION_FIELDS},
        "error": row["error"],
        "version": row["version"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class RuleService:
    """Rules of every tenant (see the module docstring)."""

    def __init__(
        self,
        deps: ServiceDeps,
        *,
        reference: ReferenceService,
        notifications: NotificationService,
        log_end: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.deps = deps
        # The ingest log's last offset (the time-series store's), for a newly watched log.
        self.log_end = log_end
        self.db = deps.db
        self.fleet = Fleet(deps.db)
        self.reference = reference
        self.notifications = notifications
        self.on_change: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    # -- checking -----------------------------------------------------------------------------

    async def check(self, actor: Actor, data: Mapping[str, Any], rule_id: str) -> RuleSpec:
        """Check a definition's shape and what it names; answer the compiled rule."""
        definition = {k: data[k] for k in DEFINITION_FIELDS if data.get(k) is not None}
        spec = parse_rule(definition)
        tenant = actor.tenant_id
        await self.fleet.check_targets(tenant, spec.targets)
        errors: list[dict[str, Any]] = []
        if spec.sensor is not None:
            try:
                await self.fleet.check_sensor(tenant, spec.sensor)
            except InvalidInput as exc:
                errors.append({"field": "source.sensor", "message": exc.detail})
        for i, action in enumerate(spec.actions):
            if action.type != "notify":
                continue
            errors += [
                {
                    "field": f"actions[{i}].channels",
                    "value": channel,
                    "message": f"no notification channel {channel!r}",
                }
                for channel in action.params["channels"]
                if not await self.notifications.channel_exists(tenant, channel)
            ]
        for i, join in enumerate(spec.enrich):
            if not await self.reference.exists(tenant, join.table):
                errors.append(
                    {
                        "field": f"enrich[{i}].table",
                        "value": join.table,
                        "message": f"no reference table {join.table!r}",
                    }
                )
        if errors:
            raise ValidationFailed("; ".join(e["message"] for e in errors), errors)
        await self._check_loops(actor, spec, rule_id)
        return spec

    async def _check_loops(self, actor: Actor, spec: RuleSpec, rule_id: str) -> None:
        """Refuse a rule whose emitted events or points reach, through rules, what it watches."""
        edges: dict[str, set[str]] = {}

        def add(rule_spec: RuleSpec) -> None:
            watched = (
                f"event:{rule_spec.event_type or '*'}"
                if rule_spec.source == "event"
                else f"telemetry:{rule_spec.sensor or '*'}"
            )
            for action in rule_spec.actions:
                if action.type == "emit_event":
                    edges.setdefault(watched, set()).add(f"event:{action.params['event_type']}")
                elif action.type == "emit_telemetry":
                    edges.setdefault(watched, set()).add(f"telemetry:{action.params['sensor']}")

        async with self.db.read() as conn:
            rows = as_dicts(
                await conn.execute(
                    sa.select(rules.c.id, rules.c.definition).where(
                        rules.c.tenant_id == actor.tenant_id,
                        rules.c.enabled.is_(True),
                        rules.c.id != rule_id,
                    )
                )
            )
        for row in rows:
            try:
                add(parse_rule(row["definition"]))
            except InvalidInput:
                continue
        add(spec)

        def reaches(node: str, seen: set[str]) -> set[str]:
            out: set[str] = set()
            for kind_any in (node, node.split(":")[0] + ":*"):
                for nxt in edges.get(kind_any, ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        out |= {nxt} | reaches(nxt, seen)
            return out

        for start in list(edges):
            if start.endswith(":*"):
                continue
            if start in reaches(start, set()):
                raise ValidationFailed(
                    f"the rule would make a loop: what it emits comes back to {start} "
                    "through the tenant's rules",
                    [{"field": "actions", "message": f"loop through {start}"}],
                )

    async def _present_end(self, spec: RuleSpec, now: datetime) -> tuple[str, int | None]:
        """The rule's feed and where it ends now (read before the write transaction)."""
        feed = feed_of(spec.source)
        if feed == "log":
            return feed, None if self.log_end is None else await self.log_end()
        return feed, await start_position(self.db, FEED_BY_NAME[feed], now)

    async def _start_feed(
        self,
        conn: Any,
        tenant_id: str,
        rule_id: str,
        feed: str,
        position: int | None,
        now: datetime,
    ) -> None:
        """When no other enabled rule reads this rule's feed, move the feed's cursor to its
        present end: a new rule looks at what happens from now on, not at the history that
        piled up while nobody watched (the engine neither reads nor moves an unwatched feed)."""
        if position is None:
            return
        for other_tenant, other_id, definition in await conn.execute(
            sa.select(rules.c.tenant_id, rules.c.id, rules.c.definition).where(
                rules.c.enabled.is_(True)
            )
        ):
            if (other_tenant, other_id) == (tenant_id, rule_id):
                continue
            source = (definition or {}).get("source") or {}
            if feed_of(str(source.get("kind"))) == feed:
                return
        await conn.execute(rule_cursors.delete().where(rule_cursors.c.feed == feed))
        await conn.execute(
            rule_cursors.insert().values(feed=feed, position=position, updated_at=now)
        )

    # -- reading ------------------------------------------------------------------------------

    async def list(
        self,
        actor: Actor,
        page: PageRequest,
        *,
        enabled: bool | None = None,
        source: str | None = None,
        q: str | None = None,
    ) -> Page[dict[str, Any]]:
        """Rules of the actor's tenant."""
        actor.require(Role.VIEWER)
        where: list[sa.ColumnElement[bool]] = [rules.c.tenant_id == actor.tenant_id]
        if enabled is not None:
            where.append(rules.c.enabled == enabled)
        if q:
            where.append(text_match([rules.c.id, rules.c.name, rules.c.description], q))
        async with self.db.read() as conn:
            rows = as_dicts(
                await conn.execute(
                    sa.select(rules)
                    .where(*where)
                    .order_by(*order_by(rules, page.sort, SORTS, default="id"))
                )
            )
        items = [rule_out(r) for r in rows]
        if source is not None:
            items = [r for r in items if (r["source"] or {}).get("kind") == source]
        return Page(
            items[page.offset : page.offset + page.limit], len(items), page.limit, page.offset
        )

    async def _row(self, conn: Any, actor: Actor, rule_id: str) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(rules).where(rules.c.tenant_id == actor.tenant_id, rules.c.id == rule_id),
        )
        if row is None:
            raise NotFound(f"no rule {rule_id!r}")
        return row

    async def get(self, actor: Actor, rule_id: str) -> dict[str, Any]:
        """One rule, with how many devices it holds pending or active."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await self._row(conn, actor, rule_id)
            counts: dict[str, int] = dict(
                (
                    await conn.execute(
                        sa.select(rule_states.c.phase, sa.func.count())
                        .where(
                            rule_states.c.tenant_id == actor.tenant_id,
                            rule_states.c.rule_id == rule_id,
                        )
                        .group_by(rule_states.c.phase)
                    )
                ).all()
            )
        return {
            **rule_out(row),
            "pending": counts.get("pending", 0),
            "active": counts.get("active", 0),
        }

    # -- writing ------------------------------------------------------------------------------

    def _top(self, data: Mapping[str, Any]) -> None:
        unknown = set(data) - _TOP_FIELDS
        if unknown:
            raise InvalidInput(f"unknown fields {sorted(unknown)}")
        for name in ("name", "description"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 2000):
                raise InvalidInput(f"{name} must be text")
        if data.get("enabled") is not None and not isinstance(data["enabled"], bool):
            raise InvalidInput("enabled must be true or false")

    async def create(self, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create a rule (its id is generated when not given)."""
        actor.require(Role.OPERATOR)
        self._top(data)
        rule_id = data.get("id") or generate_id("rule")
        if not isinstance(rule_id, str) or not is_slug(rule_id):
            raise InvalidInput(f"id {rule_id!r} is not valid: {SLUG_RULE}")
        spec = await self.check(actor, data, rule_id)
        now = self.deps.clock()
        feed, position = await self._present_end(spec, now)
        row = {
            "tenant_id": actor.tenant_id,
            "id": rule_id,
            "name": data.get("name") or rule_id,
            "description": data.get("description") or "",
            "enabled": data.get("enabled", True),
            "definition": dict(spec.definition),
            "error": None,
            "version": 1,
            "created_by": actor.name,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            count = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(rules)
                    .where(rules.c.tenant_id == actor.tenant_id)
                )
            ).scalar_one()
            if count >= MAX_RULES:
                raise Conflict(f"the tenant has {MAX_RULES} rules, the most it may have")
            if await fetch_one(
                conn,
                sa.select(rules.c.id).where(
                    rules.c.tenant_id == actor.tenant_id, rules.c.id == rule_id
                ),
            ):
                raise Conflict(f"rule {rule_id!r} already exists")
            if row["enabled"]:
                await self._start_feed(conn, actor.tenant_id, rule_id, feed, position, now)
            await conn.execute(rules.insert().values(**row))
            await audit.record(conn, actor, "create", "rule", rule_id, after=rule_out(row), at=now)
        self._changed()
        return rule_out(row)

    async def update(self, actor: Actor, rule_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Change a rule: the fields given replace the rule's (a definition is checked whole).

        Changing the definition starts its per-device states afresh (a pending ``for`` under the
        old condition means nothing under the new one); renaming or enabling keeps them.
        """
        actor.require(Role.OPERATOR)
        self._top(data)
        if "id" in data and data["id"] != rule_id:
            raise InvalidInput("a rule's id cannot change")
        async with self.db.read() as conn:
            before = await self._row(conn, actor, rule_id)
        definition = dict(before["definition"])
        redefined = any(name in data for name in DEFINITION_FIELDS)
        for name in DEFINITION_FIELDS:
            if name in data:
                definition[name] = data[name]
        spec = await self.check(actor, definition, rule_id)
        now: datetime = self.deps.clock()
        feed, position = await self._present_end(spec, now)
        values = {
            "name": data.get("name", before["name"]) or rule_id,
            "description": data.get("description", before["description"]) or "",
            "enabled": data.get("enabled", before["enabled"]),
            "definition": dict(spec.definition),
            "version": before["version"] + 1,
            "updated_at": now,
        }
        if redefined or values["enabled"]:
            values["error"] = None
        async with self.db.write() as conn:
            result = await conn.execute(
                rules.update()
                .where(
                    rules.c.tenant_id == actor.tenant_id,
                    rules.c.id == rule_id,
                    rules.c.version == before["version"],
                )
                .values(**values)
            )
            if result.rowcount != 1:
                raise Conflict(f"rule {rule_id!r} changed meanwhile; read it again")
            if values["enabled"] and (redefined or not before["enabled"]):
                await self._start_feed(conn, actor.tenant_id, rule_id, feed, position, now)
            if redefined:
                await conn.execute(
                    rule_states.delete().where(
                        rule_states.c.tenant_id == actor.tenant_id, rule_states.c.rule_id == rule_id
                    )
                )
            after = {**before, **values}
            await audit.record(
                conn, actor, "update", "rule", rule_id, before=rule_out(before),
                after=rule_out(after), at=now,
            )  # fmt: skip
        self._changed()
        return rule_out(after)

    async def delete(self, actor: Actor, rule_id: str) -> None:
        """Delete a rule and its states (its alarms stay, as history)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self._row(conn, actor, rule_id)
            await conn.execute(
                rule_states.delete().where(
                    rule_states.c.tenant_id == actor.tenant_id, rule_states.c.rule_id == rule_id
                )
            )
            await conn.execute(
                rules.delete().where(rules.c.tenant_id == actor.tenant_id, rules.c.id == rule_id)
            )
            await audit.record(conn, actor, "delete", "rule", rule_id, before=rule_out(before))
        self._changed()
