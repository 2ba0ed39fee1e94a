"""The agent's cycle: collectors → aggregator → publisher, failures contained, and a moto round trip."""

from __future__ import annotations

import datetime as dt
import threading

import boto3
from moto import mock_aws
from structlog.testing import capture_logs

from agent.aggregate import Aggregator, Datum
from agent.filters import MetricExclusions
from agent.loop import Agent, PublishWorker, next_tick
from agent.publisher import Publisher
from agent.samples import Sample
from agent.selfstats import AgentStats
from tests.fakes.cloudwatch import RecordingClient

MINUTE = 1_790_000_040.0
HOST = (("InstanceId", "i-0abc"),)


class Scripted:
    """A collector returning a scripted value per call, or raising when the script says so."""

    def __init__(self, name: str, metric: str, values: list[float | Exception]) -> None:
        self.name = name
        self._metric = metric
        self._values = iter(values)

    def collect(self) -> list[Sample]:
        value = next(self._values)
        if isinstance(value, Exception):
            raise value
        return [Sample(self._metric, value, "Percent")]


class WallClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_next_tick_skips_missed_ticks_instead_of_bursting() -> None:
    assert next_tick(10.0, 1.0, 9.5) == 10.0
    assert next_tick(10.0, 1.0, 10.0) == 11.0
    assert next_tick(10.0, 1.0, 13.4) == 14.0  # three ticks missed: the next is 14, not 11, 12, 13


def test_a_failing_collector_is_counted_and_the_others_carry_on() -> None:
    submitted: list[list[Datum]] = []
    stats = AgentStats()
    clock = WallClock(MINUTE)
    agent = Agent(
        collectors=[Scripted("broken", "X", [OSError("gone"), OSError("gone"), 5.0]),
                    Scripted("cpu", "CPUUtilization", [10.0, 20.0, 30.0])],
        aggregator=Aggregator(), stats=stats, submit=lambda d: submitted.append(list(d)),
        host_dimensions=HOST, wall_clock=clock,
    )
    for _ in range(3):
        agent.collect()
        clock.now += 10
    assert stats.collector_errors == {"broken": 2}
    assert stats.collected == 4
    agent.flush()
    by_name = {d.name: d for d in submitted[0]}
    assert by_name["CPUUtilization"].values == (10.0, 20.0, 30.0)
    assert by_name["X"].values == (5.0,)
    assert by_name["CollectorErrors"].dimensions == (("Collector", "broken"), ("Component", "agent"), *HOST)
    assert by_name["CollectorErrors"].values == (2.0,)
    assert by_name["Heartbeat"].values == (1.0,)


def test_the_snapshot_gets_one_batch_per_cycle_with_every_collectors_kept_samples() -> None:
    # One update per cycle, not per collector: each update copies the snapshot's tables.
    observed: list[list[tuple[str, float]]] = []
    agent = Agent(
        collectors=[Scripted("cpu", "CPUUtilization", [10.0, 20.0]), Scripted("broken", "X", [OSError("gone"), 1.0]),
                    Scripted("excluded", "CPUSteal", [3.0, 4.0]), Scripted("gpu", "GPUUtilization", [70.0, 75.0])],
        aggregator=Aggregator(), stats=AgentStats(), submit=lambda d: None, wall_clock=WallClock(MINUTE),
        keeps=MetricExclusions(("CPUSteal",)).keeps,
        observe=lambda samples: observed.append([(sample.name, sample.value) for sample in samples]),
    )
    agent.collect()
    agent.collect()
    assert observed == [[("CPUUtilization", 10.0), ("GPUUtilization", 70.0)],
                        [("CPUUtilization", 20.0), ("X", 1.0), ("GPUUtilization", 75.0)]]
    observed.clear()
    agent.flush()  # the interval's self-metrics: a batch of their own
    assert len(observed) == 1
    assert {name for name, _ in observed[0]} >= {"Heartbeat", "DatapointsCollected"}


def test_a_collector_that_fails_recovers_and_fails_again_is_logged_again() -> None:
    agent = Agent(
        collectors=[Scripted("flaky", "X", [OSError("gone"), OSError("gone"), 1.0, OSError("gone again")])],
        aggregator=Aggregator(), stats=AgentStats(), submit=lambda d: None, wall_clock=WallClock(MINUTE),
    )
    with capture_logs() as logs:
        for _ in range(4):
            agent.collect()
    assert [(line["event"], line["error"]) for line in logs] == [
        ("collector_failed", "OSError('gone')"), ("collector_failed", "OSError('gone again')"),
    ]


def test_publish_worker_publishes_in_order_and_closes() -> None:
    client = RecordingClient()
    stats = AgentStats()
    worker = PublishWorker(Publisher(client, "InfraWatch", stats=stats))
    for i in range(3):
        worker.submit([Datum(f"M{i}", HOST, MINUTE, "Count", (1.0,), (1.0,))])
    assert worker.close(timeout=10.0) is True
    assert [r["MetricData"][0]["MetricName"] for r in client.calls] == ["M0", "M1", "M2"]
    assert not any(t.name == "publisher" and t.is_alive() for t in threading.enumerate())


def test_run_loop_collects_flushes_and_stops_with_a_last_flush() -> None:
    submitted: list[list[Datum]] = []
    stats = AgentStats()
    stop = threading.Event()
    cycles = []

    def on_cycle() -> None:
        cycles.append(1)
        if len(cycles) == 3:
            stop.set()

    agent = Agent(collectors=[Scripted("cpu", "CPUUtilization", [1.0, 2.0, 3.0, 4.0])], aggregator=Aggregator(),
                  stats=stats, submit=lambda d: submitted.append(list(d)), host_dimensions=HOST)
    agent.run(stop, collect_interval=0.01, publish_interval=60, flush_phase=0, on_cycle=on_cycle)
    values = sorted(v for batch in submitted for d in batch if d.name == "CPUUtilization" for v in d.values)
    # Three collections in the loop, one more on the way out (what came in since the last one), one flush.
    assert (values, len(submitted), stats.collector_errors) == ([1.0, 2.0, 3.0, 4.0], 1, {})


def test_a_stop_that_on_stop_declines_keeps_the_loop_running_without_a_flush() -> None:
    submitted: list[list[Datum]] = []
    stop = threading.Event()
    decisions = [True, False]  # carry on (a refused reload), then stop
    cycles = []

    def on_cycle() -> None:
        cycles.append(1)
        stop.set()

    def on_stop() -> bool:
        stop.clear()
        submitted.append([])  # a marker: no flush may come between the two stops
        return decisions.pop(0)

    agent = Agent(collectors=[Scripted("cpu", "CPUUtilization", [1.0, 2.0, 3.0])], aggregator=Aggregator(),
                  stats=AgentStats(), submit=lambda d: submitted.append(list(d)), host_dimensions=HOST)
    agent.run(stop, collect_interval=0.01, publish_interval=60, flush_phase=0, on_cycle=on_cycle, on_stop=on_stop)
    assert [sorted(v for d in batch if d.name == "CPUUtilization" for v in d.values) for batch in submitted] == [
        [], [], [1.0, 2.0, 3.0],
    ]
    assert len(cycles) == 2


def test_round_trip_through_moto_gives_exact_statistics() -> None:
    samples = [12.5, 50.0, 50.0, 99.0, 0.0, 37.25]
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        stats = AgentStats()
        minute = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
        clock = WallClock(minute.timestamp())
        publisher = Publisher(client, "InfraWatch", stats=stats)
        agent = Agent(collectors=[Scripted("gpu", "GPUUtilization", list(samples))], aggregator=Aggregator(),
                      stats=stats, submit=publisher.publish, host_dimensions=HOST, wall_clock=clock)
        for _ in samples:
            agent.collect()
            clock.now += 10
        agent.flush()
        result = client.get_metric_statistics(
            Namespace="InfraWatch", MetricName="GPUUtilization", Dimensions=[{"Name": "InstanceId", "Value": "i-0abc"}],
            StartTime=minute - dt.timedelta(minutes=1), EndTime=minute + dt.timedelta(minutes=2), Period=60,
            Statistics=["SampleCount", "Sum", "Maximum", "Minimum"],
        )
    assert [(p["SampleCount"], p["Sum"], p["Maximum"], p["Minimum"]) for p in result["Datapoints"]] == [
        (6.0, sum(samples), 99.0, 0.0)
    ]
    assert stats.published == stats.collected
    assert stats.dropped == {}


def test_excluded_metrics_are_neither_aggregated_nor_counted() -> None:
    submitted: list[list[Datum]] = []
    stats = AgentStats()
    exclusions = MetricExclusions(("GPUPCIe*", "CPUSteal"))
    agent = Agent(
        collectors=[Scripted("gpu", "GPUPCIeRxBytesPerSecond", [1.0]), Scripted("cpu", "CPUUtilization", [2.0]),
                    Scripted("steal", "CPUSteal", [3.0])],
        aggregator=Aggregator(), stats=stats, submit=lambda d: submitted.append(list(d)),
        host_dimensions=HOST, wall_clock=WallClock(MINUTE), keeps=exclusions.keeps,
    )
    assert agent.collect() == 1
    agent.flush()
    names = {d.name for d in submitted[0]}
    assert "CPUUtilization" in names
    assert names & {"GPUPCIeRxBytesPerSecond", "CPUSteal"} == set()
    assert stats.collected == 1 + len([d for d in submitted[0] if d.name != "CPUUtilization"])
