"""time-series storage: ingest log, blocks, latest values, events, message ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A 64-bit key that is the rowid on SQLite (see roost.telemetry.engine.tables.RowKey).
_ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ts_blocks",
        sa.Column("series_pk", sa.BigInteger(), nullable=False),
        sa.Column("t_start", sa.BigInteger(), nullable=False),
        sa.Column("t_end", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("n_numeric", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=True),
        sa.Column("min", sa.Float(), nullable=True),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("first_ts", sa.BigInteger(), nullable=True),
        sa.Column("first_value", sa.Float(), nullable=True),
        sa.Column("last_ts", sa.BigInteger(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("series_pk", "t_start", name=op.f("pk_ts_blocks")),
    )
    op.create_table(
        "ts_events",
        sa.Column("device_pk", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("body_hash", sa.BigInteger(), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.Column("recv", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("device_pk", "ts", "body_hash", name=op.f("pk_ts_events")),
    )
    op.create_table(
        "ts_latest",
        sa.Column("series_pk", _ROW_KEY, autoincrement=False, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("point", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("series_pk", name=op.f("pk_ts_latest")),
    )
    op.create_table(
        "ts_log",
        sa.Column("first_offset", _ROW_KEY, autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("committed_ns", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("first_offset", name=op.f("pk_ts_log")),
    )
    op.create_table(
        "ts_msg_ids",
        sa.Column("device_pk", sa.BigInteger(), nullable=False),
        sa.Column("msg_id", sa.Text(), nullable=False),
        sa.Column("committed_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_pk", "msg_id", name=op.f("pk_ts_msg_ids")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("ts_msg_ids", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ts_msg_ids_committed_ns"), ["committed_ns"], unique=False
        )
    state = op.create_table(
        "ts_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ts_state")),
    )
    op.create_table(
        "ts_tombstones",
        sa.Column("series_pk", _ROW_KEY, autoincrement=False, nullable=False),
        sa.Column("before_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("series_pk", name=op.f("pk_ts_tombstones")),
    )
    op.bulk_insert(
        state, [{"name": "next_offset", "value": 0}, {"name": "compacted_upto", "value": 0}]
    )
    if op.get_bind().dialect.name == "postgresql":
        # Batches and blocks are dense binary already (blocks zlib-compressed): let TOAST store
        # them out of line without spending CPU on pglz for nothing.
        op.execute("ALTER TABLE ts_log ALTER COLUMN data SET STORAGE EXTERNAL")
        op.execute("ALTER TABLE ts_blocks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("ts_tombstones")
    op.drop_table("ts_state")
    with op.batch_alter_table("ts_msg_ids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ts_msg_ids_committed_ns"))
    op.drop_table("ts_msg_ids")
    op.drop_table("ts_log")
    op.drop_table("ts_latest")
    op.drop_table("ts_events")
    op.drop_table("ts_blocks")
