"""The spool on a real SQLite file: order, bounds, age, damage, and the numbers it reports."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.aggregate import Datum
from agent.cli import main
from agent.config import SpoolConfig, load
from agent.samples import Sample
from agent.selfstats import AgentStats
from agent.spool import MAX_AGE_SECONDS, Spool, decode, encode, open_spool
from tests.fakes.host import FakeClock

NOW = 1_790_000_040.0
HOST = (("InstanceId", "i-0abc"),)


def datum(minute: int, name: str = "GPUUtilization", values: tuple[float, ...] = (10.0, 12.5),
          counts: tuple[float, ...] = (3.0, 1.0)) -> Datum:
    return Datum(name, (("GPU", "0"), *HOST), NOW + 60 * minute, "Percent", values, counts)


def spool_at(path: Path, stats: AgentStats | None = None, clock: FakeClock | None = None, **kwargs: int) -> Spool:
    return Spool(path, stats=stats or AgentStats(), wall_clock=clock or FakeClock(NOW), **kwargs)


def test_a_datum_survives_encoding_exactly() -> None:
    original = Datum("DiskReadBytesPerSecond", (("Device", "nvme0n1"), *HOST), NOW, "Bytes/Second",
                     (0.1, 1e300, -2.5), (1.0, 2.0, 57.0), 1)
    assert decode(encode(original)) == original


def test_oldest_first_across_a_reopen_and_delete_only_what_is_named(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = spool_at(path)
    spool.put([datum(2), datum(0)], "503")
    spool.put([datum(1, "GPUMemoryUtilization")], "Throttling")
    spool.close()
    reopened = spool_at(path)
    assert (reopened.datums, reopened.datapoints) == (3, 12)
    rows = reopened.oldest(10)
    assert [d for _, d in rows] == [datum(0), datum(1, "GPUMemoryUtilization"), datum(2)]
    reopened.delete([rows[0][0], rows[2][0]])
    assert [d for _, d in reopened.oldest(10)] == [datum(1, "GPUMemoryUtilization")]
    assert (reopened.datums, reopened.datapoints) == (1, 4)


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    stats = AgentStats()
    max_bytes = 64 * 1024
    spool = spool_at(tmp_path / "spool.db", stats, max_bytes=max_bytes)
    put = [datum(minute) for minute in range(2000)]  # about 200 KB of rows: three times the bound
    for start in range(0, len(put), 100):
        spool.put(put[start : start + 100], "503")
    kept = [d for _, d in spool.oldest(len(put))]
    evicted = len(put) - len(kept)
    assert evicted > 0
    assert kept == put[evicted:]  # exactly the oldest went
    assert stats.dropped == {"spool_full": 4 * evicted}
    assert spool.datapoints + stats.dropped["spool_full"] == 4 * len(put)
    connection = sqlite3.connect(tmp_path / "spool.db")
    page_size, pages, free = (connection.execute(f"PRAGMA {name}").fetchone()[0]
                              for name in ("page_size", "page_count", "freelist_count"))
    assert page_size * (pages - free) <= max_bytes


def test_too_old_datums_are_never_spooled_and_expire_while_spooled(tmp_path: Path) -> None:
    stats = AgentStats()
    clock = FakeClock(NOW)
    spool = spool_at(tmp_path / "spool.db", stats, clock)
    ancient = datum(-int(MAX_AGE_SECONDS // 60) - 1)
    spool.put([ancient, datum(0), datum(5)], "503")
    assert stats.dropped == {"too_old": 4}
    assert spool.datums == 2
    clock.advance(MAX_AGE_SECONDS + 60)  # datum(0) is now past the margin, datum(5) is not
    assert [d for _, d in spool.oldest(10)] == [datum(5)]
    assert stats.dropped == {"too_old": 8}
    assert (spool.datums, spool.datapoints) == (1, 4)


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
    assert [d for _, d in spool.oldest(10)] == [datum(0)]


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
        connection.executemany("INSERT INTO datums (timestamp, datapoints, body) VALUES (?, ?, ?)",
                               [(NOW + 60, 7, "{not json"), (NOW + 120, 5, '["x", 1]')])
    reopened = spool_at(path, stats)
    with capture_logs() as logs:
        rows = reopened.oldest(10)
    assert [d for _, d in rows] == [datum(0), datum(3)]
    assert [entry["event"] for entry in logs] == ["spool_row_undecodable"]
    assert stats.dropped == {"spool_corrupt": 12}
    assert (reopened.datums, reopened.datapoints) == (2, 8)


def test_an_unwritable_directory_means_no_spool_and_one_warning(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "spool.db"  # the parent is a file: no user, root included, can create it
    with capture_logs() as logs:
        assert open_spool(SpoolConfig(path=str(path)), AgentStats()) is None
    assert [(entry["event"], entry["path"], entry["log_level"]) for entry in logs] == [
        ("spool_unavailable", str(path), "warning")]
    assert open_spool(SpoolConfig(enabled=False, path=str(tmp_path / "spool.db")), AgentStats()) is None


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
    spool.put([datum(1)], "503")
    spool.delete([1])
    assert spool.oldest(10) == []
    assert stats.dropped == {"spool_unwritable": 4}
    assert spool_at(tmp_path / "spool.db").datums == 1


@pytest.mark.parametrize("body", [
    "[]", '["n", [], 0, "Count", [1.0], [1.0, 2.0], 60]', '["n", [], 0, "Count", [], [], 60]', '{"a": 1}', "7",
])
def test_rows_that_do_not_hold_a_datum_do_not_decode(body: str) -> None:
    with pytest.raises(ValueError, match="undecodable spool row"):
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
