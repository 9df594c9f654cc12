"""The PostgreSQL time-series backend: asyncpg directly, with a pool of its own.

An append is one transaction of a few statements whatever the batch size: the latest values and
message ids as arrays (``unnest``), then the log offset, taken by updating the ``next_offset`` row.
That row lock, held until COMMIT, makes appends of every process commit in offset order, so a
consumer reading the log by offset never sees a gap filled later. Taking it last keeps it short.

Compaction, retention and deletions of blocks lock the ``compacted_upto`` row first: across every
process, one of them at a time rewrites blocks. Reads run in a REPEATABLE READ READ ONLY
transaction (one snapshot), their numpy work in a worker thread that hands each statement back to
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import orjson

from roost.errors import ConfigError, Unavailable
from roost.telemetry.engine.base import Latest, StoredEvent
from roost.telemetry.engine.batch import DecodedBatch
from roost.telemetry.engine.blocks import BlockMeta, Span
from roost.telemetry.engine.compaction import CompactionPlan
from roost.telemetry.engine.engine import (
    BlockStore,
    PreparedAppend,
    ReadSession,
    StoreOptions,
    clamp_ns,
    prepare_append,
)
from roost.telemetry.engine.records import LATEST_RECORD, latest_lookup, unpack_latest
from roost.telemetry.engine.tables import BLOCK_META_COLUMNS, COMPACTED_UPTO, NEXT_OFFSET

T = TypeVar("T")

# Connections of this store per process (besides the relational store's pool): appends are
# serialised by the offset lock anyway, so a few serve one writer, compaction and readers.
POOL_SIZE = 4
# Rows deleted per transaction by trim_log, drop_before: keeps each transaction short.
DELETE_CHUNK_ROWS = 5_000
_I64_MIN = -(2**63)
_BLOCK_COLUMNS = [
    "series_pk", "t_start", "t_end", "count", "n_numeric", "sum", "min", "max",
    "first_ts", "first_value", "last_ts", "last_value", "data",
]  # fmt: skip
_SERIES_OF_TENANT = (
    "SELECT s.pk FROM sensors AS s JOIN devices AS d ON d.pk = s.device_pk WHERE d.tenant_id = $1"
)
_UPSERT_LATEST = (
    "INSERT INTO ts_latest AS l (series_pk, ts, point) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) "
    "ON CONFLICT (series_pk) DO UPDATE SET ts = excluded.ts, point = excluded.point "
    "WHERE excluded.ts >= l.ts"
)
_BLOCKS_OVERLAPPING = (
    f"SELECT {BLOCK_META_COLUMNS} FROM ts_blocks WHERE series_pk = $1 AND t_start < $2 "
    "AND t_start >= coalesce((SELECT max(t_start) FROM ts_blocks "
    "WHERE series_pk = $1 AND t_start <= $3), $3) AND t_end >= $3 ORDER BY t_start"
)
_MERGE_CANDIDATES = (
    "SELECT r.s, b.t_start, b.t_end, b.count "
    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(s, lo, hi) "
    "CROSS JOIN LATERAL ((SELECT t_start, t_end, count FROM ts_blocks WHERE series_pk = r.s "
    "ORDER BY t_start DESC LIMIT $4) UNION "
    "(SELECT t_start, t_end, count FROM ts_blocks WHERE series_pk = r.s AND t_start <= r.hi "
    "AND t_start >= coalesce((SELECT max(t_start) FROM ts_blocks WHERE series_pk = r.s "
    "AND t_start <= r.lo), r.lo))) AS b"
)


def asyncpg_dsn(url: str) -> str:
    """``postgresql://…`` (or SQLAlchemy's ``postgresql+asyncpg://…``) as an asyncpg DSN."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
        raise ConfigError(f"expected postgresql://…, got {url!r}")
    return f"postgresql://{rest}"


class PostgresSession:
    """A read snapshot on one connection, used from a worker thread (see engine.ReadSession)."""

    def __init__(self, conn: asyncpg.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop

    def _run(self, query: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(query, self.loop).result()

    def _fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = self._run(self.conn.fetch(sql, *args))
        return rows

    def watermark(self) -> int:
        value = self._run(
            self.conn.fetchval("SELECT value FROM ts_state WHERE name = $1", COMPACTED_UPTO)
        )
        return int(value)

    def log_rows(
        self, start: int, stop: int | None, limit: int | None
    ) -> list[tuple[int, int, bytes]]:
        rows = self._fetch(
            "SELECT first_offset, count, data FROM ts_log WHERE first_offset >= $1 "
            "AND ($2::bigint IS NULL OR first_offset < $2) ORDER BY first_offset LIMIT $3",
            start,
            stop,
            limit,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def log_after(self, after_offset: int, limit: int) -> list[tuple[int, bytes]]:
        rows = self._fetch(
            "SELECT first_offset, data FROM ts_log WHERE first_offset >= coalesce("
            "(SELECT max(first_offset) FROM ts_log WHERE first_offset <= $1), $2) "
            "AND first_offset + count - 1 > $1 ORDER BY first_offset LIMIT $3",
            after_offset,
            _I64_MIN,
            limit,
        )
        return [(r[0], r[1]) for r in rows]

    def tombstones(self, series: int | None) -> dict[int, int]:
        rows = self._fetch(
            "SELECT series_pk, before_offset FROM ts_tombstones "
            "WHERE $1::bigint IS NULL OR series_pk = $1",
            series,
        )
        return {r[0]: r[1] for r in rows}

    def block_metas(self, series: int, start: int, end: int) -> list[BlockMeta]:
        rows = self._fetch(_BLOCKS_OVERLAPPING, series, end, start)
        return [BlockMeta.from_row(row) for row in rows]

    def merge_candidates(
        self, ranges: Sequence[tuple[int, int, int]], last_blocks: int
    ) -> dict[int, list[Span]]:
        series, lo, hi = (list(column) for column in zip(*ranges, strict=True))
        rows = self._fetch(_MERGE_CANDIDATES, series, lo, hi, last_blocks)
        out: dict[int, list[Span]] = {}
        for row in sorted(rows, key=lambda r: (r[0], r[1])):
            out.setdefault(row[0], []).append(Span(row[1], row[2], row[3]))
        return out

    def block_data(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        rows = self._fetch(
            "SELECT b.series_pk, b.t_start, b.data FROM ts_blocks AS b "
            "JOIN unnest($1::bigint[], $2::bigint[]) AS k(s, t) "
            "ON b.series_pk = k.s AND b.t_start = k.t",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r[0], r[1]): r[2] for r in rows}

    def block_layout(self, series: int) -> list[tuple[int, int, int]]:
        rows = self._fetch(
            "SELECT t_start, t_end, count FROM ts_blocks WHERE series_pk = $1 ORDER BY t_start",
            series,
        )
        return [(r[0], r[1], r[2]) for r in rows]


class PostgresTimeSeriesStore(BlockStore):
    """Telemetry in PostgreSQL, shared by any number of Roost processes."""

    def __init__(
        self, url: str, *, options: StoreOptions | None = None, pool_size: int = POOL_SIZE
    ) -> None:
        super().__init__(options or StoreOptions())
        self.dsn = asyncpg_dsn(url)
        self._pool_size = max(2, pool_size)
        self._pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise Unavailable("the time-series store is not open")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except asyncpg.UndefinedTableError as exc:
            raise ConfigError("the time-series tables are missing: run `roost db upgrade`") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise Unavailable(f"the PostgreSQL time-series store failed: {exc}") from exc

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self._pool_size)
        except (asyncpg.PostgresError, OSError) as exc:
            raise Unavailable(f"cannot reach PostgreSQL for the time-series store: {exc}") from exc
        try:
            async with self._conn() as conn:
                await conn.executemany(
                    "INSERT INTO ts_state (name, value) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                    [(NEXT_OFFSET,), (COMPACTED_UPTO,)],
                )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self._cache.clear()

    async def _read(self, work: Callable[[ReadSession], T]) -> T:
        async with self._conn() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await _on_thread(work, conn)

    # -- writing -----------------------------------------------------------------------------

    async def _commit(self, batch: DecodedBatch) -> tuple[int, PreparedAppend]:
        prepared = await asyncio.to_thread(prepare_append, batch)
        async with self._conn() as conn:
            async with conn.transaction():
                first_offset = await _append(conn, prepared)
        self._remember(first_offset, prepared)
        return first_offset, prepared

    async def known_msg_ids(self, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        if not pairs:
            return set()
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT m.device_pk, m.msg_id FROM ts_msg_ids AS m "
                "JOIN unnest($1::bigint[], $2::text[]) AS u(d, i) "
                "ON m.device_pk = u.d AND m.msg_id = u.i",
                [p[0] for p in pairs],
                [p[1] for p in pairs],
            )
        return {(r[0], r[1]) for r in rows}

    # -- reading -----------------------------------------------------------------------------

    async def latest(self, series: Sequence[int]) -> list[Latest]:
        if not series:
            return []
        lo, hi, only, wanted = latest_lookup(series)
        select = (
            "SELECT string_agg(point, ''::bytea) FILTER (WHERE length(point) = $1), "
            "array_agg(point) FILTER (WHERE length(point) > $1) FROM ts_latest "
        )
        async with self._conn() as conn:
            if only is not None:
                row = await conn.fetchrow(
                    select + "WHERE series_pk BETWEEN $2 AND $3", LATEST_RECORD.itemsize, lo, hi
                )
            else:
                row = await conn.fetchrow(
                    select + "WHERE series_pk = ANY($2::bigint[])",
                    LATEST_RECORD.itemsize,
                    wanted.tolist(),
                )
        assert row is not None
        return await asyncio.to_thread(unpack_latest, row[0] or b"", row[1] or [], only)

    async def events(
        self,
        device_pk: int,
        start: int,
        end: int,
        *,
        types: Sequence[str] | None = None,
        limit: int,
        descending: bool = False,
    ) -> list[StoredEvent]:
        if limit <= 0 or (types is not None and not types):
            return []
        start, end = clamp_ns(start), clamp_ns(end)
        order = "DESC" if descending else "ASC"
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT log_offset, device_pk, ts, recv, type, body FROM ts_events "
                "WHERE device_pk = $1 AND ts >= $2 AND ts < $3 "
                "AND ($4::text[] IS NULL OR type = ANY($4::text[])) "
                f"ORDER BY ts {order}, log_offset {order} LIMIT $5",
                device_pk,
                start,
                end,
                None if types is None else list(types),
                limit,
            )
        return [StoredEvent(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]

    async def log_bounds(self) -> tuple[int, int]:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT value FROM ts_state WHERE name = $1), "
                "(SELECT min(first_offset) FROM ts_log)",
                NEXT_OFFSET,
            )
        assert row is not None
        next_offset = int(row[0])
        return (next_offset if row[1] is None else int(row[1])), next_offset

    # -- maintenance -------------------------------------------------------------------------

    async def _compact(self, plan: Callable[[ReadSession], CompactionPlan]) -> CompactionPlan:
        async with self._conn() as conn:
            async with conn.transaction():
                await _lock_blocks(conn)
                planned = await _on_thread(plan, conn)
                if planned.log_rows:
                    await _apply(conn, planned)
        return planned

    async def trim_log(self, older_than_ns: int) -> int:
        older_than_ns = clamp_ns(older_than_ns)
        trimmed = 0
        async with self._conn() as conn:
            while True:
                status = await conn.execute(
                    "DELETE FROM ts_log WHERE first_offset IN (SELECT first_offset FROM ts_log "
                    "WHERE first_offset < (SELECT value FROM ts_state WHERE name = $1) "
                    "AND committed_ns < $2 ORDER BY first_offset LIMIT $3)",
                    COMPACTED_UPTO,
                    older_than_ns,
                    DELETE_CHUNK_ROWS,
                )
                n = _rowcount(status)
                trimmed += n
                if n < DELETE_CHUNK_ROWS:
                    break
            while True:
                status = await conn.execute(
                    "DELETE FROM ts_msg_ids WHERE (device_pk, msg_id) IN (SELECT device_pk, "
                    "msg_id FROM ts_msg_ids WHERE committed_ns < $1 LIMIT $2)",
                    older_than_ns,
                    DELETE_CHUNK_ROWS,
                )
                if _rowcount(status) < DELETE_CHUNK_ROWS:
                    break
        return trimmed

    async def drop_before(self, tenant_id: str, cutoff_ns: int, max_rows: int = 10_000) -> int:
        cutoff_ns = clamp_ns(cutoff_ns)
        statements = (
            (
                "DELETE FROM ts_blocks WHERE (series_pk, t_start) IN (SELECT series_pk, t_start "
                f"FROM ts_blocks WHERE series_pk IN ({_SERIES_OF_TENANT}) AND t_start < $2 "
                "AND t_end < $2 LIMIT $3)",
                True,
            ),
            (
                "DELETE FROM ts_events WHERE (device_pk, ts, body_hash) IN (SELECT device_pk, "
                "ts, body_hash FROM ts_events WHERE device_pk IN "
                "(SELECT pk FROM devices WHERE tenant_id = $1) AND ts < $2 LIMIT $3)",
                False,
            ),
            (
                "DELETE FROM ts_latest WHERE series_pk IN (SELECT series_pk FROM ts_latest "
                f"WHERE series_pk IN ({_SERIES_OF_TENANT}) AND ts < $2 LIMIT $3)",
                False,
            ),
        )
        dropped = 0
        async with self._conn() as conn:
            for sql, blocks in statements:
                while dropped < max_rows:
                    chunk = min(DELETE_CHUNK_ROWS, max_rows - dropped)
                    async with conn.transaction():
                        if blocks:
                            await _lock_blocks(conn)
                        n = _rowcount(await conn.execute(sql, tenant_id, cutoff_ns, chunk))
                    dropped += n
                    if n < chunk:
                        break
        return dropped

    async def delete_series(self, series: Sequence[int]) -> None:
        keys = sorted({int(s) for s in series})
        if not keys:
            return
        async with self._conn() as conn:
            async with conn.transaction():
                watermark = await _lock_blocks(conn)
                next_offset = await conn.fetchval(
                    "SELECT value FROM ts_state WHERE name = $1", NEXT_OFFSET
                )
                if next_offset > watermark:
                    await conn.execute(
                        "INSERT INTO ts_tombstones (series_pk, before_offset) "
                        "SELECT s, $2 FROM unnest($1::bigint[]) AS s ON CONFLICT (series_pk) "
                        "DO UPDATE SET before_offset = excluded.before_offset",
                        keys,
                        next_offset,
                    )
                await conn.execute(
                    "DELETE FROM ts_blocks WHERE series_pk = ANY($1::bigint[])", keys
                )
                await conn.execute(
                    "DELETE FROM ts_latest WHERE series_pk = ANY($1::bigint[])", keys
                )


async def _on_thread(work: Callable[[ReadSession], T], conn: asyncpg.Connection) -> T:
    """Run ``work`` on a worker thread with a session on ``conn``; wait for it to finish even
    when cancelled, so that the connection is never released while the thread still uses it."""
    session = PostgresSession(conn, asyncio.get_running_loop())
    running = asyncio.ensure_future(asyncio.to_thread(work, session))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await running
        raise


def _rowcount(status: str) -> int:
    """Rows touched, from a command status such as ``DELETE 42``."""
    return int(status.rsplit(" ", 1)[-1])


async def _lock_blocks(conn: asyncpg.Connection) -> int:
    """Take the block-rewriting lock (the watermark row) for this transaction; answer it."""
    value = await conn.fetchval(
        "SELECT value FROM ts_state WHERE name = $1 FOR UPDATE", COMPACTED_UPTO
    )
    return int(value)


async def _append(conn: asyncpg.Connection, prepared: PreparedAppend) -> int:
    """The statements of one append inside its transaction; answers the first offset."""
    if prepared.latest_series:
        await conn.execute(
            _UPSERT_LATEST,
            prepared.latest_series,
            prepared.latest_ts,
            prepared.latest_points,
        )
    if prepared.msg_ids:
        await conn.execute(
            "INSERT INTO ts_msg_ids (device_pk, msg_id, committed_ns) "
            "SELECT d, i, $3 FROM unnest($1::bigint[], $2::text[]) AS u(d, i) "
            "ON CONFLICT DO NOTHING",
            [m[0] for m in prepared.msg_ids],
            [m[1] for m in prepared.msg_ids],
            prepared.committed_ns,
        )
    if not prepared.count:  # a batch of nothing but message ids takes no offset
        value = await conn.fetchval("SELECT value FROM ts_state WHERE name = $1", NEXT_OFFSET)
        return int(value)
    # Last, so that the lock serialising appends is held only for the log row and COMMIT.
    first_offset = int(
        await conn.fetchval(
            "UPDATE ts_state SET value = value + $1 WHERE name = $2 RETURNING value - $1",
            prepared.count,
            NEXT_OFFSET,
        )
    )
    await conn.execute(
        "INSERT INTO ts_log (first_offset, count, committed_ns, data) VALUES ($1, $2, $3, $4)",
        first_offset,
        prepared.count,
        prepared.committed_ns,
        prepared.blob,
    )
    if prepared.events:
        rows = prepared.event_rows(first_offset)
        await conn.execute(
            "INSERT INTO ts_events (device_pk, ts, body_hash, log_offset, recv, type, body) "
            "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], "
            "$5::bigint[], $6::text[], $7::text[]) ON CONFLICT DO NOTHING",
            *(list(column) for column in zip(*rows, strict=True)),
        )
    return first_offset


async def _apply(conn: asyncpg.Connection, plan: CompactionPlan) -> None:
    """Write a compaction plan inside the transaction holding the block lock."""
    if plan.deletes:
        await conn.execute(
            "DELETE FROM ts_blocks AS b USING unnest($1::bigint[], $2::bigint[]) AS k(s, t) "
            "WHERE b.series_pk = k.s AND b.t_start = k.t",
            [k[0] for k in plan.deletes],
            [k[1] for k in plan.deletes],
        )
    if plan.inserts:
        await conn.copy_records_to_table("ts_blocks", records=plan.inserts, columns=_BLOCK_COLUMNS)
    await conn.execute("UPDATE ts_state SET value = $1 WHERE name = $2", plan.upto, COMPACTED_UPTO)
    await conn.execute("DELETE FROM ts_tombstones WHERE before_offset <= $1", plan.upto)
