"""A periodic flush publishes closed minutes only: one whole datum per series per minute, the open minute held
for the next flush; a stop, a reload and `--once` send everything. On injected wall and monotonic clocks."""

from __future__ import annotations

import gc
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.aggregate import Aggregator, Datum
from agent.cli import build_agent, flush_phase, run_forever
from agent.config import load, parse
from agent.fleet import DimensionPlan
from agent.host import HostContext
from agent.loop import Agent
from agent.samples import Sample
from agent.selfstats import AgentStats
from tests.fakes.cloudwatch import RecordingClient
from tests.test_statsd_flush import Clocks, signals_at

MINUTE = 1_790_000_040.0  # "12:00:00" below: the start of a wall-clock minute, in epoch seconds
HOST = (("InstanceId", "i-0abc"),)


class Counting:
    """A collector whose every call is one CPUUtilization sample: `calls` is what must be published."""

    name = "cpu"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[Sample]:
        self.calls += 1
        return [Sample("CPUUtilization", float(self.calls), "Percent")]


def sent(datums: list[Datum], *names: str) -> list[tuple[str, float, int]]:
    """(name, seconds past 12:00:00 of the datum's minute or second, datapoints) of the named series."""
    return [(datum.name, datum.timestamp - MINUTE, datum.datapoints) for datum in datums if datum.name in names]


def agent_on(clocks: Clocks, submitted: list[list[Datum]], collector: Counting, *, hold_open: bool = True) -> Agent:
    return Agent(collectors=[collector], aggregator=Aggregator(), stats=AgentStats(),
                 submit=lambda datums: submitted.append(list(datums)), host_dimensions=HOST,
                 wall_clock=clocks.wall, hold_open=hold_open)


def test_a_flush_at_12_01_07_sends_minute_12_00_only_and_the_final_flush_sends_12_01s_seven_seconds() -> None:
    clocks = Clocks(MINUTE)
    submitted: list[list[Datum]] = []
    agent = agent_on(clocks, submitted, Counting())
    for _ in range(67):  # 12:00:00 .. 12:01:06
        agent.collect()
        clocks.advance(1)
    agent.flush()
    # The self-metrics describe the interval that just ended: stamped 12:00:59.999, they go out with 12:00.
    assert sent(submitted[0], "CPUUtilization", "Heartbeat") == [("CPUUtilization", 0, 60), ("Heartbeat", 0, 1)]
    assert sent(submitted[0], "DatapointsCollected") == [("DatapointsCollected", 0, 1)]
    agent.flush(final=True)
    assert sent(submitted[1], "CPUUtilization", "Heartbeat") == [("CPUUtilization", 60, 7), ("Heartbeat", 60, 1)]
    assert agent.aggregator.pending == 0


def test_below_a_minute_a_flush_still_sends_the_open_minute_so_far() -> None:
    clocks = Clocks(MINUTE)
    submitted: list[list[Datum]] = []
    agent = agent_on(clocks, submitted, Counting(), hold_open=False)
    for _ in range(10):
        agent.collect()
        clocks.advance(1)
    agent.flush()  # at 12:00:10, as with publish.interval = 10: the user asked for faster delivery
    assert sent(submitted[0], "CPUUtilization", "Heartbeat") == [("CPUUtilization", 0, 10), ("Heartbeat", 0, 1)]


@pytest.mark.parametrize(
    ("publish", "cpu", "heartbeat"),
    [
        ({"interval": 10}, [("CPUUtilization", 0, 2)], 0.0),  # 10 s: the minute so far, self-metrics stamped now
        ({"interval": 60}, [], -60.0),  # the open minute held; the self-metrics in 11:59, which just closed
        ({"interval": 10, "high_resolution": True}, [("CPUUtilization", 0, 1)], 6.0),  # 1 s buckets: always held
    ],
    ids=["interval-10s", "interval-60s", "high-resolution"],
)
def test_the_config_decides_whether_the_open_bucket_is_held(
    publish: dict[str, Any], cpu: list[tuple[str, float, int]], heartbeat: float
) -> None:
    clocks = Clocks(MINUTE + 0.5)
    datums: list[Datum] = []
    agent, _ = build_agent(parse({"publish": publish}), RecordingClient(), AgentStats(), [Counting()],
                           DimensionPlan(identity=None, hostname="h"), submit=datums.extend, wall_clock=clocks.wall)
    agent.collect()  # 12:00:00.5
    clocks.advance(7)
    agent.collect()  # 12:00:07.5
    clocks.advance(0.25)
    agent.flush()
    assert sent(datums, "CPUUtilization") == cpu
    assert sent(datums, "Heartbeat") == [("Heartbeat", heartbeat, 1)]
    datums.clear()
    agent.flush(final=True)  # a stop: what is left, the open bucket included
    assert sum(datapoints for _, _, datapoints in sent(datums, "CPUUtilization")) == 2 - sum(n for _, _, n in cpu)


class StopAt:
    """Agent.run's stop flag on injected clocks: each wait moves the clocks by its timeout; set from `second`."""

    def __init__(self, clocks: Clocks, second: float) -> None:
        self._clocks = clocks
        self._second = second

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self._clocks.advance(timeout)
        return self._clocks.second() >= self._second


def test_over_minutes_each_series_goes_once_per_minute_whole_and_the_stop_sends_the_rest() -> None:
    clocks = Clocks(MINUTE)
    submitted: list[list[Datum]] = []
    collector = Counting()
    agent = agent_on(clocks, submitted, collector)
    agent.run(StopAt(clocks, 210), collect_interval=1, publish_interval=60, flush_phase=7,
              monotonic=clocks.monotonic)
    # Flushes at 12:00:07, 12:01:07, 12:02:07, 12:03:07, then the stop's at 12:03:30.
    assert [sent(batch, "CPUUtilization") for batch in submitted] == [
        [], [("CPUUtilization", 0, 60)], [("CPUUtilization", 60, 60)], [("CPUUtilization", 120, 60)],
        [("CPUUtilization", 180, 31)],  # 12:03:00 .. 12:03:29, and the last collection at 12:03:30
    ]
    assert collector.calls == 60 * 3 + 31  # nothing lost
    every = [(datum.name, datum.dimensions, datum.timestamp) for batch in submitted for datum in batch]
    assert [key for key, n in Counter(every).items() if n > 1] == []  # nothing sent twice
    # One Heartbeat per flush, each in its own minute: 11:59 (stamped 11:59:59.999 by the 12:00:07 flush) .. 12:03.
    assert [sent(batch, "Heartbeat") for batch in submitted] == [
        [("Heartbeat", minute, 1)] for minute in (-60, 0, 60, 120, 180)]


@pytest.mark.parametrize(
    ("publish", "draw", "phase"),
    [
        ({}, 0.5, 15.0),  # within 30 s of the minute's end, not anywhere in it
        ({"interval": 300}, 0.75, 22.5),
        ({"interval": 10}, 0.5, 5.0),  # never past the interval
        ({"phase": 42}, 0.5, 42.0),  # an explicit phase is kept
        ({"phase": 0}, 0.5, 0.0),
    ],
)
def test_the_random_phase_is_drawn_within_30_s_unless_one_is_set(
    publish: dict[str, Any], draw: float, phase: float
) -> None:
    assert flush_phase(parse({"publish": publish}), lambda: draw) == phase


def agent_toml(namespace: str) -> str:
    return (f'namespace = "{namespace}"\n[collect]\ninterval = 1\n[publish]\ninterval = 60\n'
            "[ec2]\nidentity = false\n[statsd]\nenabled = false\n")


def by_namespace(client: RecordingClient, name: str) -> dict[str, list[tuple[float, float]]]:
    """Per namespace, (seconds past 12:00:00, datapoints) of each datum of `name`, in the order sent."""
    found: dict[str, list[tuple[float, float]]] = {}
    for request in client.calls:
        for datum in request["MetricData"]:
            if datum["MetricName"] == name:
                stamp = datum["Timestamp"].timestamp() - MINUTE
                found.setdefault(request["Namespace"], []).append((stamp, sum(datum["Counts"])))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_or_a_reload_sends_the_open_minute_and_loses_nothing(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml("Before"))
    config = load(path)
    clocks = Clocks(MINUTE + 30)
    before, after = Counting(), Counting()

    def reload() -> None:
        path.write_text(agent_toml("After"))
        signal.raise_signal(signal.SIGHUP)

    script: dict[float, list[Any]] = {90.0: [reload if signum == signal.SIGHUP else
                                             lambda: signal.raise_signal(signal.SIGTERM)],
                                      150.0: [lambda: signal.raise_signal(signal.SIGTERM)]}
    signals = signals_at(clocks, script)
    client = RecordingClient()
    try:
        signals.install()
        # phase -1, drawn 0.25: flushes at 7.5 s past each minute.
        assert run_forever(config, client, [before], HostContext(config.ec2, hostname="laptop"), signals, path,
                           rebuild=lambda new: [after], durable=False, monotonic=clocks.monotonic,
                           wall_clock=clocks.wall, draw=lambda: 0.25) == 0
    finally:
        signals.close()
        gc.unfreeze()
    # Before: 12:00:30 .. 12:00:59 at 12:01:07.5; at 12:01:30 the last flush, 12:01:00 .. 12:01:29 and the last
    # collection. After a reload: 12:01:30 .. 12:01:59 at 12:02:07.5, and at the stop at 12:02:30 the rest.
    expected = {"Before": [(0.0, 30.0), (60.0, 31.0)]}
    if signum == signal.SIGHUP:
        expected["After"] = [(60.0, 30.0), (120.0, 31.0)]
    assert by_namespace(client, "CPUUtilization") == expected
    assert before.calls + after.calls == sum(n for stamps in expected.values() for _, n in stamps)
    beats = {namespace: [stamp for stamp, _ in stamps]
             for namespace, stamps in by_namespace(client, "Heartbeat").items()}
    expected_beats = {"Before": [0.0, 60.0]}  # one per flush: 12:00:59.999 at 12:01:07.5, 12:01:30 at the stop
    if signum == signal.SIGHUP:
        expected_beats["After"] = [60.0, 120.0]
    assert beats == expected_beats
