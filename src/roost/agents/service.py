"""The fleet's agents: devices whose ``roost-agent`` reports its status, for the API, console
and metrics.

The agent reports itself as the reported section of the device's named state ``agent``
(``roost_agent.health``): its version, Python, queue (points, bytes, dropped, refused), points
forwarded, and since when it runs and is connected (epoch milliseconds). This room only reads
those documents — the state room writes them, through its one write path — joined with the
device's name and presence.

Filters on the report (version, a backlog) are applied here rather than in SQL: the report is a
JSON document, and JSON paths are spelt differently by SQLite and PostgreSQL. A tenant's agent
rows are small (well under a kilobyte each), so a page reads them all in one query.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.errors import InvalidInput
from roost.inventory.tables import devices
from roost.state.tables import device_states
from roost.store.database import Database
from roost.store.queries import MAX_LIMIT

#: The named state the agent reports its status in (``roost_agent.health.STATE_NAME``).
AGENT_STATE: Final = "agent"
#: The version label of a report without a usable version.
UNKNOWN_VERSION: Final = "unknown"
#: Label values longer than this are cut: a broken agent must not blow up the metric's labels.
MAX_LABEL_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class AgentPage:
    """One page of agents, in device id order; ``next_cursor`` names where the next starts."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    next_cursor: str | None


def _number(value: Any) -> int | None:
    """A count of the report, or None when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _moment(value: Any) -> datetime | None:
    """An epoch-millisecond time of the report as a datetime (None when unusable)."""
    millis = _number(value)
    if millis is None or millis <= 0:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return value[:MAX_LABEL_CHARS] if isinstance(value, str) and value else None


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Orders versions as people read them: ``0.10.0`` after ``0.9.1``."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in version.split("."))


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    """One agent as the API answers it, from a device row joined with its ``agent`` report."""
    report: dict[str, Any] = row["reported"] if isinstance(row["reported"], dict) else {}
    queue: dict[str, Any] = report["queue"] if isinstance(report.get("queue"), dict) else {}
    return {
        "device_id": row["device_id"],
        "name": row["name"],
        "presence": row["presence"],
        "version": _text(report.get("version")),
        "python": _text(report.get("python")),
        "queued_points": _number(queue.get("points")),
        "queued_bytes": _number(queue.get("bytes")),
        "dropped_points": _number(queue.get("dropped")),
        "refused_points": _number(queue.get("refused")),
        "forwarded_points": _number(report.get("forwarded_points")),
        "connected_since": _moment(report.get("connected_since")),
        "started_at": _moment(report.get("started_at")),
        "reported_at": row["updated_at"],
    }


def matches(agent: dict[str, Any], *, version: str | None, backlog: bool) -> bool:
    """Whether an agent passes the filters (a backlog: points waiting in its queue)."""
    if version is not None and agent["version"] != version:
        return False
    return not backlog or (agent["queued_points"] or 0) > 0


def version_counts(reports: Iterable[Any]) -> metrics.GaugeValues:
    """Agents per reported version (``roost_agents``)."""
    counted = Counter(
        _text(report.get("version") if isinstance(report, dict) else None) or UNKNOWN_VERSION
        for report in reports
    )
    return {(version,): float(n) for version, n in counted.items()}


def queued_points(reports: Iterable[Any]) -> metrics.GaugeValues:
    """The sum of the agents' reported backlogs (``roost_agent_queued_points``)."""
    total = 0
    for report in reports:
        queue = report.get("queue") if isinstance(report, dict) else None
        total += max(0, _number(queue.get("points")) or 0) if isinstance(queue, dict) else 0
    return {(): float(total)}


async def _all_reports(db: Database) -> list[Any]:
    """Every tenant's live agent reports (the metrics count the whole server)."""
    statement = sa.select(device_states.c.reported).where(
        device_states.c.name == AGENT_STATE, device_states.c.deleted_at.is_(None)
    )
    async with db.read() as conn:
        return [row[0] for row in (await conn.execute(statement)).all()]


async def _version_gauge(db: Database) -> metrics.GaugeValues:
    return version_counts(await _all_reports(db))


async def _backlog_gauge(db: Database) -> metrics.GaugeValues:
    return queued_points(await _all_reports(db))


class AgentService:
    """Agents of a tenant as the API and console list them, and their fleet-wide gauges."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db
        metrics.query_gauge(
            "roost_agents",
            "Devices whose roost-agent reports, by agent version",
            ("version",),
            self.db,
            _version_gauge,
        )
        metrics.query_gauge(
            "roost_agent_queued_points",
            "Points waiting in the agents' queues, summed over their last reports",
            (),
            self.db,
            _backlog_gauge,
        )

    async def list(
        self,
        actor: Actor,
        *,
        version: str | None = None,
        backlog: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        offset: int = 0,
    ) -> AgentPage:
        """The tenant's agents by device id, after ``cursor`` (a device id) or from ``offset``."""
        actor.require(Role.VIEWER)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        statement = (
            sa.select(
                devices.c.id.label("device_id"),
                devices.c.name,
                devices.c.presence,
                device_states.c.reported,
                device_states.c.updated_at,
            )
            .join(device_states, device_states.c.device_pk == devices.c.pk)
            .where(
                devices.c.tenant_id == actor.tenant_id,
                device_states.c.name == AGENT_STATE,
                device_states.c.deleted_at.is_(None),
            )
            .order_by(devices.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        agents = [
            agent
            for agent in map(summarise, map(dict, rows))
            if matches(agent, version=version, backlog=backlog)
        ]
        start = offset
        if cursor is not None:
            start = next((i for i, a in enumerate(agents) if a["device_id"] > cursor), len(agents))
        items = agents[start : start + limit]
        more = start + limit < len(agents)
        return AgentPage(items, len(agents), limit, items[-1]["device_id"] if more else None)

    async def versions(self, actor: Actor) -> builtins.list[str]:
        """The agent versions reported in the tenant (the console's filter), newest first."""
        actor.require(Role.VIEWER)
        statement = (
            sa.select(device_states.c.reported)
            .join(devices, device_states.c.device_pk == devices.c.pk)
            .where(
                devices.c.tenant_id == actor.tenant_id,
                device_states.c.name == AGENT_STATE,
                device_states.c.deleted_at.is_(None),
            )
        )
        async with self.db.read() as conn:
            reports = [row[0] for row in (await conn.execute(statement)).all()]
        found = {version for (version,) in version_counts(reports)} - {UNKNOWN_VERSION}
        return sorted(found, key=version_key, reverse=True)
