"""statsd.flush_interval: at a faster collection, StatsD series drain once per wall-clock multiple of it, and
whatever is held is drained at a stop and at a reload, whatever the interval.

Every scenario runs on injected clocks (`Clocks` moves a monotonic and a wall clock together); nothing sleeps.
"""

from __future__ import annotations

import gc
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.aggregate import Aggregator, Datum
from agent.catalogue import METRICS
from agent.cli import Signals, prometheus_snapshot, run_forever
from agent.config import load, parse
from agent.host import HostContext
from agent.loop import Agent
from agent.samples import Sample
from agent.selfstats import AgentStats
from agent.statsd.collector import StatsdCollector
from agent.statsd.service import flush_interval
from agent.wakeup import WakeupFlag
from tests.conftest import free_port
from tests.fakes.cloudwatch import RecordingClient
from tests.fakes.host import FakeClock

MINUTE_START = 1_790_000_040.0  # epoch seconds at the start of a wall-clock minute
HOST = (("InstanceId", "i-0abc"),)


class Clocks:
    """A monotonic and a wall clock that move together, only when told to."""

    def __init__(self, wall: float) -> None:
        self.monotonic = FakeClock(1000.0)
        self.wall = FakeClock(wall)

    def advance(self, seconds: float) -> None:
        self.monotonic.advance(seconds)
        self.wall.advance(seconds)

    def second(self) -> float:
        """Seconds since MINUTE_START on the wall clock."""
        return self.wall() - MINUTE_START


def statsd_at(clocks: Clocks, **options: Any) -> StatsdCollector:
    return StatsdCollector(flush_interval=10, monotonic=clocks.monotonic, wall_clock=clocks.wall, **options)


def self_metrics(parse_errors: int = 0) -> list[Sample]:
    return [
        METRICS["StatsdSeriesDropped"].sample(0, Component="agent"),
        METRICS["StatsdParseErrors"].sample(parse_errors, Component="agent"),
    ]


def test_at_1s_collection_a_counter_drains_once_per_10s_wall_clock_window() -> None:
    clocks = Clocks(MINUTE_START + 3.5)  # started 3.5 s into a window: the first one is 3.5 .. 10.5 s
    statsd = statsd_at(clocks)
    drains = []
    empty = 0
    for _ in range(17):  # one line a second, collected every second up to 20.5 s past the minute
        statsd.receive(b"Rows:1|c")
        clocks.advance(1)
        samples = statsd.collect()
        if samples:
            drains.append((clocks.second(), samples))
        else:
            empty += 1
    # The first collection past each multiple of 10 s drains; the rate is the total over the real window.
    assert drains == [
        (10.5, [Sample("Rows", 7.0, "Count"), Sample("RowsPerSecond", 1.0, "Count/Second"), *self_metrics()]),
        (20.5, [Sample("Rows", 10.0, "Count"), Sample("RowsPerSecond", 1.0, "Count/Second"), *self_metrics()]),
    ]
    assert empty == 15


def test_each_kind_gives_one_window_of_samples_per_flush_and_a_set_counts_a_member_once_a_minute() -> None:
    clocks = Clocks(MINUTE_START)
    statsd = statsd_at(clocks)
    drains = []
    for second in range(1, 21):
        statsd.receive(b"QueueDepth:%d|g\nStepTime:120|ms\nUsers:alice|s" % second)
        clocks.advance(1)
        if samples := statsd.collect():
            drains.append(samples[:-2])
    assert drains == [
        [Sample("QueueDepth", 10.0, "None"), Sample("StepTime", 120.0, "Milliseconds", (), 10.0),
         Sample("Users", 1.0, "Count")],
        [Sample("QueueDepth", 20.0, "None"), Sample("StepTime", 120.0, "Milliseconds", (), 10.0),
         Sample("Users", 0.0, "Count")],  # alice was counted in this minute's first window
    ]


def test_self_metrics_go_with_their_window_and_are_counted_once() -> None:
    clocks = Clocks(MINUTE_START)
    statsd = statsd_at(clocks)
    statsd.receive(b"no value here")
    clocks.advance(1)
    assert statsd.collect() == []
    statsd.receive(b"Rows:x|c")
    clocks.advance(9)
    assert statsd.collect() == self_metrics(parse_errors=2)
    clocks.advance(10)
    assert statsd.collect() == self_metrics(parse_errors=0)
    statsd.receive(b"Rows:1|q")
    clocks.advance(3)
    assert statsd.collect_final() == self_metrics(parse_errors=1)


def test_a_drain_takes_what_is_held_and_the_next_window_starts_there() -> None:
    clocks = Clocks(MINUTE_START)
    statsd = statsd_at(clocks)
    for _ in range(3):
        statsd.receive(b"JobsDone:2|c")
        clocks.advance(1)
        assert statsd.collect() == []
    assert statsd.collect_final()[:2] == [Sample("JobsDone", 6.0, "Count"),
                                          Sample("JobsDonePerSecond", 2.0, "Count/Second")]
    for _ in range(6):
        statsd.receive(b"JobsDone:7|c")
        clocks.advance(1)
        assert statsd.collect() == []  # still the window the drain was in: 4 .. 9 s
    statsd.receive(b"JobsDone:7|c")
    clocks.advance(1)
    assert statsd.collect()[:2] == [Sample("JobsDone", 49.0, "Count"),
                                    Sample("JobsDonePerSecond", 7.0, "Count/Second")]


def test_expiry_is_checked_at_drains_from_the_end_of_the_last_window_with_lines() -> None:
    clocks = Clocks(MINUTE_START)
    statsd = statsd_at(clocks, expire_after=30)
    statsd.receive(b"Rows:5|c")
    published = []
    for _ in range(50):
        clocks.advance(1)
        if samples := statsd.collect():
            published.append([sample.value for sample in samples if sample.name == "Rows"])
    assert published == [[5.0], [0.0], [0.0], [], []]  # active up to 10 s, forgotten at 40 s


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"collect": {"interval": 1}}, 10),
        ({"collect": {"interval": 5}, "statsd": {"flush_interval": 60}}, 60),
        ({}, None),  # collect.interval's default, 10 s: a drain at every collection, as before the setting
        ({"collect": {"interval": 30}}, None),
        # 1 s buckets: a 10 s window would leave 9 of every 10 without StatsD data.
        ({"collect": {"interval": 1}, "publish": {"high_resolution": True}}, None),
    ],
)
def test_the_collector_drains_at_every_collection_unless_collections_come_faster(
    settings: dict[str, Any], expected: int | None
) -> None:
    assert flush_interval(parse(settings)) == expected


@pytest.mark.parametrize(("publish_interval", "flush", "served_until"), [(10, 60, 180), (60, 10, 180), (10, 10, 30)])
def test_a_statsd_gauge_stays_on_the_endpoint_until_three_flush_windows_are_missed(
    publish_interval: int, flush: int, served_until: int
) -> None:
    clock = FakeClock()
    snapshot = prometheus_snapshot(parse({"collect": {"interval": 1}, "publish": {"interval": publish_interval},
                                          "statsd": {"flush_interval": flush}}), monotonic=clock)
    snapshot.update([Sample("QueueDepth", 3.0, "None")])
    clock.advance(served_until)
    served = [(entry.place.exposed.name, entry.value) for entry in snapshot.series()]
    assert served == [("infrawatch_job_queue_depth", 3.0)]
    clock.advance(0.001)
    assert snapshot.series() == []


class JobUntilStop:
    """Agent.run's stop flag on injected clocks: each wait moves the clocks by its timeout, then the job sends
    one line; the flag is set from `stop_at` seconds past the minute."""

    def __init__(self, clocks: Clocks, statsd: StatsdCollector, stop_at: float) -> None:
        self._clocks = clocks
        self._statsd = statsd
        self._stop_at = stop_at

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self._clocks.advance(timeout)
        self._statsd.receive(b"JobsDone:1|c")
        return self._clocks.second() >= self._stop_at


def values(batches: list[Datum], name: str) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    return [(datum.values, datum.counts) for datum in batches if datum.name == name]


def test_a_stop_3s_into_a_window_publishes_those_3s_of_lines() -> None:
    clocks = Clocks(MINUTE_START)
    statsd = statsd_at(clocks)
    submitted: list[Datum] = []
    agent = Agent(collectors=[statsd], aggregator=Aggregator(), stats=AgentStats(), submit=submitted.extend,
                  host_dimensions=HOST, wall_clock=clocks.wall)
    agent.run(JobUntilStop(clocks, statsd, stop_at=53), collect_interval=1, publish_interval=60, flush_phase=0,
              monotonic=clocks.monotonic)
    # One line a second, 53 in all: five windows of 10 drained at 10 .. 50 s, then the 3 s the stop drained.
    assert values(submitted, "JobsDone") == [((3.0, 10.0), (1.0, 5.0))]
    assert values(submitted, "JobsDonePerSecond") == [((1.0,), (6.0,))]


class SignalAt(WakeupFlag):
    """The signal flag `run_forever` waits on, on injected clocks: each wait moves the clocks by its timeout
    and runs what the scenario does at that second (send lines, rewrite the file, raise a signal)."""

    def __init__(self, clocks: Clocks, script: dict[float, list[Any]]) -> None:
        super().__init__()
        self._clocks = clocks
        self._script = script

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            assert timeout is not None
            self._clocks.advance(timeout)
            for step in self._script.pop(self._clocks.second(), []):
                step()
        return self.is_set()


def signals_at(clocks: Clocks, script: dict[float, list[Any]]) -> Signals:
    """`Signals` whose flag is a SignalAt: install it, and close it when done, as `main` does."""
    signals = Signals()
    signals.flag.close()
    signals.flag = SignalAt(clocks, script)
    return signals


def agent_toml(namespace: str, port: int) -> str:
    return (f'namespace = "{namespace}"\n[collect]\ninterval = 1\n[publish]\ninterval = 60\nphase = 0\n'
            f'[ec2]\nidentity = false\n[statsd]\naddress = "127.0.0.1:{port}"\nflush_interval = 10\n')


def statsd_values(request: dict[str, Any]) -> dict[str, list[float]]:
    return {datum["MetricName"]: datum["Values"] for datum in request["MetricData"]
            if datum["MetricName"].startswith("JobsDone")}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_or_a_reload_3s_into_a_window_publishes_those_3s_of_lines(tmp_path: Path, signum: int) -> None:
    port = free_port()
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml("Before", port))
    config = load(path)
    clocks = Clocks(MINUTE_START + 45)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send() -> None:
        sender.sendto(b"JobsDone:1|c", ("127.0.0.1", port))

    def sigterm() -> None:
        signal.raise_signal(signal.SIGTERM)  # its handler runs before raise_signal returns

    def reload() -> None:
        path.write_text(agent_toml("After", port))
        signal.raise_signal(signal.SIGHUP)

    # Lines at 51, 52 and 53 s, after the drain at 50 s: the listener thread has until the last collection to
    # read them (closing it hands over what the kernel holds), and no drain comes before that but the last.
    script: dict[float, list[Any]] = {
        51.0: [send], 52.0: [send], 53.0: [send, reload if signum == signal.SIGHUP else sigterm], 55.0: [sigterm],
    }
    signals = signals_at(clocks, script)
    client = RecordingClient()
    try:
        signals.install()
        assert run_forever(config, client, [], HostContext(config.ec2, hostname="laptop"), signals, path,
                           rebuild=lambda new: [], durable=False, monotonic=clocks.monotonic,
                           wall_clock=clocks.wall) == 0
    finally:
        signals.close()
        sender.close()
        gc.unfreeze()
    published = [(request["Namespace"], statsd_values(request)) for request in client.calls]
    expected = [("Before", {"JobsDone": [3.0], "JobsDonePerSecond": [1.0]})]
    if signum == signal.SIGHUP:
        expected.append(("After", {}))  # the new listener starts with no series
    assert published == expected
