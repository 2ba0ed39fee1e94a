"""The spool: datums CloudWatch has not accepted yet, kept in SQLite until a request carrying them succeeds.

One row per datum, its fields as JSON, with the namespace it was meant for: replay sends every row to
that namespace, so a reload that changes the namespace or the naming profile never backfills old datums
under the new name. WAL mode with `synchronous=FULL`: a committed write survives a SIGKILL and a power
loss, and reads never wait for a writer. Writes happen only when something could not be delivered and
when replay deletes what was delivered, so the healthy path never touches the disk.

The size bound counts the database's used pages ((page_count − freelist_count) × page_size), which is
what the file holds once SQLite reuses freed pages; the WAL beside it is cut back to WAL_SIZE_LIMIT
after each checkpoint. Nothing here is fatal to the agent: a file that is not a database is moved aside
and a fresh one started, a row that does not decode is skipped and counted, a failed write is rolled
back and counted. Rows that a request delivered but that could not be deleted (disk full) are
remembered and never read again; `settle` deletes them once the disk allows.

A spool file written before rows carried their namespace gets the column on open, every old row under
the namespace configured at that open: the one the agent most likely wrote them for.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import structlog

from agent import cloudwatch_rules
from agent.aggregate import Datum
from agent.catalogue import METRICS
from agent.config import SpoolConfig
from agent.logs import LogOnce
from agent.samples import Sample
from agent.selfstats import COMPONENT, AgentStats

log = structlog.get_logger()

# CloudWatch accepts timestamps up to 14 days old; half a day of margin covers clock skew and the time
# replay takes to reach a datum, so nothing is sent that CloudWatch would reject for its age.
MAX_AGE_SECONDS = cloudwatch_rules.MAX_AGE_SECONDS - 12 * 3600
WAL_SIZE_LIMIT = 4 * 1024 * 1024
IDS_PER_STATEMENT = 500  # below SQLite's smallest host-parameter limit (999)

SCHEMA = """
CREATE TABLE IF NOT EXISTS datums (
    id INTEGER PRIMARY KEY,
    timestamp REAL NOT NULL,
    datapoints INTEGER NOT NULL,
    body TEXT NOT NULL,
    namespace TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS datums_by_age ON datums (timestamp);
"""

T = TypeVar("T")


class SpoolUnavailable(Exception):
    """The spool file cannot be created or written (missing or read-only directory, no permission)."""


class Spooled(NamedTuple):
    """One spooled row: its id, the namespace its datum is for, and the datum."""

    id: int
    namespace: str
    datum: Datum


def encode(datum: Datum) -> str:
    return json.dumps(
        [datum.name, datum.dimensions, datum.timestamp, datum.unit, datum.values, datum.counts,
         datum.storage_resolution],
        separators=(",", ":"),
    )


def decode(body: str) -> Datum:
    """The datum a row holds; ValueError if the row is not one `encode` wrote."""
    try:
        name, dims, timestamp, unit, values, counts, resolution = json.loads(body)
        datum = Datum(
            str(name), tuple((str(key), str(value)) for key, value in dims), float(timestamp), str(unit),
            tuple(float(value) for value in values), tuple(float(count) for count in counts), int(resolution),
        )
    except (TypeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"undecodable spool row: {error}") from error
    if not datum.values or len(datum.values) != len(datum.counts):
        raise ValueError("undecodable spool row: values and counts do not pair up")
    return datum


def _is_corruption(error: sqlite3.Error) -> bool:
    # SQLite reports "file is not a database" and "database disk image is malformed" as plain
    # DatabaseError; disk full, locks and permissions come as OperationalError and leave the file intact.
    return type(error) is sqlite3.DatabaseError


def _sql_text(value: str) -> str:
    """`value` as an SQL string literal (a column DEFAULT cannot be a bound parameter)."""
    return "'" + value.replace("'", "''") + "'"


class Spool:
    """Thread-safe: the publish worker writes and replays, the main loop reads the self-metrics.

    `namespace`: what `put` records when it is given none, and what rows of an older spool file get.
    `connection_factory`: the sqlite3.Connection class to open the file with (tests pass one that
    fails the way a full disk does)."""

    def __init__(
        self,
        path: Path,
        *,
        namespace: str,
        stats: AgentStats,
        max_bytes: int = 256 * 1024 * 1024,
        max_age: float = MAX_AGE_SECONDS,
        wall_clock: Callable[[], float] = time.time,
        connection_factory: type[sqlite3.Connection] = sqlite3.Connection,
    ) -> None:
        self.path = path
        self._namespace = namespace
        self._stats = stats
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._wall_clock = wall_clock
        self._factory = connection_factory
        self._warn = LogOnce(log)
        self._lock = threading.Lock()
        self._datums = 0
        self._datapoints = 0
        self._delivered: dict[int, int] = {}  # row id → datapoints: delivered, not deleted yet (disk full)
        self._connection: sqlite3.Connection | None = self._open()

    # --- opening and recovery ---------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as error:
            if not _is_corruption(error):
                raise SpoolUnavailable(f"{self.path}: {error}") from error
        try:  # _connect moved the damaged file aside
            return self._connect()
        except sqlite3.Error as error:
            raise SpoolUnavailable(f"{self.path}: {error}") from error

    def _connect(self) -> sqlite3.Connection:
        """Open the file (creating it and its directory), or move it aside if it is damaged and raise."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SpoolUnavailable(f"{self.path.parent}: {error.strerror or error}") from error
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, factory=self._factory)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            connection.executescript(SCHEMA)
            self._add_namespace_column(connection)
            datums, datapoints = connection.execute("SELECT COUNT(*), TOTAL(datapoints) FROM datums").fetchone()
        except sqlite3.Error as error:
            self._close_damaged(connection, error)
            raise
        self._datums, self._datapoints = int(datums), int(datapoints)
        return connection

    def _add_namespace_column(self, connection: sqlite3.Connection) -> None:
        """A spool file from before rows carried their namespace: its rows were written for the namespace
        configured then, most likely the one configured now. A column DEFAULT changes only the schema, so
        this needs no free disk space however many rows the file holds."""
        if "namespace" in [column[1] for column in connection.execute("PRAGMA table_info(datums)")]:
            return
        default = _sql_text(self._namespace)
        connection.execute(f"ALTER TABLE datums ADD COLUMN namespace TEXT NOT NULL DEFAULT {default}")
        log.info("spool_upgraded", path=str(self.path), namespace=self._namespace,
                 note="rows spooled by an earlier version go to this namespace")

    def _move_aside(self, error: sqlite3.Error) -> None:
        """Keep the damaged file for inspection and start afresh. Its -wal and -shm go with it: a fresh
        database beside an old WAL would have that WAL's pages applied to it."""
        moved_to = self.path.with_name(f"{self.path.name}.corrupt-{int(self._wall_clock())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            try:
                if source.exists():
                    source.replace(f"{moved_to}{suffix}")
            except OSError as move_error:
                raise SpoolUnavailable(f"{source}: cannot move it aside: {move_error.strerror}") from error
        self._datums = self._datapoints = 0
        self._delivered.clear()
        log.warning("spool_corrupt_moved_aside", path=str(self.path), moved_to=str(moved_to), error=str(error))

    def _close_damaged(self, connection: sqlite3.Connection, error: sqlite3.Error) -> None:
        """Close `connection`, first moving the file aside if `error` says it is damaged: closing the last
        connection deletes the -wal and -shm by name, which would lose them."""
        try:
            if _is_corruption(error):
                self._move_aside(error)
        finally:
            connection.close()

    def _recover(self, error: sqlite3.Error) -> None:
        """The file went bad under a running agent: what it held, by the counters, is lost and counted."""
        lost = self._datapoints - sum(self._delivered.values())
        connection, self._connection = self._connection, None
        if lost:
            self._stats.add_dropped("spool_corrupt", lost)
        try:
            if connection is not None:
                self._close_damaged(connection, error)
            self._connection = self._connect()
        except (sqlite3.Error, SpoolUnavailable) as reopen_error:
            log.error("spool_unavailable", path=str(self.path), error=str(reopen_error))

    def _guarded(self, operation: Callable[[sqlite3.Connection], T], failed: T) -> T:
        """Run `operation`; on a damaged file move it aside and run once more on a fresh one."""
        for attempt in range(2):
            if self._connection is None:
                return failed
            try:
                result = operation(self._connection)
            except sqlite3.Error as error:
                if not _is_corruption(error) or attempt == 1:
                    self._warn.warning("spool_error", "spool_error", variant=type(error).__name__,
                                       path=str(self.path), error=str(error))
                    return failed
                self._recover(error)
            else:
                self._warn.reset("spool_error")
                return result
        return failed

    @contextmanager
    def _transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        """BEGIN … COMMIT; on any failure, COMMIT's included, the transaction is rolled back, so the next
        write can begin one (SQLite ends it itself on a full disk, but keeps it open on SQLITE_BUSY)."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _forget(self, deleted: Sequence[tuple[Any, ...]]) -> int:
        """Take deleted (id, datapoints) rows off the counters; returns the datapoints among them that
        were never delivered (a damaged row's non-integer datapoints count as none)."""
        lost = 0
        for row_id, datapoints in deleted:
            counted = datapoints if isinstance(datapoints, int) else 0
            self._datums -= 1
            self._datapoints -= counted
            if self._delivered.pop(row_id, None) is None:
                lost += counted
        return lost

    # --- what the publisher and the replayer call -------------------------------------------------

    def put(self, datums: Sequence[Datum], reason: str, namespace: str | None = None) -> None:
        """Keep datums for `namespace` (default: the spool's) that could not be delivered (`reason`: the
        error code); the Publisher's `on_undeliverable` seam."""
        cutoff = self._wall_clock() - self._max_age
        too_old = sum(datum.datapoints for datum in datums if datum.timestamp < cutoff)
        if too_old:
            self._stats.add_dropped("too_old", too_old)
        chosen = namespace or self._namespace
        rows = [(datum.timestamp, datum.datapoints, encode(datum), chosen) for datum in datums
                if datum.timestamp >= cutoff]
        if not rows:
            return
        datapoints = sum(row[1] for row in rows)

        def insert(connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
            with self._transaction(connection):
                connection.executemany(
                    "INSERT INTO datums (timestamp, datapoints, body, namespace) VALUES (?, ?, ?, ?)", rows)
                return self._evict_to_fit(connection, self._datums + len(rows))

        with self._lock:
            evicted = self._guarded(insert, failed=None)
            if evicted is None:
                self._stats.add_dropped("spool_unwritable", datapoints)
                return
            self._datums += len(rows)
            self._datapoints += datapoints
            lost = self._forget(evicted)
        if lost:  # evicting a row that was delivered already loses nothing
            self._stats.add_dropped("spool_full", lost)
            self._warn.warning("spool_full", "spool_full", path=str(self.path), max_bytes=self._max_bytes)
        log.debug("spooled", datums=len(rows), reason=reason, namespace=chosen)

    def _evict_to_fit(self, connection: sqlite3.Connection, datums: int) -> list[tuple[Any, ...]]:
        """Delete the oldest rows until the used pages fit max_bytes; returns the (id, datapoints) deleted."""
        evicted: list[tuple[Any, ...]] = []
        while len(evicted) < datums:
            used = self._used_bytes(connection)
            if used <= self._max_bytes:
                break
            # Rows are similar in size: evict the share of rows that matches the excess, then measure again.
            count = max(1, math.ceil((datums - len(evicted)) * (used - self._max_bytes) / used))
            deleted = connection.execute(
                "DELETE FROM datums WHERE id IN (SELECT id FROM datums ORDER BY timestamp, id LIMIT ?) "
                "RETURNING id, datapoints", (count,),
            ).fetchall()
            if not deleted:
                break
            evicted += deleted
        return evicted

    @staticmethod
    def _used_bytes(connection: sqlite3.Connection) -> int:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        page_count = connection.execute("PRAGMA page_count").fetchone()[0]
        free_pages = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page_size * (page_count - free_pages))

    def oldest(self, limit: int) -> list[Spooled]:
        """Up to `limit` spooled rows, oldest first, never one already delivered; too-old and undecodable
        rows are deleted on the way and counted as dropped."""

        def read(connection: sqlite3.Connection) -> list[Spooled]:
            self._drop_too_old(connection)
            rows = connection.execute(
                "SELECT id, namespace, datapoints, body FROM datums ORDER BY timestamp, id LIMIT ?",
                (limit + len(self._delivered),),
            ).fetchall()
            found: list[Spooled] = []
            undecodable: list[int] = []
            for row_id, namespace, _, body in rows:
                if row_id in self._delivered:
                    continue
                try:
                    found.append(Spooled(row_id, str(namespace), decode(body)))
                except ValueError as error:
                    undecodable.append(row_id)
                    self._warn.warning("undecodable", "spool_row_undecodable", path=str(self.path),
                                       row=row_id, error=str(error))
            if undecodable:
                self._stats.add_dropped("spool_corrupt", self._delete(connection, undecodable))
            return found[:limit]

        with self._lock:
            return self._guarded(read, failed=[])

    def _drop_too_old(self, connection: sqlite3.Connection) -> None:
        cutoff = self._wall_clock() - self._max_age
        if connection.execute("SELECT 1 FROM datums WHERE timestamp < ? LIMIT 1", (cutoff,)).fetchone() is None:
            return  # reading needs no write lock: a reader gets through while another process writes
        with self._transaction(connection):
            expired = connection.execute(
                "DELETE FROM datums WHERE timestamp < ? RETURNING id, datapoints", (cutoff,)
            ).fetchall()
        lost = self._forget(expired)
        if lost:
            self._stats.add_dropped("too_old", lost)

    def delete(self, rows: Sequence[Spooled]) -> bool:
        """Forget rows a successful request carried. False if they could not be deleted: they are then
        remembered as delivered, never read again, and deleted by a later `settle` or `close`."""
        with self._lock:
            self._delivered.update((row.id, row.datum.datapoints) for row in rows)
            return self._guarded(self._settle, failed=False)

    def settle(self) -> bool:
        """Delete the delivered rows an earlier `delete` could not; True once none is left."""
        with self._lock:
            return not self._delivered or self._guarded(self._settle, failed=False)

    def _settle(self, connection: sqlite3.Connection) -> bool:
        self._delete(connection, list(self._delivered))
        return True

    def _delete(self, connection: sqlite3.Connection, ids: Sequence[int]) -> int:
        """Delete rows by id; returns the datapoints among them that were never delivered."""
        lost = 0
        for start in range(0, len(ids), IDS_PER_STATEMENT):
            chunk = ids[start : start + IDS_PER_STATEMENT]
            marks = ",".join("?" * len(chunk))
            with self._transaction(connection):
                deleted = connection.execute(
                    f"DELETE FROM datums WHERE id IN ({marks}) RETURNING id, datapoints", chunk
                ).fetchall()
            lost += self._forget(deleted)
            for row_id in chunk:  # gone, whether this statement or an earlier eviction deleted it
                self._delivered.pop(row_id, None)
        return lost

    # --- what the agent reads ---------------------------------------------------------------------

    @property
    def datums(self) -> int:
        return self._datums

    @property
    def datapoints(self) -> int:
        return self._datapoints

    @property
    def undeleted(self) -> int:
        """Rows delivered but not deleted yet (the disk refused): replay waits until they are gone."""
        return len(self._delivered)

    def samples(self) -> list[Sample]:
        """SpoolDatums; SpoolOldestAgeSeconds while anything is spooled; SpoolReplayStopped while rows
        replay delivered cannot be deleted."""
        component = {"Component": COMPONENT}

        def oldest_timestamp(connection: sqlite3.Connection) -> Any:
            return connection.execute("SELECT MIN(timestamp) FROM datums").fetchone()[0]

        with self._lock:
            datums = self._datums
            oldest = self._guarded(oldest_timestamp, failed=None) if datums else None
            stopped = bool(self._delivered)
        samples = [METRICS["SpoolDatums"].sample(datums, **component)]
        if oldest is not None:
            samples.append(METRICS["SpoolOldestAgeSeconds"].sample(self._wall_clock() - oldest, **component))
        if stopped:
            samples.append(METRICS["SpoolReplayStopped"].sample(1, **component))
        return samples

    def close(self) -> None:
        """Checkpoint, delete what was delivered if the disk now allows, and close; later calls do
        nothing (a publish thread may still be finishing)."""
        with self._lock:
            if self._connection is None:
                return
            try:
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # first: a shorter WAL frees disk
            except sqlite3.Error as error:
                log.warning("spool_checkpoint_failed", path=str(self.path), error=str(error))
            if self._delivered and not self._guarded(self._settle, failed=False):
                log.warning("spool_delivered_not_deleted", path=str(self.path), datums=len(self._delivered),
                            consequence="replayed once more after the restart")
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def open_spool(config: SpoolConfig, stats: AgentStats, namespace: str) -> Spool | None:
    """The configured spool, or None when it is disabled or its path cannot be written.

    `namespace`: the configured one, for rows of a spool file written before rows carried theirs.
    Running without a spool (say, by hand, without /var/lib/infrawatch) is allowed on purpose: one
    warning names the path, and undeliverable datapoints are then dropped and counted as `undeliverable`.
    The agent does not fall back to another directory, so its data never ends up where nobody looks.
    """
    if not config.enabled:
        return None
    try:
        return Spool(Path(config.path), namespace=namespace, stats=stats, max_bytes=config.max_bytes)
    except SpoolUnavailable as error:
        log.warning("spool_unavailable", path=config.path, error=str(error),
                    consequence="undeliverable datapoints are dropped and counted")
        return None
