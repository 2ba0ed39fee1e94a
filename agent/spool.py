"""The spool: datums CloudWatch has not accepted yet, kept in SQLite until a request carrying them succeeds.

One row per datum, its fields as JSON. WAL mode with `synchronous=FULL`: a committed write survives a
SIGKILL and a power loss, and reads never wait for a writer. Writes happen only when something could
not be delivered and when replay deletes what was delivered, so the healthy path never touches the disk.

The size bound counts the database's used pages ((page_count − freelist_count) × page_size), which is
what the file holds once SQLite reuses freed pages; the WAL beside it is cut back to WAL_SIZE_LIMIT
after each checkpoint. Nothing here is fatal to the agent: a file that is not a database is moved aside
and a fresh one started, a row that does not decode is skipped and counted, a failed write is counted.
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
from typing import Any, TypeVar

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
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS datums_by_age ON datums (timestamp);
"""

T = TypeVar("T")


class SpoolUnavailable(Exception):
    """The spool file cannot be created or written (missing or read-only directory, no permission)."""


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


def _datapoints(rows: Sequence[tuple[Any, ...]]) -> int:
    """Σ of the datapoints column; a damaged row's non-integer value counts as none."""
    return sum(row[0] for row in rows if isinstance(row[0], int))


class Spool:
    """Thread-safe: the publish worker writes and replays, the main loop reads the self-metrics."""

    def __init__(
        self,
        path: Path,
        *,
        stats: AgentStats,
        max_bytes: int = 256 * 1024 * 1024,
        max_age: float = MAX_AGE_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._stats = stats
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._wall_clock = wall_clock
        self._warn = LogOnce(log)
        self._lock = threading.Lock()
        self._datums = 0
        self._datapoints = 0
        self._connection: sqlite3.Connection | None = self._open()

    # --- opening and recovery ---------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as error:
            if not _is_corruption(error):
                raise SpoolUnavailable(f"{self.path}: {error}") from error
            self._move_aside(error)
        try:
            return self._connect()
        except sqlite3.Error as error:
            raise SpoolUnavailable(f"{self.path}: {error}") from error

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SpoolUnavailable(f"{self.path.parent}: {error.strerror or error}") from error
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            connection.executescript(SCHEMA)
            datums, datapoints = connection.execute("SELECT COUNT(*), TOTAL(datapoints) FROM datums").fetchone()
        except sqlite3.Error:
            connection.close()
            raise
        self._datums, self._datapoints = int(datums), int(datapoints)
        return connection

    def _move_aside(self, error: sqlite3.Error) -> None:
        """Keep the damaged file for inspection and start afresh; what it held cannot be counted."""
        moved_to = self.path.with_name(f"{self.path.name}.corrupt-{int(self._wall_clock())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            try:
                if source.exists():
                    source.replace(f"{moved_to}{suffix}")
            except OSError as move_error:
                raise SpoolUnavailable(f"{source}: cannot move it aside: {move_error.strerror}") from error
        self._datums = self._datapoints = 0
        log.warning("spool_corrupt_moved_aside", path=str(self.path), moved_to=str(moved_to), error=str(error))

    def _recover(self, error: sqlite3.Error) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        try:
            self._move_aside(error)
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
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if connection.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    # --- what the publisher and the replayer call -------------------------------------------------

    def put(self, datums: Sequence[Datum], reason: str) -> None:
        """Keep datums that could not be delivered (`reason`: the error code); the Publisher's seam."""
        cutoff = self._wall_clock() - self._max_age
        too_old = sum(datum.datapoints for datum in datums if datum.timestamp < cutoff)
        if too_old:
            self._stats.add_dropped("too_old", too_old)
        fresh = [datum for datum in datums if datum.timestamp >= cutoff]
        if not fresh:
            return
        rows = [(datum.timestamp, datum.datapoints, encode(datum)) for datum in fresh]

        def insert(connection: sqlite3.Connection) -> tuple[int, int]:
            with self._transaction(connection):
                connection.executemany("INSERT INTO datums (timestamp, datapoints, body) VALUES (?, ?, ?)", rows)
                return self._evict_to_fit(connection, self._datums + len(rows))

        with self._lock:
            evicted = self._guarded(insert, failed=None)
            if evicted is None:
                self._stats.add_dropped("spool_unwritable", sum(row[1] for row in rows))
                return
            evicted_datums, evicted_datapoints = evicted
            self._datums += len(rows) - evicted_datums
            self._datapoints += sum(row[1] for row in rows) - evicted_datapoints
        if evicted_datums:
            self._stats.add_dropped("spool_full", evicted_datapoints)
            self._warn.warning("spool_full", "spool_full", path=str(self.path), max_bytes=self._max_bytes)
        log.debug("spooled", datums=len(rows), reason=reason)

    def _evict_to_fit(self, connection: sqlite3.Connection, datums: int) -> tuple[int, int]:
        """Delete the oldest rows until the used pages fit max_bytes; returns (datums, datapoints) deleted."""
        evicted_datums = evicted_datapoints = 0
        while evicted_datums < datums:
            used = self._used_bytes(connection)
            if used <= self._max_bytes:
                break
            # Rows are similar in size: evict the share of rows that matches the excess, then measure again.
            count = max(1, math.ceil((datums - evicted_datums) * (used - self._max_bytes) / used))
            evicted = connection.execute(
                "DELETE FROM datums WHERE id IN (SELECT id FROM datums ORDER BY timestamp, id LIMIT ?) "
                "RETURNING datapoints", (count,),
            ).fetchall()
            if not evicted:
                break
            evicted_datums += len(evicted)
            evicted_datapoints += _datapoints(evicted)
        return evicted_datums, evicted_datapoints

    @staticmethod
    def _used_bytes(connection: sqlite3.Connection) -> int:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        page_count = connection.execute("PRAGMA page_count").fetchone()[0]
        free_pages = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page_size * (page_count - free_pages))

    def oldest(self, limit: int) -> list[tuple[int, Datum]]:
        """Up to `limit` spooled datums, oldest first, with their row ids; too-old and undecodable rows
        are deleted on the way and counted as dropped."""

        def read(connection: sqlite3.Connection) -> list[tuple[int, Datum]]:
            self._drop_too_old(connection)
            rows = connection.execute(
                "SELECT id, datapoints, body FROM datums ORDER BY timestamp, id LIMIT ?", (limit,)
            ).fetchall()
            found: list[tuple[int, Datum]] = []
            undecodable: list[tuple[int, Any]] = []
            for row_id, datapoints, body in rows:
                try:
                    found.append((row_id, decode(body)))
                except ValueError as error:
                    undecodable.append((row_id, datapoints))
                    self._warn.warning("undecodable", "spool_row_undecodable", path=str(self.path),
                                       row=row_id, error=str(error))
            if undecodable:
                self._delete(connection, [row_id for row_id, _ in undecodable])
                self._stats.add_dropped("spool_corrupt", _datapoints([(n,) for _, n in undecodable]))
            return found

        with self._lock:
            return self._guarded(read, failed=[])

    def _drop_too_old(self, connection: sqlite3.Connection) -> None:
        cutoff = self._wall_clock() - self._max_age
        with self._transaction(connection):
            expired = connection.execute(
                "DELETE FROM datums WHERE timestamp < ? RETURNING datapoints", (cutoff,)
            ).fetchall()
        if expired:
            datapoints = _datapoints(expired)
            self._datums -= len(expired)
            self._datapoints -= datapoints
            self._stats.add_dropped("too_old", datapoints)

    def delete(self, ids: Sequence[int]) -> None:
        """Forget rows whose datums a successful request carried."""
        with self._lock:
            self._guarded(lambda connection: self._delete(connection, ids), failed=None)

    def _delete(self, connection: sqlite3.Connection, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), IDS_PER_STATEMENT):
            chunk = ids[start : start + IDS_PER_STATEMENT]
            marks = ",".join("?" * len(chunk))
            with self._transaction(connection):
                deleted = connection.execute(
                    f"DELETE FROM datums WHERE id IN ({marks}) RETURNING datapoints", chunk
                ).fetchall()
            self._datums -= len(deleted)
            self._datapoints -= _datapoints(deleted)

    # --- what the agent reads ---------------------------------------------------------------------

    @property
    def datums(self) -> int:
        return self._datums

    @property
    def datapoints(self) -> int:
        return self._datapoints

    def samples(self) -> list[Sample]:
        """SpoolDatums, and SpoolOldestAgeSeconds while anything is spooled."""
        component = {"Component": COMPONENT}

        def oldest_timestamp(connection: sqlite3.Connection) -> Any:
            return connection.execute("SELECT MIN(timestamp) FROM datums").fetchone()[0]

        with self._lock:
            datums = self._datums
            oldest = self._guarded(oldest_timestamp, failed=None) if datums else None
        samples = [METRICS["SpoolDatums"].sample(datums, **component)]
        if oldest is not None:
            samples.append(METRICS["SpoolOldestAgeSeconds"].sample(self._wall_clock() - oldest, **component))
        return samples

    def close(self) -> None:
        """Checkpoint and close; later calls do nothing (a publish thread may still be finishing)."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as error:
                log.warning("spool_checkpoint_failed", path=str(self.path), error=str(error))
            connection.close()


def open_spool(config: SpoolConfig, stats: AgentStats) -> Spool | None:
    """The configured spool, or None when it is disabled or its path cannot be written.

    Running without one (say, by hand, without /var/lib/infrawatch) is allowed on purpose: one warning
    names the path, and undeliverable datapoints are then dropped and counted as `undeliverable`. The
    agent does not fall back to another directory, so its data never ends up where nobody looks.
    """
    if not config.enabled:
        return None
    try:
        return Spool(Path(config.path), stats=stats, max_bytes=config.max_bytes)
    except SpoolUnavailable as error:
        log.warning("spool_unavailable", path=config.path, error=str(error),
                    consequence="undeliverable datapoints are dropped and counted")
        return None
