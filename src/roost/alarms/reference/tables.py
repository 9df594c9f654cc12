"""Tables of reference data (issue 13); part of :data:`roost.store.metadata.metadata`.

A table (``reference_tables``) points at its current version; every replace adds a version
(``reference_table_versions``: who, when, how many rows, kept for good) and its rows
(``reference_rows``, one per key, kept for the last few versions only: see
:data:`roost.alarms.reference.service.KEPT_VERSIONS`).
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

reference_tables = sa.Table(
    "reference_tables",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(64), nullable=False),
    # The column whose value names a row, and every column in upload order (key included).
    sa.Column("key_column", sa.String(64), nullable=False),
    sa.Column("columns", Json, nullable=False),
    # The version lookups see: 1 for the first upload, one more for each replace. A delete takes
    # the history with it; a later upload of the same name starts again at 1.
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("row_count", sa.Integer(), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "name"),
)

reference_table_versions = sa.Table(
    "reference_table_versions",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("key_column", sa.String(64), nullable=False),
    sa.Column("columns", Json, nullable=False),
    sa.Column("row_count", sa.Integer(), nullable=False),
    # False once the version's rows were pruned (older than the kept versions).
    sa.Column("rows_kept", sa.Boolean(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "table_name", "version"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "table_name"],
        ["reference_tables.tenant_id", "reference_tables.name"],
        name="fk_reference_table_versions_table",
        ondelete="CASCADE",
    ),
)

reference_rows = sa.Table(
    "reference_rows",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    # The row's place in the upload (1 = first data row): listings keep the file's order.
    sa.Column("position", sa.Integer(), nullable=False),
    # Column → value (the key column included): strings, numbers, booleans or null.
    sa.Column("values", Json, nullable=False),
    # Lower-cased key and values, what ``q`` searches (the JSON text would match column names).
    sa.Column("search_text", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "table_name", "version", "key"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "table_name", "version"],
        [
            "reference_table_versions.tenant_id",
            "reference_table_versions.table_name",
            "reference_table_versions.version",
        ],
        # Named here: the convention's name would pass PostgreSQL's 63 characters.
        name="fk_reference_rows_version",
        ondelete="CASCADE",
    ),
    sa.Index("ix_reference_rows_position", "tenant_id", "table_name", "version", "position"),
)
