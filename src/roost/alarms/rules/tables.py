"""Tables of rules (issue 13); part of :data:`roost.store.metadata.metadata`.

``rules`` holds definitions. ``rule_states`` holds what a rule keeps per device between messages
(a pending ``for``, whether it fired, the last value, a no-data deadline), written in the same
transaction as the engine's position in each feed (``rule_cursors``), so a restart resumes exactly:
nothing pending is lost and nothing fires twice. ``rule_actions`` is the outbox of actions that
leave the database (a derived event to ingest, a desired state to set): decided in that
transaction, carried out after it, deleted when done.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

_ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

rules = sa.Table(
    "rules",
    metadata,
    sa.Column(
        "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    # The whole definition as given (source, targets, condition, clear, for_s, enrich, actions).
    sa.Column("definition", Json, nullable=False),
    # Set when the engine stopped the rule (a loop, an action that keeps failing).
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

rule_states = sa.Table(
    "rule_states",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(128), nullable=False),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    # idle | pending | active
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("since", sa.Float(), nullable=True),  # epoch s: when pending/active began
    sa.Column("due_at", sa.Float(), nullable=True),  # epoch s: a pending for, or no-data deadline
    sa.Column("last_value", Json, nullable=True),
    sa.Column("last_ts", sa.Float(), nullable=True),  # epoch s of last_value
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "rule_id", "device_pk"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "rule_id"], ["rules.tenant_id", "rules.id"], ondelete="CASCADE"
    ),
)

rule_cursors = sa.Table(
    "rule_cursors",
    metadata,
    sa.Column("feed", sa.String(32), primary_key=True),  # log | presence
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

rule_actions = sa.Table(
    "rule_actions",
    metadata,
    sa.Column("id", _ROW_KEY, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(128), nullable=False),
    sa.Column("device_pk", sa.Integer(), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    # emit_event | emit_telemetry | set_desired
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
