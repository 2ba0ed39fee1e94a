"""The spool on a real SQLite file: order, bounds, age, damage, and the numbers it reports."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.aggregate import Datum
from agent.cli import main
from agent.config import SpoolConfig, load
from agent.samples import Sample
from agent.selfstats import AgentStats
from agent.spool import MAX_AGE_SECONDS, Spool, Spooled, SpoolUnavailable, decode, encode, open_spool
from tests.fakes.host import FakeClock
from tests.fakes.sqlite import Disk, NoWait

NOW = 1_790_000_040.0
HOST = (("InstanceId", "i-0abc"),)


def datum(minute: int, name: str = "GPUUtilization", values: tuple[float, ...] = (10.0, 12.5),
          counts: tuple[float, ...] = (3.0, 1.0)) -> Datum:
    return Datum(name, (("GPU", "0"), *HOST), NOW + 60 * minute, "Percent", values, counts)


def spool_at(path: Path, stats: AgentStats | None = None, clock: FakeClock | None = None, **kwargs: Any) -> Spool:
    return Spool(path, namespace=kwargs.pop("namespace", "InfraWatch"), stats=stats or AgentStats(),
                 wall_clock=clock or FakeClock(NOW), **kwargs)


def kept(spool: Spool, limit: int = 10_000) -> list[Datum]:
    return [row.datum for row in spool.oldest(limit)]


def in_file(path: Path) -> tuple[int, int]:
    """(rows, datapoints) the file holds, read by a connection of its own."""
    with sqlite3.connect(path) as connection:
        rows, datapoints = connection.execute("SELECT COUNT(*), TOTAL(datapoints) FROM datums").fetchone()
    return rows, int(datapoints)


def test_a_datum_survives_encoding_exactly_in_compact_json() -> None:
    original = Datum("DiskReadBytesPerSecond", (("Device", "nvme0n1"), *HOST), NOW, "Bytes/Second",
                     (0.1, 1e300, -2.5), (1.0, 2.0, 57.0), 1)
    assert decode(encode(original)) == original
    assert encode(datum(0)) == (  # no spaces: every byte counts against spool.max_bytes
        '["GPUUtilization",[["GPU","0"],["InstanceId","i-0abc"]],1790000040.0,"Percent",[10.0,12.5],[3.0,1.0],60]')


def test_oldest_first_across_a_reopen_and_delete_only_what_is_named(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = spool_at(path)
    spool.put([datum(2), datum(0)], "503")
    spool.put([datum(1, "GPUMemoryUtilization")], "Throttling")
    spool.close()
    reopened = spool_at(path)
    assert (reopened.datums, reopened.datapoints) == (3, 12)
    rows = reopened.oldest(10)
    assert [row.datum for row in rows] == [datum(0), datum(1, "GPUMemoryUtilization"), datum(2)]
    assert reopened.delete([rows[0], rows[2]]) is True
    assert kept(reopened) == [datum(1, "GPUMemoryUtilization")]
    assert (reopened.datums, reopened.datapoints) == (1, 4) == in_file(path)


def used_bytes(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        page_size, pages, free = (connection.execute(f"PRAGMA {name}").fetchone()[0]
                                  for name in ("page_size", "page_count", "freelist_count"))
    return int(page_size * (pages - free))


def test_a_full_spool_drops_exactly_the_oldest_and_its_counters_match_the_file(tmp_path: Path) -> None:
    stats = AgentStats()
    path = tmp_path / "spool.db"
    max_bytes = 64 * 1024
    spool = spool_at(path, stats, max_bytes=max_bytes)
    put = [datum(minute) for minute in range(2000)]  # about 200 KB of rows: three times the bound
    after_eviction = []
    for start in range(0, len(put), 100):
        before = spool.datums
        spool.put(put[start : start + 100], "503")
        assert (spool.datums, spool.datapoints) == in_file(path)  # SpoolDatums is what the file holds
        assert used_bytes(path) <= max_bytes
        if spool.datums < before + 100:  # this put evicted: only what did not fit went (pages free whole,
            after_eviction.append(used_bytes(path))  # so up to two 4 KiB pages of slack)
            assert used_bytes(path) > max_bytes - 3 * 4096
    assert len(after_eviction) == 17
    assert max_bytes in after_eviction  # the bound is inclusive: eviction stops once the pages fit it
    remaining = kept(spool)
    evicted = len(put) - len(remaining)
    assert remaining == put[evicted:]  # exactly the oldest went
    assert stats.dropped == {"spool_full": 4 * evicted}
    assert spool.datapoints + stats.dropped["spool_full"] == 4 * len(put)


def test_too_old_datums_are_never_spooled_and_expire_while_spooled(tmp_path: Path) -> None:
    stats = AgentStats()
    clock = FakeClock(NOW)
    spool = spool_at(tmp_path / "spool.db", stats, clock)
    ancient = datum(-int(MAX_AGE_SECONDS // 60) - 1)
    spool.put([ancient, datum(0), datum(5)], "503")
    assert stats.dropped == {"too_old": 4}
    assert spool.datums == 2
    at_the_limit = datum(0)._replace(timestamp=NOW - MAX_AGE_SECONDS)  # exactly as old as allowed: kept
    spool.put([at_the_limit], "503")
    assert (stats.dropped, kept(spool, 1)) == ({"too_old": 4}, [at_the_limit])
    assert spool.delete(spool.oldest(1)) is True
    spool.put([datum(1, values=(1.0,), counts=(2.0,)), datum(2), datum(6)], "503")
    assert (spool.datums, spool.datapoints) == (5, 18)
    clock.advance(MAX_AGE_SECONDS + 150)  # datum(0), (1) and (2) are now past the margin, (5) and (6) are not
    assert kept(spool) == [datum(5), datum(6)]
    assert stats.dropped == {"too_old": 4 + 10}
    assert (spool.datums, spool.datapoints) == (2, 8) == in_file(tmp_path / "spool.db")


def test_a_garbage_file_is_moved_aside_with_one_warning_and_a_fresh_spool_works(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not an SQLite database\n" * 64)
    with capture_logs() as logs:
        spool = spool_at(path)
    assert [entry["event"] for entry in logs] == ["spool_corrupt_moved_aside"]
    assert logs[0]["moved_to"] == str(tmp_path / f"spool.db.corrupt-{int(NOW)}")
    assert logs[0]["error"] == "file is not a database"
    assert (tmp_path / f"spool.db.corrupt-{int(NOW)}").read_bytes().startswith(b"this is not")
    spool.put([datum(0)], "503")
    assert kept(spool) == [datum(0)]


def test_a_truncated_file_is_moved_aside_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = spool_at(path)
    spool.put([datum(minute) for minute in range(3000)], "503")
    spool.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with capture_logs() as logs:
        reopened = spool_at(path)
    assert [(entry["event"], entry["error"]) for entry in logs] == [
        ("spool_corrupt_moved_aside", "database disk image is malformed")]
    assert (reopened.datums, reopened.oldest(10)) == (0, [])


def test_undecodable_rows_are_skipped_with_one_warning_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    spool = spool_at(path, stats)
    spool.put([datum(0), datum(3)], "503")
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO datums (timestamp, datapoints, body, namespace) VALUES (?, ?, ?, ?)",
            [(NOW + 60, 7, "{not json", "InfraWatch"), (NOW + 120, 5, '["x", 1]', "InfraWatch"),
             (NOW + 150, "seven", "{", "InfraWatch")])  # a damaged datapoints column counts as none
    reopened = spool_at(path, stats)
    assert (reopened.datums, reopened.datapoints) == (5, 20)
    with capture_logs() as logs:
        rows = kept(reopened)
    assert rows == [datum(0), datum(3)]
    assert [entry["event"] for entry in logs] == ["spool_row_undecodable"]
    assert stats.dropped == {"spool_corrupt": 12}
    assert (reopened.datums, reopened.datapoints) == (2, 8) == in_file(path)


def test_undecodable_rows_past_one_delete_statement_are_all_counted(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    spool_at(path, stats).close()
    with sqlite3.connect(path) as connection:
        connection.executemany("INSERT INTO datums (timestamp, datapoints, body, namespace) VALUES (?, ?, ?, ?)",
                               [(NOW + n, 3, "{", "InfraWatch") for n in range(700)])  # two DELETE statements
    reopened = spool_at(path, stats)
    assert reopened.oldest(1000) == []
    assert (stats.dropped, reopened.datums) == ({"spool_corrupt": 3 * 700}, 0)


def test_an_unwritable_directory_means_no_spool_and_one_warning(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "spool.db"  # the parent is a file: no user, root included, can create it
    with capture_logs() as logs:
        assert open_spool(SpoolConfig(path=str(path)), AgentStats(), "InfraWatch") is None
    assert [(entry["event"], entry["path"], entry["log_level"], entry["error"]) for entry in logs] == [
        ("spool_unavailable", str(path), "warning", f"{tmp_path / 'file'}: File exists")]
    assert open_spool(SpoolConfig(enabled=False, path=str(tmp_path / "spool.db")), AgentStats(), "InfraWatch") is None


def test_a_write_error_that_clears_and_comes_back_is_logged_again(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "spool.db")
    assert spool._connection is not None
    pages = spool._connection.execute("PRAGMA page_count").fetchone()[0]

    def disk(full: bool) -> None:  # SQLITE_FULL as a full disk gives it, through the page limit
        assert spool._connection is not None
        spool._connection.execute(f"PRAGMA max_page_count = {pages if full else 1_000_000}")

    with capture_logs() as logs:
        for full in (True, True, False, True):
            disk(full)
            spool.put([datum(minute) for minute in range(200)], "503")
    assert [(line["event"], line.get("error")) for line in logs if line["log_level"] == "warning"] == [
        ("spool_error", "database or disk is full")] * 2


def test_self_metrics_report_depth_and_the_age_of_the_oldest(tmp_path: Path) -> None:
    clock = FakeClock(NOW + 600)
    spool = spool_at(tmp_path / "spool.db", clock=clock)
    assert spool.samples() == [Sample("SpoolDatums", 0.0, "Count", (("Component", "agent"),))]
    spool.put([datum(2), datum(0), datum(1)], "503")
    assert spool.samples() == [
        Sample("SpoolDatums", 3.0, "Count", (("Component", "agent"),)),
        Sample("SpoolOldestAgeSeconds", 600.0, "Seconds", (("Component", "agent"),)),
    ]


def test_after_close_nothing_is_written_and_nothing_raises(tmp_path: Path) -> None:
    stats = AgentStats()
    spool = spool_at(tmp_path / "spool.db", stats)
    spool.put([datum(0)], "503")
    spool.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]  # closed: SQLite removed -wal and -shm
    spool.put([datum(1)], "503")
    assert spool.delete([Spooled(1, "InfraWatch", datum(0))]) is False
    assert spool.oldest(10) == []
    assert stats.dropped == {"spool_unwritable": 4}
    assert spool_at(tmp_path / "spool.db").datums == 1


@pytest.mark.parametrize("body", [
    "[]", '["n", [], 0, "Count", [1.0], [1.0, 2.0], 60]', '["n", [], 0, "Count", [], [], 60]', '{"a": 1}', "7",
])
def test_rows_that_do_not_hold_a_datum_do_not_decode(body: str) -> None:
    with pytest.raises(ValueError, match=r"^undecodable spool row: "):
        decode(body)
    if body.startswith('["n"'):
        with pytest.raises(ValueError, match=r"^undecodable spool row: values and counts do not pair up$"):
            decode(body)


def test_spool_and_phase_settings_are_checked_with_exact_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[publish]\ninterval = 30\nphase = 30\n'
                    '[spool]\npath = ""\nmax_bytes = 1000\nreplay_requests_per_second = 0\n')
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        'spool.path: must not be empty, got ""',
        "spool.max_bytes: must be 1048576..68719476736 bytes, got 1000",
        "spool.replay_requests_per_second: must be 0.1..100 requests/second, got 0",
        "publish.phase: must be below publish.interval (30), got 30",
    ]
    defaults = load(None)
    assert (defaults.spool, defaults.publish.phase) == (
        SpoolConfig(True, "/var/lib/infrawatch/spool.db", 256 * 1024 * 1024, 5.0), -1.0)


def test_open_spool_honours_max_bytes_and_the_stats_sink_and_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "state" / "infrawatch" / "spool.db"  # neither directory exists yet
    stats = AgentStats()
    # max_bytes below the config's 1 MiB floor is a Spool-level test: the constructor checks nothing.
    spool = open_spool(SpoolConfig(path=str(path), max_bytes=64 * 1024), stats, "CWAgent")
    assert spool is not None and spool.path == path and path.exists()
    now = time.time()  # open_spool's spool reads the real clock: stamp the datums as the agent would
    put = [datum(minute)._replace(timestamp=now - 60 * (2000 - minute)) for minute in range(2000)]
    spool.put(put, "503")
    assert used_bytes(path) <= 64 * 1024
    assert stats.dropped == {"spool_full": 4 * (2000 - spool.datums)}
    assert 0 < spool.datums < 1000
    assert [(row.namespace, row.datum) for row in spool.oldest(1)] == [("CWAgent", put[2000 - spool.datums])]


def test_every_row_keeps_the_namespace_it_was_spooled_for_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = spool_at(path, namespace="InfraWatch")
    spool.put([datum(0)], "503")  # no namespace named: the spool's
    spool.put([datum(1)], "503", namespace="CWAgent")
    spool.put([datum(2)], "503", namespace="Team/Train")
    spool.close()
    reopened = spool_at(path, namespace="Other")  # a reload with another namespace re-labels nothing
    assert [(row.namespace, row.datum) for row in reopened.oldest(10)] == [
        ("InfraWatch", datum(0)), ("CWAgent", datum(1)), ("Team/Train", datum(2))]


OLD_SCHEMA = """
CREATE TABLE datums (id INTEGER PRIMARY KEY, timestamp REAL NOT NULL, datapoints INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX datums_by_age ON datums (timestamp);
"""  # what 086c3d7 wrote


def test_a_spool_file_from_before_namespaces_gets_the_one_configured_at_the_first_open_for_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(OLD_SCHEMA)
        connection.executemany("INSERT INTO datums (timestamp, datapoints, body) VALUES (?, ?, ?)",
                               [(d.timestamp, d.datapoints, encode(d)) for d in (datum(0), datum(1))])
    with capture_logs() as logs:
        upgraded = spool_at(path, namespace="Team's")
    assert [(entry["event"], entry["namespace"]) for entry in logs] == [("spool_upgraded", "Team's")]
    assert (upgraded.datums, upgraded.datapoints) == (2, 8)
    upgraded.put([datum(2)], "503", namespace="InfraWatch")
    upgraded.close()
    with capture_logs() as logs:
        later = spool_at(path, namespace="Other")  # the old rows keep the namespace they got
    assert logs == []
    assert [(row.namespace, row.datum) for row in later.oldest(10)] == [
        ("Team's", datum(0)), ("Team's", datum(1)), ("InfraWatch", datum(2))]


def test_a_locked_database_is_not_corruption_and_the_next_write_works(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    spool = spool_at(path, stats, connection_factory=NoWait)
    spool.put([datum(0)], "503")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with capture_logs() as logs:
        spool.put([datum(1)], "503")
        assert spool.delete(spool.oldest(10)) is False
    assert [(entry["event"], entry["error"]) for entry in logs] == [  # the read between them re-armed it
        ("spool_error", "database is locked"), ("spool_error", "database is locked")]
    assert stats.dropped == {"spool_unwritable": 4}
    holder.execute("ROLLBACK")
    holder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db", "spool.db-shm", "spool.db-wal"]
    spool.put([datum(2)], "503")
    assert spool.settle() is True  # datum(0) was delivered: deleted once the lock is gone
    assert kept(spool) == [datum(2)]
    assert (spool.datums, spool.datapoints) == (1, 4) == in_file(path)


@pytest.mark.parametrize("fails_at", ["commit", "statement"])
def test_a_full_disk_is_not_corruption_a_failed_write_is_rolled_back_and_the_next_one_works(
    tmp_path: Path, fails_at: str
) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    disk = Disk(fails_at)
    spool = spool_at(path, stats, connection_factory=disk.connection_factory())
    spool.put([datum(0)], "503")
    disk.full = True
    with capture_logs() as logs:
        spool.put([datum(1), datum(2)], "503")
        spool.put([datum(3)], "503")
    assert [(entry["event"], entry["error"]) for entry in logs] == [("spool_error", "database or disk is full")]
    assert (disk.writes_refused, stats.dropped) == (2, {"spool_unwritable": 12})
    assert (spool.datums, spool.datapoints) == (1, 4) == in_file(path)
    disk.full = False
    spool.put([datum(4)], "503")  # no transaction left open by the failure: this one commits
    assert kept(spool) == [datum(0), datum(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db", "spool.db-shm", "spool.db-wal"]


def test_rows_delivered_but_not_deleted_are_never_read_again_and_go_once_the_disk_allows(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    disk = Disk()
    spool = spool_at(path, stats, connection_factory=disk.connection_factory())
    spool.put([datum(minute) for minute in range(5)], "503")
    delivered = spool.oldest(3)
    disk.full = True
    assert spool.delete(delivered) is False
    assert (spool.undeleted, spool.datums) == (3, 5)  # still in the file, never read again
    assert kept(spool) == [datum(3), datum(4)]
    assert [row.datum for row in spool.oldest(1)] == [datum(3)]
    assert spool.settle() is False
    assert spool.samples()[2:] == [Sample("SpoolReplayStopped", 1.0, "Count", (("Component", "agent"),))]
    disk.full = False
    assert spool.settle() is True
    assert (spool.undeleted, spool.datums, spool.datapoints) == (0, 2, 8) == (0, *in_file(path))
    assert [sample.name for sample in spool.samples()] == ["SpoolDatums", "SpoolOldestAgeSeconds"]
    assert spool.settle() is True
    assert stats.dropped == {}


def test_close_deletes_delivered_rows_if_the_disk_allows_and_says_so_if_not(tmp_path: Path) -> None:
    disk = Disk()
    spool = spool_at(tmp_path / "a.db", connection_factory=disk.connection_factory())
    spool.put([datum(0), datum(1)], "503")
    disk.full = True
    assert spool.delete(spool.oldest(1)) is False
    with capture_logs() as logs:
        spool.close()
    assert [(entry["event"], entry["datums"]) for entry in logs if entry["event"] != "spool_error"] == [
        ("spool_delivered_not_deleted", 1)]
    assert in_file(tmp_path / "a.db") == (2, 8)  # the next start replays that row once more
    freed = Disk()
    spool = spool_at(tmp_path / "b.db", connection_factory=freed.connection_factory())
    spool.put([datum(0), datum(1)], "503")
    freed.full = True
    assert spool.delete(spool.oldest(1)) is False
    freed.full = False
    with capture_logs() as logs:
        spool.close()
    assert logs == []
    assert in_file(tmp_path / "b.db") == (1, 4)


def test_a_delivered_row_that_ages_out_is_not_counted_as_dropped(tmp_path: Path) -> None:
    stats = AgentStats()
    clock = FakeClock(NOW)
    disk = Disk()
    spool = spool_at(tmp_path / "spool.db", stats, clock, connection_factory=disk.connection_factory())
    spool.put([datum(0), datum(1), datum(9)], "503")
    disk.full = True
    assert spool.delete(spool.oldest(2)) is False
    disk.full = False
    clock.advance(MAX_AGE_SECONDS + 30)  # datum(0) is too old now, and it was delivered
    assert kept(spool) == [datum(9)]
    assert (stats.dropped, spool.undeleted, spool.datums) == ({}, 1, 2)  # datum(1) waits for `settle`


def corrupt_under(path: Path) -> None:
    """Overwrite every page but the header with garbage, then make another connection commit a write
    that touches only the header: the running spool's page cache is stale from its next statement on."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as file:
        file.seek(4096)
        file.write(b"\xa5" * (path.stat().st_size - 4096))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA user_version = 7")
    other.close()


def test_a_file_corrupted_under_a_running_spool_is_moved_aside_counted_and_the_spool_works_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    disk = Disk()
    spool = spool_at(path, stats, connection_factory=disk.connection_factory())
    spool.put([datum(minute) for minute in range(3000)], "503")  # 12,000 datapoints
    disk.full = True
    assert spool.delete(spool.oldest(2)) is False  # delivered: lost with the file, but not a loss
    disk.full = False
    corrupt_under(path)
    with capture_logs() as logs:
        spool.put([datum(5000)], "503")  # the write that finds the damage lands in the fresh file
    assert [(entry["event"], entry.get("error")) for entry in logs] == [
        ("spool_corrupt_moved_aside", "database disk image is malformed"), ("spooled", None)]
    assert stats.dropped == {"spool_corrupt": 4 * 2998}
    assert (path.parent / f"spool.db.corrupt-{int(NOW)}").stat().st_size > 4096 * 2
    assert (spool.datums, spool.datapoints, spool.undeleted) == (1, 4, 0) == (*in_file(path), 0)
    assert kept(spool) == [datum(5000)]
    spool.put([datum(5001)], "503")
    assert kept(spool) == [datum(5000), datum(5001)]


def test_a_read_that_finds_the_file_corrupted_reads_the_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    spool = spool_at(path, stats)
    spool.put([datum(minute) for minute in range(3000)], "503")
    corrupt_under(path)
    assert spool.oldest(10) == []
    assert stats.dropped == {"spool_corrupt": 4 * 3000}
    assert (spool.datums, spool.datapoints) == (0, 0) == in_file(path)


def test_a_corrupt_database_takes_its_wal_and_shm_aside_with_it(tmp_path: Path) -> None:
    """Before closing: SQLite deletes the -wal and -shm by name when the last connection closes, and a WAL
    left beside a fresh file of the same name would be applied to it."""
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not an SQLite database\n" * 64)
    Path(f"{path}-wal").write_bytes(b"a WAL from before the damage\n" * 64)
    Path(f"{path}-shm").write_bytes(b"\0" * 32768)
    spool = spool_at(path)
    moved = tmp_path / f"spool.db.corrupt-{int(NOW)}"
    assert moved.read_bytes() == b"this is not an SQLite database\n" * 64
    assert Path(f"{moved}-wal").read_bytes() == b"a WAL from before the damage\n" * 64
    assert Path(f"{moved}-shm").stat().st_size == 32768  # the index SQLite built of that WAL
    assert (spool.datums, kept(spool)) == (0, [])
    spool.put([datum(0)], "503")
    assert kept(spool) == [datum(0)]


def test_rows_larger_than_a_page_are_evicted_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = spool_at(path, max_bytes=64 * 1024)
    big = [datum(minute, values=tuple(float(n) for n in range(400)), counts=(1.0,) * 400) for minute in range(30)]
    held = []
    for one in big:
        spool.put([one], "503")
        held.append(spool.datums)
    assert held[:4] == [1, 2, 3, 4]
    full = held[-1]
    assert held[-10:] == [full] * 10  # once full, each put of one row evicts exactly one
    assert kept(spool) == big[-full:]


def test_a_read_skips_delivered_rows_without_shortening_the_batch(tmp_path: Path) -> None:
    disk = Disk()
    spool = spool_at(tmp_path / "spool.db", connection_factory=disk.connection_factory())
    spool.put([datum(minute) for minute in range(8)], "503")
    disk.full = True
    assert spool.delete(spool.oldest(3)) is False
    assert [row.datum for row in spool.oldest(4)] == [datum(3), datum(4), datum(5), datum(6)]


def test_a_delete_of_many_rows_commits_once_per_statement(tmp_path: Path) -> None:
    disk = Disk()
    spool = spool_at(tmp_path / "spool.db", connection_factory=disk.connection_factory())
    spool.put([datum(minute) for minute in range(1200)], "503")
    commits = disk.commits
    assert spool.delete(spool.oldest(1200)) is True
    assert (disk.commits - commits, spool.datums) == (3, 0)  # 500 ids per statement: 3, not 1,200 fsyncs


def test_delivered_rows_deleted_by_someone_else_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    disk = Disk()
    spool = spool_at(path, connection_factory=disk.connection_factory())
    spool.put([datum(minute) for minute in range(3)], "503")
    disk.full = True
    assert spool.delete(spool.oldest(2)) is False
    disk.full = False
    with sqlite3.connect(path) as connection:  # say, by hand with the sqlite3 shell
        connection.execute("DELETE FROM datums WHERE timestamp < ?", (NOW + 90,))
    assert (spool.settle(), spool.undeleted) == (True, 0)


def test_storage_that_damages_every_file_moves_one_aside_per_write_then_counts_it_unwritable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    stats = AgentStats()
    disk = Disk()
    spool = spool_at(path, stats, connection_factory=disk.connection_factory())
    spool.put([datum(0)], "503")
    disk.damaging = True
    with capture_logs() as logs:
        spool.put([datum(1)], "503")
    assert [entry["event"] for entry in logs] == ["spool_corrupt_moved_aside", "spool_error"]
    assert stats.dropped == {"spool_corrupt": 4, "spool_unwritable": 4}
    disk.damaging = False
    spool.put([datum(2)], "503")
    assert kept(spool) == [datum(2)]


def test_a_spool_path_that_is_a_directory_or_a_damaged_file_that_cannot_move_means_no_spool(
    tmp_path: Path,
) -> None:
    with capture_logs() as logs:
        assert open_spool(SpoolConfig(path=str(tmp_path)), AgentStats(), "InfraWatch") is None
    assert [(entry["event"], entry["error"]) for entry in logs] == [
        ("spool_unavailable", f"{tmp_path}: unable to open database file")]
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not an SQLite database\n" * 64)
    (tmp_path / f"spool.db.corrupt-{int(NOW)}" / "taken").mkdir(parents=True)  # where it would go
    with pytest.raises(SpoolUnavailable, match=f"^{path}: cannot move it aside: Is a directory$"):
        spool_at(path)


def test_when_the_damaged_file_cannot_be_replaced_the_spool_reports_empty_and_counts_every_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "spool.db"
    stats = AgentStats()
    spool = spool_at(path, stats)
    spool.put([datum(minute) for minute in range(3000)], "503")
    corrupt_under(path)
    (tmp_path / "state").rename(tmp_path / "gone")  # the state directory went away ...
    (tmp_path / "state").write_text("")  # ... and a file took its name: no fresh spool can be made there
    with capture_logs() as logs:
        spool.put([datum(5000)], "503")
    assert [entry["event"] for entry in logs] == ["spool_corrupt_moved_aside", "spool_unavailable"]
    assert stats.dropped == {"spool_corrupt": 4 * 3000, "spool_unwritable": 4}
    assert (spool.datums, spool.datapoints, spool.oldest(10)) == (0, 0, [])
    assert spool.samples() == [Sample("SpoolDatums", 0.0, "Count", (("Component", "agent"),))]
