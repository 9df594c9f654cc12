"""Notification channels: where alarm messages go (e-mail, a webhook, Slack), how they group.

A channel is checked whole when saved: its kind, its kind's settings (addresses, URL, headers),
its templates (compiled in the sandbox; a syntax error names the template and its line) and
its grouping. A webhook's secret is sealed under the server's secret key and never read back
through the API (``secret_set`` says whether one is set).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.notify import model
from roost.alarms.notify.tables import notification_channels
from roost.alarms.notify.templates import check_template
from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import generate_id
from roost.credentials.keys.service import SecretBox
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

SORTS = ("name", "kind", "created_at", "updated_at", "id")
#: Recipients of one e-mail channel: a distribution list belongs in the mail system.
MAX_RECIPIENTS = 50
MAX_HEADERS = 20
MAX_SECRET_CHARS = 256
#: A receiver gets at most this long per attempt (the retry waits are separate).
MAX_WEBHOOK_TIMEOUT_S = 60.0
DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
#: Grouping waits a channel may set: from "at once" to a day.
MAX_INTERVAL_S = 86_400.0
MAX_REPEAT_INTERVAL_S = 30 * 86_400.0

_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
#: Headers the webhook sender sets itself.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host"})
_KIND_KEYS = {
    "email": {"to", "subject_template", "body_template"},
    "webhook": {"url", "secret", "headers", "timeout_s"},
    "slack": {"url", "text_template"},
}
_TEMPLATES = ("subject_template", "body_template", "text_template")


def _fault(errors: list[dict[str, Any]], field: str, message: str) -> None:
    errors.append({"field": field, "message": message})


def _check_url(errors: list[dict[str, Any]], value: Any) -> None:
    if not isinstance(value, str) or not value:
        _fault(errors, "config.url", "required: an http:// or https:// URL")
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2000:
        _fault(errors, "config.url", f"not an http:// or https:// URL: {value!r}")


def check_config(kind: str, config: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, bool]:
    """The kind's settings checked: (stored config, new secret, whether ``secret`` was given)."""
    if kind not in model.KINDS:
        raise InvalidInput(f"unknown channel kind {kind!r}; kinds: {', '.join(model.KINDS)}")
    errors: list[dict[str, Any]] = []
    unknown = sorted(set(config) - _KIND_KEYS[kind])
    for key in unknown:
        _fault(errors, f"config.{key}", f"not a setting of {kind} channels")
    stored: dict[str, Any] = {}
    if kind == "email":
        to = config.get("to")
        if not isinstance(to, list) or not to or len(to) > MAX_RECIPIENTS:
            _fault(errors, "config.to", f"required: a list of 1 to {MAX_RECIPIENTS} addresses")
        else:
            for i, address in enumerate(to):
                if not isinstance(address, str) or _ADDRESS.fullmatch(address) is None:
                    _fault(errors, f"config.to[{i}]", f"not an e-mail address: {address!r}")
            stored["to"] = list(to)
    else:
        _check_url(errors, config.get("url"))
        stored["url"] = config.get("url")
    if kind == "webhook":
        headers = config.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
            _fault(errors, "config.headers", f"an object of at most {MAX_HEADERS} headers")
            headers = {}
        for name, value in headers.items():
            if _HEADER_NAME.fullmatch(name) is None or name.lower() in _RESERVED_HEADERS:
                _fault(errors, f"config.headers.{name}", "not a header name one may set")
            elif name.lower().startswith("x-roost-"):
                _fault(errors, f"config.headers.{name}", "X-Roost-* headers are Roost's own")
            elif not isinstance(value, str) or any(c in value for c in "\r\n") or len(value) > 2000:
                _fault(errors, f"config.headers.{name}", "a one-line text value")
        stored["headers"] = dict(headers)
        timeout = config.get("timeout_s", DEFAULT_WEBHOOK_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            _fault(errors, "config.timeout_s", "a number of seconds")
        elif not 0 < timeout <= MAX_WEBHOOK_TIMEOUT_S:
            _fault(errors, "config.timeout_s", f"between 0 and {MAX_WEBHOOK_TIMEOUT_S:g} s")
        stored["timeout_s"] = timeout
        secret = config.get("secret")
        if secret is not None and (not isinstance(secret, str) or not 1 <= len(secret) <= 256):
            _fault(errors, "config.secret", f"a text of 1 to {MAX_SECRET_CHARS} characters")
    for key in _TEMPLATES:
        if key in _KIND_KEYS[kind] and config.get(key) is not None:
            if not isinstance(config[key], str):
                _fault(errors, f"config.{key}", "a Jinja2 template (text)")
            else:
                stored[key] = config[key]
    if errors:
        first = errors[0]
        raise ValidationFailed(f"{first['field']}: {first['message']}", errors)
    for key in _TEMPLATES:
        if key in stored:
            check_template(f"config.{key}", stored[key])
    secret_value = config.get("secret") if kind == "webhook" else None
    return stored, secret_value, kind == "webhook" and "secret" in config


def check_grouping(values: Mapping[str, Any]) -> None:
    """Refuse grouping settings out of range."""
    group_by = values["group_by"]
    bad = [name for name in group_by if name not in model.GROUP_LABELS]
    if bad or len(set(group_by)) != len(group_by):
        raise InvalidInput(f"group_by takes distinct labels among {', '.join(model.GROUP_LABELS)}")
    for name, top in (
        ("group_wait_s", MAX_INTERVAL_S),
        ("group_interval_s", MAX_INTERVAL_S),
        ("repeat_interval_s", MAX_REPEAT_INTERVAL_S),
    ):
        if not 0 <= values[name] <= top:
            raise InvalidInput(f"{name} must be between 0 and {top:g} seconds")
    if values["repeat_interval_s"] <= 0 or values["group_interval_s"] <= 0:
        raise InvalidInput("group_interval_s and repeat_interval_s must be above 0")
    if not 1 <= values["max_attempts"] <= model.MAX_ATTEMPTS_LIMIT:
        raise InvalidInput(f"max_attempts must be between 1 and {model.MAX_ATTEMPTS_LIMIT}")


def channel_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A channel as the API answers it (the secret only as ``secret_set``)."""
    out = {k: v for k, v in row.items() if k not in ("sealed_secret", "tenant_id")}
    out["secret_set"] = row.get("sealed_secret") is not None
    return out


class Channels:
    """Creating, reading, changing and deleting channels of a tenant."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def open_secret(self, row: Mapping[str, Any]) -> str | None:
        """A channel's webhook secret in clear (for the sender)."""
        sealed = row.get("sealed_secret")
        return None if sealed is None else self.box.open(sealed, row["id"]).decode("utf-8")

    async def row(self, conn: AsyncConnection, tenant_id: str, channel_id: str) -> dict[str, Any]:
        """A channel's row of the tenant (404 otherwise)."""
        found = await fetch_one(
            conn,
            sa.select(notification_channels).where(
                notification_channels.c.tenant_id == tenant_id,
                notification_channels.c.id == channel_id,
            ),
        )
        if found is None:
            raise NotFound(f"no notification channel {channel_id!r}")
        return found

    async def _name_free(
        self, conn: AsyncConnection, tenant_id: str, name: str, but: str | None = None
    ) -> None:
        taken = await conn.scalar(
            sa.select(notification_channels.c.id).where(
                notification_channels.c.tenant_id == tenant_id,
                notification_channels.c.name == name,
            )
        )
        if taken is not None and taken != but:
            raise Conflict(f"a notification channel named {name!r} exists")

    async def create(
        self, actor: Actor, values: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Add a channel."""
        actor.require(Role.OPERATOR)
        config, secret, _ = check_config(values["kind"], values.get("config") or {})
        check_grouping(values)
        channel_id = generate_id("nch")
        row = {
            "id": channel_id,
            "tenant_id": actor.tenant_id,
            "name": values["name"],
            "kind": values["kind"],
            "config": config,
            "sealed_secret": None if secret is None else self.box.seal(secret.encode(), channel_id),
            "group_by": list(values["group_by"]),
            "group_wait_s": float(values["group_wait_s"]),
            "group_interval_s": float(values["group_interval_s"]),
            "repeat_interval_s": float(values["repeat_interval_s"]),
            "send_resolved": values["send_resolved"],
            "max_attempts": values["max_attempts"],
            "enabled": values["enabled"],
            "created_by": actor.name,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            await self._name_free(conn, actor.tenant_id, row["name"])
            await conn.execute(notification_channels.insert().values(**row))
            out = channel_out(row)
            await audit.record(conn, actor, "create", "notification_channel", channel_id,
                               after=out, at=now)  # fmt: skip
        return out

    async def get(self, actor: Actor, channel_id: str) -> dict[str, Any]:
        """One channel."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            return channel_out(await self.row(conn, actor.tenant_id, channel_id))

    async def page(
        self, actor: Actor, page: PageRequest, kind: str | None = None
    ) -> Page[dict[str, Any]]:
        """A page of the tenant's channels."""
        actor.require(Role.VIEWER)
        stmt = sa.select(notification_channels).where(
            notification_channels.c.tenant_id == actor.tenant_id
        )
        if kind is not None:
            stmt = stmt.where(notification_channels.c.kind == kind)
        async with self.db.read() as conn:
            rows, total = await fetch_page(
                conn, stmt, order_by(notification_channels, page.sort, SORTS, "name"), page
            )
        return Page([channel_out(r) for r in rows], total, page.limit, page.offset)

    async def update(
        self, actor: Actor, channel_id: str, changes: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Change a channel; ``config`` replaces the whole config (a webhook secret left out
        stays, ``secret: null`` removes it)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self.row(conn, actor.tenant_id, channel_id)
            merged = {**before, **changes}
            values: dict[str, Any] = {k: v for k, v in changes.items() if k != "config"}
            if "config" in changes or "kind" in changes:
                if "kind" in changes and "config" not in changes:
                    raise InvalidInput("changing kind needs the new kind's config")
                config, secret, given = check_config(merged["kind"], changes["config"] or {})
                values["config"] = config
                if given:
                    values["sealed_secret"] = (
                        None if secret is None else self.box.seal(secret.encode(), channel_id)
                    )
                elif merged["kind"] != "webhook":
                    values["sealed_secret"] = None
            check_grouping(merged)
            if "name" in changes:
                await self._name_free(conn, actor.tenant_id, changes["name"], but=channel_id)
            values["updated_at"] = now
            await conn.execute(
                notification_channels.update()
                .where(notification_channels.c.id == channel_id)
                .values(**values)
            )
            after = await self.row(conn, actor.tenant_id, channel_id)
            await audit.record(
                conn, actor, "update", "notification_channel", channel_id,
                before=channel_out(before), after=channel_out(after), at=now,
            )  # fmt: skip
        return channel_out(after)

    async def delete(self, actor: Actor, channel_id: str, now: datetime) -> None:
        """Delete a channel (its pending groups go; its queued messages fail when due)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self.row(conn, actor.tenant_id, channel_id)
            await conn.execute(
                notification_channels.delete().where(notification_channels.c.id == channel_id)
            )
            await audit.record(conn, actor, "delete", "notification_channel", channel_id,
                               before=channel_out(before), at=now)  # fmt: skip

    async def exists(self, tenant_id: str, channel_id: str) -> bool:
        """Whether the tenant has this channel (the rule service checks notify actions)."""
        async with self.db.read() as conn:
            found = await conn.scalar(
                sa.select(notification_channels.c.id).where(
                    notification_channels.c.tenant_id == tenant_id,
                    notification_channels.c.id == channel_id,
                )
            )
        return found is not None
