"""Tables of device state documents (issue 4); part of :data:`roost.store.metadata.metadata`.

``device_states`` holds the current document of each (device, state name); the default state is
named ``default``. ``device_state_history`` keeps every version (who wrote it, the update as
applied and the resulting desired/reported sections) for ``state_history_days``.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

device_states = sa.Table(
    "device_states",
    metadata,
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("desired", Json, nullable=False),
    sa.Column("reported", Json, nullable=False),
    # Per-leaf write times, {"desired": {...}, "reported": {...}} (roost.state.rules).
    sa.Column("meta", Json, nullable=False),
    # Rises by one on every update, and on a delete: a device that compares versions never takes
    # a document written after a delete for an old one.
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # Set when a named state was deleted; the row stays so its version keeps rising.
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("device_pk", "name"),
)

device_state_history = sa.Table(
    "device_state_history",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    # "user" or "device", and the user's name or the device's id.
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    # "update" or "delete"; ``patch`` is the update as applied ({"desired"?, "reported"?}).
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("patch", Json, nullable=True),
    sa.Column("desired", Json, nullable=False),
    sa.Column("reported", Json, nullable=False),
    sa.Index(None, "device_pk", "name", "version"),
    sa.Index(None, "at"),
)
