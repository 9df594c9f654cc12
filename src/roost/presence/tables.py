"""Presence history (issue 4); part of :data:`roost.store.metadata.metadata`.

The current presence lives on the device row (``devices.presence`` and friends, in
:mod:`roost.inventory.tables`); every change of it is kept here, for the API and the console.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata

# A 64-bit key that is the rowid on SQLite.
_ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

presence_history = sa.Table(
    "presence_history",
    metadata,
    sa.Column("id", _ROW_KEY, primary_key=True, autoincrement=True),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # Why: connected, disconnected, message (activity after silence), missed heartbeats, restart.
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Index(None, "device_pk", "at"),
)
