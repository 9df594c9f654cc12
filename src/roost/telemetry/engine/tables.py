"""The time-series tables, declared on the relational store's ``metadata`` (migration 0003).

Layout (``docs/telemetry-storage.md`` explains why):

* ``ts_log``: the append-only ingest log, one row per committed batch (its packed blob).
* ``ts_blocks``: per-series blocks of up to ``BLOCK_MAX_POINTS`` points with summaries, written by
  compaction behind the log and keyed ``(series_pk, t_start)``; blocks of a series never overlap.
* ``ts_latest``: the newest point of every series (packed), upserted by each append.
* ``ts_events``: event documents keyed ``(device_pk, ts, body_hash)`` (an identical resend is
  stored once), which is also the index of reads by device and time.
* ``ts_msg_ids``: message ids already committed (resend de-duplication), trimmed with the log.
* ``ts_state``: named counters: ``next_offset`` (the log's next offset) and ``compacted_upto``
  (the watermark: every log item below it is in blocks).
* ``ts_tombstones``: series deleted while some of their points were still in the uncompacted log;
  points of such a series with an offset below ``before_offset`` are dead.

No foreign keys point at ``sensors``/``devices``: the append path must not pay for their checks,
and deleting a sensor leaves its points to :meth:`TimeSeriesStore.delete_series`.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import metadata

# A 64-bit key that is the rowid on SQLite: an ``INTEGER PRIMARY KEY`` column aliases the table's
# b-tree key there, whereas ``BIGINT PRIMARY KEY`` would add a second b-tree to maintain. SQLite's
# INTEGER holds 64 bits anyway.
RowKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ts_log = sa.Table(
    "ts_log",
    metadata,
    sa.Column("first_offset", RowKey, primary_key=True, autoincrement=False),
    sa.Column("count", sa.Integer(), nullable=False),  # items: points, then events
    sa.Column("committed_ns", sa.BigInteger(), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),  # batch.encode()
)

ts_blocks = sa.Table(
    "ts_blocks",
    metadata,
    sa.Column("series_pk", sa.BigInteger(), nullable=False),
    sa.Column("t_start", sa.BigInteger(), nullable=False),  # ts of the first point
    sa.Column("t_end", sa.BigInteger(), nullable=False),  # ts of the last point (inclusive)
    sa.Column("count", sa.Integer(), nullable=False),
    # Summaries of the numeric points (double, long, boolean); NULL when the block has none.
    sa.Column("n_numeric", sa.Integer(), nullable=False),
    sa.Column("sum", sa.Float(), nullable=True),
    sa.Column("min", sa.Float(), nullable=True),
    sa.Column("max", sa.Float(), nullable=True),
    sa.Column("first_ts", sa.BigInteger(), nullable=True),
    sa.Column("first_value", sa.Float(), nullable=True),
    sa.Column("last_ts", sa.BigInteger(), nullable=True),
    sa.Column("last_value", sa.Float(), nullable=True),
    sa.Column("data", sa.LargeBinary(), nullable=False),  # blocks.encode_block()
    sa.PrimaryKeyConstraint("series_pk", "t_start"),
)

ts_latest = sa.Table(
    "ts_latest",
    metadata,
    sa.Column("series_pk", RowKey, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.BigInteger(), nullable=False),  # compared by the upsert
    # The point packed (engine.LATEST_RECORD, then the text of a string/json value): reading
    # 50,000 latest values is then one column per row, decoded with numpy (measured: 40% less
    # time than six columns, most of it Python objects per column).
    sa.Column("point", sa.LargeBinary(), nullable=False),
)

ts_events = sa.Table(
    "ts_events",
    metadata,
    sa.Column("device_pk", sa.BigInteger(), nullable=False),
    sa.Column("ts", sa.BigInteger(), nullable=False),
    sa.Column("body_hash", sa.BigInteger(), nullable=False),  # 64 bits of BLAKE2b of the body
    sa.Column("log_offset", sa.BigInteger(), nullable=False),  # the event's item offset
    sa.Column("recv", sa.BigInteger(), nullable=False),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("device_pk", "ts", "body_hash"),
)

ts_msg_ids = sa.Table(
    "ts_msg_ids",
    metadata,
    sa.Column("device_pk", sa.BigInteger(), nullable=False),
    sa.Column("msg_id", sa.Text(), nullable=False),
    sa.Column("committed_ns", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("device_pk", "msg_id"),
    # Ever-growing values land on the index's last page: cheap to maintain, and trim_log
    # drops old ids with a range scan.
    sa.Index(None, "committed_ns"),
    # Small rows: one b-tree keyed by the primary key instead of a rowid table plus an index.
    sqlite_with_rowid=False,
)

ts_state = sa.Table(
    "ts_state",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger(), nullable=False),
)

ts_tombstones = sa.Table(
    "ts_tombstones",
    metadata,
    sa.Column("series_pk", RowKey, primary_key=True, autoincrement=False),
    sa.Column("before_offset", sa.BigInteger(), nullable=False),
)

# The named counters of ts_state.
NEXT_OFFSET = "next_offset"
COMPACTED_UPTO = "compacted_upto"
STATE_ROWS = (NEXT_OFFSET, COMPACTED_UPTO)

# Columns read as a block's metadata and summary, in this order (see blocks.BlockMeta).
BLOCK_META_COLUMNS = (
    "series_pk, t_start, t_end, count, n_numeric, sum, min, max, "
    "first_ts, first_value, last_ts, last_value"
)
