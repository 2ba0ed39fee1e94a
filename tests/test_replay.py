"""Replay: oldest first, one attempt per request, bounded rate, backoff, and live data always first."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from structlog.testing import capture_logs

from agent.aggregate import Datum
from agent.cli import build_agent
from agent.config import load
from agent.fleet import DimensionPlan
from agent.loop import PublishWorker
from agent.publisher import Publisher, RequestSizer
from agent.replay import Replayer, settled
from agent.selfstats import AgentStats
from agent.spool import Spool, Spooled
from tests.fakes.cloudwatch import RecordingClient, client_error
from tests.fakes.host import FakeClock
from tests.fakes.sqlite import Disk

NOW = 1_790_000_040.0
HOST = (("InstanceId", "i-0abc"),)
SIZER = RequestSizer()
DOWN = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def datum(minute: int, name: str = "GPUUtilization") -> Datum:
    """Ten GPUs' series in turn: one request may carry at most 150 values of one metric (CloudWatch)."""
    return Datum(name, (("GPU", str(minute % 10)), *HOST), NOW + 60 * minute, "Percent", (50.0,), (6.0,))


class Rig:
    """A publisher, a spool on disk and a replayer sharing one fake monotonic clock."""

    def __init__(self, tmp_path: Path, client: Any, rate: float = 5.0, disk: Disk | None = None) -> None:
        self.clock = FakeClock(0.0)
        self.stats = AgentStats()
        self.disk = disk or Disk()
        self.spool = Spool(tmp_path / "spool.db", namespace="InfraWatch", stats=self.stats,
                           wall_clock=lambda: NOW + 3600, connection_factory=self.disk.connection_factory())
        self.publisher = Publisher(client, "InfraWatch", stats=self.stats, sizer=SIZER, sleep=self.clock.sleep,
                                   monotonic=self.clock, on_undeliverable=self.spool.put, retry_deadline=5.0)
        self.replayer = Replayer(self.spool, self.publisher, requests_per_second=rate, monotonic=self.clock)


def sent_minutes(client: RecordingClient) -> list[list[float]]:
    return [[d["Timestamp"].timestamp() for d in request["MetricData"]] for request in client.accepted]


def test_replay_sends_the_oldest_in_full_requests_at_the_configured_rate(tmp_path: Path) -> None:
    client = RecordingClient()
    rig = Rig(tmp_path, client, rate=4.0)
    rig.spool.put([datum(minute) for minute in range(2500, 0, -1)], "503")
    assert rig.replayer.due_in() == 0.0  # a fresh start tries at once
    waits = []
    while (due := rig.replayer.due_in()) is not None:
        waits.append(due)
        rig.clock.advance(due)
        assert rig.replayer.replay_one() is True
    assert waits == [0.0, 0.25, 0.25]
    assert [len(r["MetricData"]) for r in client.accepted] == [1000, 1000, 500]
    assert sent_minutes(client)[0][:2] == [NOW + 60, NOW + 120]
    assert [t for request in sent_minutes(client) for t in request] == [NOW + 60 * m for m in range(1, 2501)]
    assert (rig.spool.datums, rig.stats.published, rig.stats.dropped) == (0, 2500 * 6, {})


def test_a_failed_replay_keeps_its_rows_and_waits_until_live_data_gets_through(tmp_path: Path) -> None:
    down = [True]
    client = RecordingClient(fail=lambda n, request: DOWN if down[0] else None)
    rig = Rig(tmp_path, client, rate=5.0)
    rig.spool.put([datum(1), datum(2)], "503")
    assert rig.replayer.replay_one() is False
    assert (len(client.calls), rig.clock.sleeps, rig.spool.datums) == (1, [], 2)  # one attempt, no retries
    assert rig.replayer.due_in() is None  # the endpoint is failing: no replay traffic at all
    rig.publisher.publish([datum(9, "Heartbeat")])  # the next live flush fails too, after its retries
    assert (rig.replayer.due_in(), rig.spool.datums) == (None, 3)
    down[0] = False
    rig.publisher.publish([datum(10, "Heartbeat")])  # this one gets through
    assert rig.replayer.due_in() == 0.0
    assert rig.replayer.replay_one() is True
    assert rig.replayer.due_in() is None  # nothing left
    assert (rig.spool.datums, rig.stats.published, rig.stats.dropped) == (0, 4 * 6, {})
    assert rig.stats.publish_errors["EndpointConnectionError"] == len(client.calls) - 2
    assert len(client.accepted[1]["MetricData"]) == 3  # the replay carried datums 1, 2 and the spooled Heartbeat


def test_a_rejected_replay_drops_only_the_named_datum_and_delivers_the_rest(tmp_path: Path) -> None:
    message = "The value 1E-200 for parameter MetricData.member.1.Values.member.1 is invalid."
    client = RecordingClient(fail=lambda n, r: client_error("InvalidParameterValue", 400, message) if n == 1 else None)
    rig = Rig(tmp_path, client)
    rig.spool.put([datum(1), datum(2)], "503")
    assert rig.replayer.replay_one() is True
    assert (rig.spool.datums, rig.stats.dropped) == (0, {"rejected": 6})
    assert sent_minutes(client) == [[NOW + 120]]


def test_a_replay_botocore_refuses_to_build_is_dropped_not_kept_forever(tmp_path: Path) -> None:
    # On 086c3d7 a ParamValidationError was "undeliverable": the rows stayed and replay failed on them forever.
    client = RecordingClient(fail=lambda n, r: botocore.exceptions.ParamValidationError(
        report="Invalid length for parameter MetricData[1].MetricName, value: 0, valid min length: 1"
    ) if n == 1 else None)
    rig = Rig(tmp_path, client)
    rig.spool.put([datum(1), datum(2)], "503")
    assert rig.replayer.replay_one() is True
    assert (rig.spool.datums, rig.stats.dropped) == (0, {"rejected": 6})
    assert sent_minutes(client) == [[NOW + 60]]


def test_settled_rows_match_kept_datums_as_a_multiset() -> None:
    heartbeat = datum(0, "Heartbeat")  # two flushes in one minute spool two identical Heartbeats
    rows = [Spooled(1, "InfraWatch", heartbeat), Spooled(2, "InfraWatch", datum(1)),
            Spooled(3, "InfraWatch", heartbeat)]
    assert [row.id for row in settled(rows, [heartbeat])] == [2, 3]
    assert [row.id for row in settled(rows, [])] == [1, 2, 3]
    assert settled(rows, [heartbeat, datum(1), heartbeat]) == []


class GatedClient(RecordingClient):
    """Holds its first request until `release` is set, so a test can queue live data behind a replay."""

    def __init__(self) -> None:
        super().__init__()
        self.first_started = threading.Event()
        self.release = threading.Event()

    def put_metric_data(self, **request: Any) -> dict[str, Any]:
        if not self.first_started.is_set():
            self.first_started.set()
            self.release.wait(10)
        return super().put_metric_data(**request)


def test_live_batches_go_before_the_rest_of_the_replay(tmp_path: Path) -> None:
    client = GatedClient()
    stats = AgentStats()
    spool = Spool(tmp_path / "spool.db", namespace="InfraWatch", stats=stats, wall_clock=lambda: NOW + 3600)
    publisher = Publisher(client, "InfraWatch", stats=stats, sizer=SIZER, on_undeliverable=spool.put)
    spool.put([datum(minute) for minute in range(1, 3001)], "503")  # three replay requests' worth
    worker = PublishWorker(publisher, Replayer(spool, publisher, requests_per_second=100.0))
    assert client.first_started.wait(10)  # the first replay request is in flight
    worker.submit([datum(0, "Heartbeat")])
    worker.submit([datum(0, "CPUUtilization")])
    client.release.set()
    deadline = threading.Event()
    while spool.datums and not deadline.wait(0.01):
        pass
    assert worker.close(timeout=10.0) is True
    order = [request["MetricData"][0]["MetricName"] for request in client.accepted]
    assert order == ["GPUUtilization", "Heartbeat", "CPUUtilization", "GPUUtilization", "GPUUtilization"]
    assert stats.published == 3000 * 6 + 2 * 6


def test_each_replay_request_carries_rows_of_one_namespace_to_that_namespace(tmp_path: Path) -> None:
    client = RecordingClient()
    rig = Rig(tmp_path, client)
    rig.spool.put([datum(1), datum(2)], "503")  # the spool's namespace: InfraWatch
    rig.spool.put([datum(3), datum(5)], "503", namespace="CWAgent")
    rig.spool.put([datum(4)], "503", namespace="InfraWatch")
    while rig.replayer.due_in() is not None:
        rig.clock.advance(rig.replayer.due_in() or 0.0)
        assert rig.replayer.replay_one() is True
    assert [(request["Namespace"], [d["Timestamp"].timestamp() for d in request["MetricData"]])
            for request in client.accepted] == [
        ("InfraWatch", [NOW + 60, NOW + 120]), ("CWAgent", [NOW + 180]), ("InfraWatch", [NOW + 240]),
        ("CWAgent", [NOW + 300])]
    assert (rig.spool.datums, rig.stats.published) == (0, 5 * 6)


def test_a_reload_to_another_namespace_never_backfills_spooled_datums_under_it(tmp_path: Path) -> None:
    """Wired as run_forever wires it: each config's publisher spools under its own namespace."""
    down = [True]
    client = RecordingClient(fail=lambda n, request: botocore.exceptions.NoCredentialsError() if down[0] else None)
    stats = AgentStats()
    spool = Spool(tmp_path / "spool.db", namespace="InfraWatch", stats=stats, wall_clock=lambda: NOW + 3600)
    before = load(None)
    after = dataclasses.replace(before, namespace="Team/Vision")
    plan = DimensionPlan(identity=None, hostname="gpu-7", append=())
    _, publisher_before = build_agent(before, client, stats, [], plan, spool=spool)
    publisher_before.publish([datum(1)])
    _, publisher_after = build_agent(after, client, stats, [], plan, spool=spool)
    publisher_after.publish([datum(2)])
    down[0] = False
    replayer = Replayer(spool, publisher_after, monotonic=FakeClock(0.0))
    assert replayer.replay_one() is True
    assert replayer.replay_one() is True
    assert [(request["Namespace"], request["MetricData"][0]["Timestamp"].timestamp())
            for request in client.accepted] == [("InfraWatch", NOW + 60), ("Team/Vision", NOW + 120)]


def test_a_full_disk_stops_replay_instead_of_resending_what_was_delivered(tmp_path: Path) -> None:
    """Old code: the DELETE after a delivered replay request failed and the same rows went again every
    0.2 s, about 100 requests in these 20 s. Now: one request, then replay stops until the disk allows."""
    client = RecordingClient()
    rig = Rig(tmp_path, client, rate=5.0)
    rig.spool.put([datum(minute) for minute in range(1, 2501)], "503")
    rig.disk.full = True
    with capture_logs() as logs:
        for _ in range(100):  # 20 s in 0.2 s steps, replaying whenever one is due, as the publish worker does
            if rig.replayer.due_in() == 0.0:
                rig.replayer.replay_one()
            rig.clock.advance(0.2)
        rig.publisher.publish([datum(9000, "Heartbeat")])  # live data still goes
    assert [len(request["MetricData"]) for request in client.accepted] == [1000, 1]
    assert [(entry["event"], entry.get("undeleted")) for entry in logs if entry["log_level"] != "debug"] == [
        ("spool_error", None), ("replay_stopped", 1000)]
    assert rig.spool.samples()[2].name == "SpoolReplayStopped"
    assert rig.replayer.due_in() == pytest.approx(40.0)  # the deletion is tried again once a minute
    rig.disk.full = False
    rig.clock.advance(rig.replayer.due_in() or 0.0)
    with capture_logs() as logs:
        assert rig.replayer.replay_one() is True  # deletes the delivered rows, then sends the next ones
    assert [entry["event"] for entry in logs] == ["replay_resumed"]
    while (due := rig.replayer.due_in()) is not None:
        rig.clock.advance(due)
        assert rig.replayer.replay_one() is True
    sent = [d["Timestamp"].timestamp() for request in client.accepted for d in request["MetricData"]]
    assert sorted(sent) == sorted([NOW + 60 * m for m in range(1, 2501)] + [NOW + 60 * 9000])  # each once
    assert (rig.spool.datums, rig.spool.undeleted, rig.stats.dropped) == (0, 0, {})
    assert [sample.name for sample in rig.spool.samples()] == ["SpoolDatums"]


def test_a_read_that_fails_does_not_make_replay_spin(tmp_path: Path) -> None:
    client = RecordingClient()
    rig = Rig(tmp_path, client, rate=5.0)
    rig.spool.put([datum(1)], "503")
    rig.spool.close()  # reads now fail: oldest() is empty though datums says 1
    assert rig.replayer.replay_one() is True
    assert rig.replayer.due_in() == 0.2  # the next try waits its turn instead of coming at once
    assert client.calls == []
