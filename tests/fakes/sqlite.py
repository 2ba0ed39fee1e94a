"""sqlite3 connections that fail the way SQLite does on a full disk or a held lock, for Spool's
`connection_factory`. Everything else is the real SQLite on a real file.

A full disk, as observed on a 1 MiB tmpfs filled to its last block (bench/spool_full_disk.py): a write
statement succeeds (its pages change in the cache), the COMMIT that appends them to the WAL fails with
OperationalError "database or disk is full" (SQLITE_FULL), and SQLite has rolled the transaction back
(`in_transaction` is False). A COMMIT with nothing to write succeeds, and reads work. SQLite documents
the other outcome too ("Response To Errors Within A Transaction", sqlite.org/lang_transaction.html):
SQLITE_FULL from a statement may roll back that statement only and leave the transaction open, for the
application to ROLLBACK; `Disk(fails_at="statement")` plays that one.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SQLITE_FULL = 13


def disk_full() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = SQLITE_FULL  # what the sqlite3 module sets on Python ≥ 3.11
    error.sqlite_errorname = "SQLITE_FULL"
    return error


class Disk:
    """The filesystem under the spool: `full` while no block is free. `fails_at`: "commit" (observed) or
    "statement" (documented). `writes_refused` counts the writes it refused, `commits` the transactions
    that did write. `damaging`: every write statement finds the file damaged (SQLITE_CORRUPT, "database
    disk image is malformed"), as on storage that returns garbage for every file."""

    def __init__(self, fails_at: str = "commit") -> None:
        assert fails_at in ("commit", "statement")
        self.full = False
        self.damaging = False
        self.fails_at = fails_at
        self.writes_refused = 0
        self.commits = 0

    def connection_factory(self) -> type[sqlite3.Connection]:
        disk = self

        class OnDisk(sqlite3.Connection):
            _changes_at_begin = 0

            def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
                if sql == "BEGIN IMMEDIATE":
                    self._changes_at_begin = self.total_changes
                if disk.damaging and _writes(sql):
                    raise sqlite3.DatabaseError("database disk image is malformed")
                if disk.full and disk.fails_at == "statement" and self.in_transaction and _writes(sql):
                    disk.writes_refused += 1
                    raise disk_full()  # the statement is undone, the transaction stays open
                if disk.full and sql == "COMMIT" and self.total_changes != self._changes_at_begin:
                    super().execute("ROLLBACK")  # SQLite has already ended it when COMMIT reports SQLITE_FULL
                    disk.writes_refused += 1
                    raise disk_full()
                if sql == "COMMIT" and self.total_changes != self._changes_at_begin:
                    disk.commits += 1
                return super().execute(sql, parameters)

            def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
                if disk.damaging:
                    raise sqlite3.DatabaseError("database disk image is malformed")
                if disk.full and disk.fails_at == "statement" and self.in_transaction:
                    disk.writes_refused += 1
                    raise disk_full()
                return super().executemany(sql, parameters)

        return OnDisk


def _writes(sql: str) -> bool:
    return sql.lstrip().split(" ", 1)[0].upper() in ("INSERT", "DELETE", "UPDATE")


class NoWait(sqlite3.Connection):
    """Gives up on a lock at once (busy timeout 0) instead of after sqlite3's default 5 s, so a test of
    "database is locked" does not sleep; the error is SQLite's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "timeout": 0})
