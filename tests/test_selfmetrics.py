"""The agent's own health metrics, and the accounting that every datapoint ends somewhere."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import botocore.exceptions

from agent.aggregate import Aggregator, Datum
from agent.catalogue import METRICS
from agent.loop import Agent
from agent.publisher import Publisher, RequestSizer
from agent.samples import Sample
from agent.selfstats import AgentStats, ProcessUsage
from agent.spool import Spool
from tests.fakes.cloudwatch import RecordingClient
from tests.fakes.host import FakeClock, Sequence

CpuTimes = namedtuple("CpuTimes", "user system children_user children_system")
MemoryInfo = namedtuple("MemoryInfo", "rss vms")
AGENT = (("Component", "agent"),)
MINUTE = 1_790_000_040.0
HOST = (("InstanceId", "i-0abc"),)


class FakeProcess:
    """psutil.Process as the agent sees itself: a scripted CPU time per reading, a fixed RSS."""

    def __init__(self, *cpu: tuple[float, float], rss: int) -> None:
        self.cpu_times = Sequence(*(CpuTimes(user, system, 0.0, 0.0) for user, system in cpu))
        self._rss = rss

    def memory_info(self) -> MemoryInfo:
        return MemoryInfo(self._rss, 4 * self._rss)


def test_agent_cpu_is_process_cpu_time_over_wall_time_and_rss_is_reported_in_bytes() -> None:
    clock = FakeClock(100.0)
    usage = ProcessUsage(FakeProcess((1.0, 0.5), (1.3, 0.7), (1.3, 0.7), rss=52_428_800), monotonic=clock)
    clock.advance(10.0)
    assert usage.samples() == [Sample("AgentMemoryRSS", 52_428_800.0, "Bytes", AGENT),
                               Sample("AgentCPUUtilization", 5.0, "Percent", AGENT)]  # 0.5 s of CPU in 10 s
    clock.advance(60.0)
    assert usage.samples()[1] == Sample("AgentCPUUtilization", 0.0, "Percent", AGENT)


def test_every_new_self_metric_is_in_the_catalogue_with_component_agent() -> None:
    for name in ("SpoolDatums", "SpoolOldestAgeSeconds", "AgentCPUUtilization", "AgentMemoryRSS"):
        assert METRICS[name].dimensions == ("Component",)
    assert [METRICS[n].unit for n in ("SpoolDatums", "SpoolOldestAgeSeconds", "AgentCPUUtilization",
                                      "AgentMemoryRSS")] == ["Count", "Seconds", "Percent", "Bytes"]


class Ramp:
    name = "ramp"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[Sample]:
        self.calls += 1
        return [METRICS["GPUUtilization"].sample(self.calls % 4 * 25.0, GPU="0")]


def test_collected_equals_published_plus_dropped_plus_spooled_and_gauges_ride_along(tmp_path: Path) -> None:
    """Three flushes: delivered, endpoint down (spooled), delivered again; the books balance each time."""
    down = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    client = RecordingClient(fail=lambda n, request: down if n == 2 else None)
    stats = AgentStats()
    wall = FakeClock(MINUTE)
    spool = Spool(tmp_path / "spool.db", namespace="InfraWatch", stats=stats, wall_clock=wall)
    publisher = Publisher(client, "InfraWatch", stats=stats, sizer=RequestSizer(), retry_deadline=0.0,
                          on_undeliverable=spool.put)
    usage = ProcessUsage(FakeProcess(*[(float(n), 0.0) for n in range(4)], rss=1000), monotonic=wall)
    agent = Agent(collectors=[Ramp()], aggregator=Aggregator(), stats=stats, submit=publisher.publish,
                  host_dimensions=HOST, wall_clock=wall, gauges=[usage.samples, spool.samples])
    for _ in range(3):
        for _ in range(10):
            agent.collect()
            wall.advance(1.0)
        agent.flush()
        assert stats.collected == stats.published + sum(stats.dropped.values()) + spool.datapoints
    assert stats.dropped == {}
    assert spool.datums == len(client.calls[1]["MetricData"])
    third = {d["MetricName"]: d for d in client.calls[2]["MetricData"]}
    assert third["SpoolDatums"]["Values"] == [float(spool.datums)]
    assert third["SpoolOldestAgeSeconds"]["Values"] == [30.0]  # the spooled minute began 30 s earlier
    assert third["AgentCPUUtilization"]["Values"] == [10.0]  # 1 s of CPU per 10 s
    assert third["AgentMemoryRSS"]["Values"] == [1000.0]
    assert sorted(datum.name for _, _, datum in spool.oldest(100)) == [
        "AgentCPUUtilization", "AgentMemoryRSS", "DatapointsCollected", "DatapointsPublished", "GPUUtilization",
        "Heartbeat", "PublishLatency", "SpoolDatums"]
    gpu = next(datum for _, _, datum in spool.oldest(100) if datum.name == "GPUUtilization")
    assert gpu == Datum("GPUUtilization", (("GPU", "0"), *HOST), MINUTE, "Percent",
                        (0.0, 25.0, 50.0, 75.0), (3.0, 2.0, 2.0, 3.0))  # samples 11..20


def test_values_merged_is_reported_for_the_interval_only_when_values_were_merged() -> None:
    stats = AgentStats()
    aggregator = Aggregator(on_merge=stats.add_merged, max_series_values=4)
    aggregator.add([Sample("Lat", float(value), "Milliseconds") for value in range(10)], MINUTE)
    merged = [s for s in stats.interval_samples() if s.name == "ValuesMerged"]
    assert merged == [Sample("ValuesMerged", float(stats.merged), "Count", AGENT)]
    assert stats.merged == 10 - len(aggregator.drain()[0].values)
    assert [s for s in stats.interval_samples() if s.name == "ValuesMerged"] == []
