"""Nothing lost: real HTTP through a fault-injecting proxy to a moto server, with simulated time.

The agent's parts run in this process on two injected clocks: a wall clock that moves one second per
collection (timestamps, spool ages, the proxy's fault windows) and a monotonic clock that the retry
backoff and the replay pacing move. Every request is a real PutMetricData over loopback; afterwards
every series is read back from moto with GetMetricStatistics and compared with what the agent flushed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from structlog.testing import capture_logs

from agent.aggregate import Aggregator, Datum
from agent.catalogue import METRICS
from agent.cli import cloudwatch_client
from agent.loop import Agent
from agent.publisher import Publisher
from agent.replay import Replayer
from agent.samples import Sample
from agent.selfstats import AgentStats
from agent.spool import MAX_AGE_SECONDS, Spool
from tests.fakes.host import FakeClock
from tests.faultproxy import Fault, FaultProxy

NAMESPACE = "InfraWatch"
HOST = (("InstanceId", "i-0durable"),)
PUBLISH_INTERVAL = 10
# Whole minutes, an hour back: CloudWatch (and the spool) accept it, and no bucket straddles the start.
START = float((int(dt.datetime.now(dt.timezone.utc).timestamp()) // 60 - 60) * 60)

Series = tuple[str, tuple[tuple[str, str], ...]]


class GpuHost:
    """Two GPUs and memory with values that sum exactly in floating point, whatever the order."""

    name = "gpuhost"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[Sample]:
        self.calls += 1
        return [
            METRICS["GPUUtilization"].sample(self.calls % 9 * 12.5, GPU="0"),
            METRICS["GPUUtilization"].sample(100.0 - self.calls % 5 * 0.25, GPU="1"),
            METRICS["MemoryUtilization"].sample(40.0 + self.calls % 3),
        ]


class Simulation:
    """The agent's parts wired as the CLI wires them, driven synchronously on simulated clocks."""

    def __init__(self, endpoint: str, spool_path: Path, *, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.wall = FakeClock(START)
        self.monotonic = FakeClock(0.0)
        self.stats = AgentStats()
        self.spool = Spool(spool_path, namespace=NAMESPACE, stats=self.stats, max_bytes=max_bytes, wall_clock=self.wall)
        self.publisher = Publisher(client_for(endpoint), NAMESPACE, stats=self.stats, retry_deadline=5.0,
                                   sleep=self.monotonic.sleep, monotonic=self.monotonic,
                                   on_undeliverable=self.spool.put)
        self.replayer = Replayer(self.spool, self.publisher, requests_per_second=5.0, monotonic=self.monotonic)
        self.flushed: list[Datum] = []
        self.agent = Agent(collectors=[GpuHost()], aggregator=Aggregator(on_drop=self.stats.add_dropped),
                           stats=self.stats, submit=self._submit, host_dimensions=HOST, wall_clock=self.wall,
                           gauges=[self.spool.samples])
        self.replays: list[bool] = []  # per replay request: did it succeed

    def _submit(self, datums: Iterable[Datum]) -> None:
        batch = list(datums)
        self.flushed += batch
        self.publisher.publish(batch)

    def run(self, seconds: int) -> None:
        """Collect every second and flush every publish interval; replay fills each second's idle time."""
        for _ in range(seconds):
            self.agent.collect()
            self.wall.advance(1.0)
            if (self.wall.now - START) % PUBLISH_INTERVAL == 0:
                self.agent.flush()
            second_ends = self.monotonic.now + 1.0
            while (due := self.replayer.due_in()) is not None and self.monotonic.now + due < second_ends:
                self.monotonic.advance(due)
                self.replays.append(self.replayer.replay_one())
            self.monotonic.now = max(self.monotonic.now, second_ends)

    def balanced(self) -> bool:
        return self.stats.collected == self.stats.published + sum(self.stats.dropped.values()) + self.spool.datapoints


def client_for(endpoint: str) -> Any:
    """As the CLI builds it (retries are the publisher's, not botocore's), pointed at `endpoint`."""
    return boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15))


def expected_statistics(datums: Iterable[Datum]) -> dict[Series, dict[float, tuple[float, float]]]:
    """(SampleCount, Sum) per series per minute, from what the agent flushed."""
    table: dict[Series, dict[float, tuple[float, float]]] = defaultdict(dict)
    for datum in datums:
        count, total = table[(datum.name, datum.dimensions)].get(datum.timestamp, (0.0, 0.0))
        table[(datum.name, datum.dimensions)][datum.timestamp] = (
            count + sum(datum.counts), total + sum(v * c for v, c in zip(datum.values, datum.counts, strict=True)))
    return table


def moto_statistics(moto: Any, series: Iterable[Series], end: float) -> dict[Series, dict[float, tuple[float, float]]]:
    table: dict[Series, dict[float, tuple[float, float]]] = {}
    for name, dims in series:
        points = moto.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims],
            StartTime=dt.datetime.fromtimestamp(START - 60, dt.timezone.utc),
            EndTime=dt.datetime.fromtimestamp(end + 120, dt.timezone.utc), Period=60,
            Statistics=["SampleCount", "Sum"],
        )["Datapoints"]
        table[(name, dims)] = {p["Timestamp"].timestamp(): (p["SampleCount"], p["Sum"]) for p in points}
    return table


def stored_series(moto: Any) -> set[Series]:
    pages = moto.get_paginator("list_metrics").paginate(Namespace=NAMESPACE)
    return {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
            for page in pages for m in page["Metrics"]}


def assert_moto_holds_exactly(moto: Any, sim: Simulation, exclude: Iterable[Series] = ()) -> None:
    expected = expected_statistics(sim.flushed)
    for series in exclude:
        expected.pop(series)
    assert stored_series(moto) - set(exclude) == set(expected)
    assert moto_statistics(moto, expected, sim.wall.now) == expected


def test_ten_minute_outage_then_every_series_matches_exactly(moto_server: str, tmp_path: Path) -> None:
    with FaultProxy(moto_server, clock=lambda: sim.wall.now) as proxy:
        sim = Simulation(proxy.url, tmp_path / "spool.db")
        proxy.inject(Fault.UNAVAILABLE, start=START, end=START + 601)  # the flush at 600 s fails too
        sim.run(600)
        assert sim.stats.published == 0
        spooled = sim.spool.datums
        assert 0 < spooled < 1000
        assert sim.balanced()
        peak_age = sim.spool.samples()[1].value
        per_metric = Counter[Series]()
        for _, _, datum in sim.spool.oldest(1000):
            per_metric[(datum.name, datum.dimensions)] += len(datum.values)
        sim.run(120)
        sim.agent.flush()
    assert sim.spool.datums == 0
    assert sim.balanced()
    assert sim.stats.dropped == {}
    assert sim.stats.collected == sim.stats.published
    assert sim.stats.publish_errors.keys() == {"503"}
    assert peak_age == 600.0  # the first minute of the outage, ten minutes old when it ended
    # Fewer than 1,000 datums, but CloudWatch takes at most 150 values of one metric per request.
    assert max(per_metric.values()) > 150
    assert sim.replays.count(True) == math.ceil(max(per_metric.values()) / 150)
    assert_moto_holds_exactly(client_for(moto_server), sim)


def test_throttling_storm_of_half_the_requests_then_every_series_matches_exactly(
    moto_server: str, tmp_path: Path
) -> None:
    with FaultProxy(moto_server, clock=lambda: sim.wall.now, seed=7) as proxy:
        sim = Simulation(proxy.url, tmp_path / "spool.db")
        proxy.inject(Fault.THROTTLE, ratio=0.5, start=START, end=START + 300)
        sim.run(360)
        sim.agent.flush()
        outcomes = dict(proxy.outcomes)
    assert outcomes["throttle"] > 0
    assert sim.stats.publish_errors["Throttling"] == outcomes["throttle"]
    assert sim.spool.datums == 0
    assert sim.stats.dropped == {}
    assert sim.stats.collected == sim.stats.published
    assert_moto_holds_exactly(client_for(moto_server), sim)


def test_connection_resets_are_retried_and_nothing_is_lost(moto_server: str, tmp_path: Path) -> None:
    with FaultProxy(moto_server, clock=lambda: sim.wall.now, seed=3) as proxy:
        sim = Simulation(proxy.url, tmp_path / "spool.db")
        proxy.inject(Fault.RESET, ratio=0.7, start=START, end=START + 120)
        sim.run(180)
        sim.agent.flush()
        resets = proxy.outcomes["reset"]
    assert resets > 0
    assert sim.stats.publish_errors["ConnectionClosedError"] == resets
    assert (sim.spool.datums, sim.stats.dropped) == (0, {})
    assert_moto_holds_exactly(client_for(moto_server), sim)


def test_spool_full_during_an_outage_drops_the_oldest_and_the_books_balance(
    moto_server: str, tmp_path: Path
) -> None:
    with FaultProxy(moto_server, clock=lambda: sim.wall.now) as proxy:
        sim = Simulation(proxy.url, tmp_path / "spool.db", max_bytes=32 * 1024)  # a third of what 10 min need
        proxy.inject(Fault.UNAVAILABLE, start=START, end=START + 601)
        sim.run(600)
        sim.run(60)
        sim.agent.flush()
    dropped = sim.stats.dropped["spool_full"]
    assert set(sim.stats.dropped) == {"spool_full"}
    assert sim.stats.collected == sim.stats.published + dropped
    # Eviction cut the spool at one minute: everything before it is gone, some of it went, the rest arrived.
    expected = expected_statistics(sim.flushed)
    stored = moto_statistics(client_for(moto_server), expected, sim.wall.now)
    lost = {(series, minute): count - stored[series].get(minute, (0.0, 0.0))[0]
            for series, minutes in expected.items() for minute, (count, _) in minutes.items()}
    assert sum(lost.values()) == dropped
    cut = max(minute for (_, minute), count in lost.items() if count)
    assert START < cut < START + 600
    for series, minutes in expected.items():
        assert all(minute not in stored[series] for minute in minutes if minute < cut)
        assert {m: v for m, v in stored[series].items() if m > cut} == {m: v for m, v in minutes.items() if m > cut}


def test_datums_spooled_longer_than_cloudwatch_accepts_are_dropped_as_too_old(
    moto_server: str, tmp_path: Path
) -> None:
    with FaultProxy(moto_server, clock=lambda: sim.wall.now) as proxy:
        sim = Simulation(proxy.url, tmp_path / "spool.db")
        proxy.inject(Fault.UNAVAILABLE)
        sim.run(120)
        spooled = sim.spool.datapoints
        sim.wall.advance(MAX_AGE_SECONDS)  # the host slept for two weeks; the endpoint is back
        proxy.heal()
        sim.run(20)
    assert sim.stats.dropped == {"too_old": spooled}
    assert sim.spool.datums == 0
    assert sim.stats.collected == sim.stats.published + spooled


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 1000)


def truncated(path: Path) -> None:
    spool = Spool(path, namespace=NAMESPACE, stats=AgentStats())
    spool.put([Datum("Heartbeat", HOST, START - 60 * minute, "Count", (1.0,), (1.0,)) for minute in range(3000)],
              "503")
    spool.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [garbage, truncated])
def test_a_damaged_spool_file_warns_once_and_the_agent_keeps_publishing(
    moto_server: str, tmp_path: Path, damage: Any
) -> None:
    path = tmp_path / "spool.db"
    damage(path)
    with FaultProxy(moto_server, clock=lambda: sim.wall.now) as proxy, capture_logs() as logs:
        sim = Simulation(proxy.url, path)
        proxy.inject(Fault.UNAVAILABLE, start=START + 30, end=START + 90)
        sim.run(180)
        sim.agent.flush()
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning" and entry["event"] != "publish_failed"
            ] == ["spool_corrupt_moved_aside"]
    assert sim.stats.published == sim.stats.collected
    assert sim.spool.datums == 0
    assert_moto_holds_exactly(client_for(moto_server), sim)


@pytest.mark.parametrize("fault", [Fault.UNAVAILABLE, Fault.RESET])
def test_the_cli_client_honours_the_service_endpoint_variable(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    with FaultProxy(moto_server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", proxy.url)
        client = cloudwatch_client("us-east-1")
        proxy.inject(fault)
        with pytest.raises(Exception):  # noqa: B017 - the type differs by fault; the count is what matters
            client.put_metric_data(Namespace=NAMESPACE, MetricData=[{"MetricName": "Heartbeat", "Value": 1.0}])
        proxy.heal()
        client.put_metric_data(Namespace=NAMESPACE, MetricData=[{"MetricName": "Heartbeat", "Value": 1.0}])
        assert dict(proxy.outcomes) == {fault.value: 1, "forwarded": 1}  # botocore did not retry on its own
