"""StatsD through the whole agent: loopback UDP → collector → per-minute aggregation → PutMetricData.

A minute of six 10-second collects; what CloudWatch receives must give the counter's exact total as
Sum, its mean rate as Average, and the timer's exact distribution as Values/Counts.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator, Sequence

import boto3
import pytest
from moto import mock_aws

from agent.aggregate import Aggregator, Datum
from agent.loop import Agent
from agent.publisher import Publisher
from agent.selfstats import AgentStats
from agent.statsd.collector import StatsdCollector
from agent.statsd.listener import StatsdListener
from tests.fakes.host import FakeClock

HOST = (("InstanceId", "i-0abc"),)
WAIT = 10.0  # seconds; only reached when a test is failing


class Loopback:
    """A listener on 127.0.0.1 feeding a collector, and a socket to send to it."""

    def __init__(self, statsd: StatsdCollector) -> None:
        self.listener = StatsdListener(statsd.receive, address=("127.0.0.1", 0))
        self.listener.start()
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, *packets: bytes) -> None:
        already = self.listener.packets
        for packet in packets:
            self.sender.sendto(packet, self.listener.address)
        assert self.listener.wait_for_packets(already + len(packets), WAIT)

    def close(self) -> None:
        self.sender.close()
        self.listener.close()


@pytest.fixture
def monotonic() -> FakeClock:
    return FakeClock()


@pytest.fixture
def statsd(monotonic: FakeClock) -> StatsdCollector:
    return StatsdCollector(monotonic=monotonic, dimension_keys=("model",), max_dimensions=28)


@pytest.fixture
def loopback(statsd: StatsdCollector) -> Iterator[Loopback]:
    wire = Loopback(statsd)
    yield wire
    wire.close()


def run_minute(agent: Agent, loopback: Loopback, monotonic: FakeClock, wall: FakeClock) -> None:
    """Six collects 10 s apart; before collect k the job sends k counter lines of 100 and k timings."""
    for k in range(1, 7):
        loopback.send(*[b"SamplesProcessed:100|c|#model:llama"] * k, b"\n".join([b"StepTime:%d|ms" % (10 * k)] * k))
        monotonic.advance(10)
        agent.collect()
        wall.advance(10)
    agent.flush()


def test_a_minute_publishes_exact_sum_mean_rate_and_distribution(
    statsd: StatsdCollector, loopback: Loopback, monotonic: FakeClock
) -> None:
    submitted: list[Datum] = []
    wall = FakeClock(1_790_000_040.0)  # the start of a minute
    agent = Agent(collectors=[statsd], aggregator=Aggregator(), stats=AgentStats(), submit=submitted.extend,
                  host_dimensions=HOST, wall_clock=wall)
    run_minute(agent, loopback, monotonic, wall)
    by_name = {datum.name: datum for datum in submitted}
    llama = (("InstanceId", "i-0abc"), ("model", "llama"))

    total = by_name["SamplesProcessed"]
    assert (total.dimensions, total.unit, total.timestamp) == (llama, "Count", 1_790_000_040.0)
    assert sum(v * c for v, c in zip(total.values, total.counts, strict=True)) == 100 * 21  # Sum

    rate = by_name["SamplesProcessedPerSecond"]
    assert rate.unit == "Count/Second"
    assert dict(zip(rate.values, rate.counts, strict=True)) == {10.0 * k: 1.0 for k in range(1, 7)}
    mean_rate = sum(v * c for v, c in zip(rate.values, rate.counts, strict=True)) / sum(rate.counts)
    assert mean_rate == 100 * 21 / 60  # Average of the rate series = the minute's total / 60 s

    step = by_name["StepTime"]
    assert (step.dimensions, step.unit) == (HOST, "Milliseconds")
    assert dict(zip(step.values, step.counts, strict=True)) == {10.0 * k: float(k) for k in range(1, 7)}

    assert {name for name in by_name if name.startswith("Statsd")} == {"StatsdSeriesDropped", "StatsdParseErrors"}
    assert by_name["StatsdParseErrors"].values == (0.0,)
    assert by_name["StatsdParseErrors"].counts == (6.0,)


def test_round_trip_through_moto_gives_the_exact_total_and_mean_rate(
    statsd: StatsdCollector, loopback: Loopback, monotonic: FakeClock
) -> None:
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        minute = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
        wall = FakeClock(minute.timestamp())
        stats = AgentStats()
        publisher = Publisher(client, "InfraWatch", stats=stats)
        agent = Agent(collectors=[statsd], aggregator=Aggregator(), stats=stats, submit=publisher.publish,
                      host_dimensions=HOST, wall_clock=wall)
        run_minute(agent, loopback, monotonic, wall)

        def statistics(name: str) -> list[tuple[float, float, float]]:
            result = client.get_metric_statistics(
                Namespace="InfraWatch", MetricName=name,
                Dimensions=[{"Name": "InstanceId", "Value": "i-0abc"}, {"Name": "model", "Value": "llama"}],
                StartTime=minute - dt.timedelta(minutes=1), EndTime=minute + dt.timedelta(minutes=2), Period=60,
                Statistics=["SampleCount", "Sum", "Average"],
            )
            return [(p["SampleCount"], p["Sum"], p["Average"]) for p in result["Datapoints"]]

        assert statistics("SamplesProcessed") == [(6.0, 2100.0, 350.0)]
        assert statistics("SamplesProcessedPerSecond") == [(6.0, 210.0, 35.0)]
    assert stats.dropped == {}



def test_sampled_timers_reach_cloudwatch_with_their_exact_sample_count(
    statsd: StatsdCollector, loopback: Loopback, monotonic: FakeClock
) -> None:
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        minute = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
        wall = FakeClock(minute.timestamp())
        stats = AgentStats()
        publisher = Publisher(client, "InfraWatch", stats=stats)
        submitted: list[Datum] = []

        def submit(datums: Sequence[Datum]) -> None:
            submitted.extend(datums)
            publisher.publish(datums)

        agent = Agent(collectors=[statsd], aggregator=Aggregator(), stats=stats, submit=submit,
                      host_dimensions=HOST, wall_clock=wall)
        loopback.send(b"\n".join(b"Step:%d|ms|@%r" % (value, 10 / 37) for value in range(10)),
                      b"Rare:7|h|@0.001")
        monotonic.advance(10)
        agent.collect()
        agent.flush()
        [step] = [datum for datum in submitted if datum.name == "Step"]
        assert step.values == tuple(float(value) for value in range(10))
        assert sum(step.counts) == 37.0  # SampleCount 37, not 40: DogStatsD's 10 lines in 37
        # moto reads Counts as integers (CloudWatch takes doubles), so only a whole weight round-trips here.
        result = client.get_metric_statistics(
            Namespace="InfraWatch", MetricName="Rare", Dimensions=[{"Name": "InstanceId", "Value": "i-0abc"}],
            StartTime=minute - dt.timedelta(minutes=1), EndTime=minute + dt.timedelta(minutes=2), Period=60,
            Statistics=["SampleCount", "Sum"],
        )
        assert [(p["SampleCount"], p["Sum"]) for p in result["Datapoints"]] == [(1000.0, 7000.0)]  # not 100
    assert stats.dropped == {}
