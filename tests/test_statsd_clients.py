"""Real StatsD clients through the real UDP listener: what they send is published exactly, tags and
sample rates included.

pystatsd (`statsd` on PyPI) and Datadog's DogStatsd (`datadog`) run here as they run in a job. Node's
hot-shots and node-statsd cannot run in this suite; their datagrams are written out below as their
source builds them (hot-shots `lib/statsd.js` sendStat/send and `lib/helpers.js` formatTags; node-statsd
`lib/statsd.js` send).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest
import statsd as pystatsd
from datadog.dogstatsd.base import DogStatsd

from agent.catalogue import METRICS
from agent.samples import Sample
from agent.statsd.collector import StatsdCollector
from agent.statsd.listener import StatsdListener
from tests.fakes.host import FakeClock

WAIT = 10.0  # seconds; only reached when a test is failing
MINUTE_START = 1_790_000_040.0
KEYS = ("env", "error", "city")
PROD = (("env", "prod"),)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def statsd(clock: FakeClock) -> StatsdCollector:
    return StatsdCollector(monotonic=clock, wall_clock=FakeClock(MINUTE_START), dimension_keys=KEYS)


@pytest.fixture
def seed() -> Iterator[int]:
    """Both clients sample with the random module's shared generator: one draw per call, sent when the draw
    is at most the rate. A fixed seed makes the lines sent known; the generator is restored afterwards."""
    state = random.getstate()
    yield 2
    random.setstate(state)


@pytest.fixture
def dogstatsd(listener: StatsdListener, monkeypatch: pytest.MonkeyPatch) -> Iterator[DogStatsd]:
    for name in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_ENTITY_ID", "DD_TAGS", "DD_DOGSTATSD_URL"):
        monkeypatch.delenv(name, raising=False)  # each would add tags to every line
    client = DogStatsd(host=listener.address[0], port=listener.address[1], disable_telemetry=True,
                       origin_detection_enabled=False)
    yield client
    client.close_socket()


def sent_by_seed(seed: int, calls: int, rate: float) -> list[int]:
    """Which of `calls` sampled calls a client sends, with the generator seeded by `seed`."""
    draws = random.Random(seed)
    return [call for call in range(calls) if draws.random() <= rate]


def wait(listener: StatsdListener, datagrams: int) -> None:
    assert listener.wait_for_packets(datagrams, WAIT)


def published(samples: list[Sample]) -> dict[str, list[tuple[float, float, tuple[tuple[str, str], ...]]]]:
    """name -> (value, count, dimensions) of every application sample."""
    out: dict[str, list[tuple[float, float, tuple[tuple[str, str], ...]]]] = {}
    for sample in samples:
        if sample.name not in METRICS and not sample.name.endswith("PerSecond"):
            out.setdefault(sample.name, []).append((sample.value, sample.count, sample.dimensions))
    return out


def parse_errors(samples: list[Sample]) -> float:
    return next(sample.value for sample in samples if sample.name == "StatsdParseErrors")


def test_pystatsd_every_type_and_a_sample_rate(
    statsd: StatsdCollector, listener: StatsdListener, clock: FakeClock, seed: int
) -> None:
    client = pystatsd.StatsClient(*listener.address)
    client.incr("Rows")
    client.incr("Rows", 5)
    client.decr("Rows", 2)
    client.gauge("Depth", 10)
    client.gauge("Depth", -3, delta=True)
    client.gauge("Depth", 2.5, delta=True)
    client.timing("Lat", 12.5)  # sent as "Lat:12.500000|ms"
    client.timing("Lat", 12.5)
    client.set("Users", "alice")
    client.set("Users", "bob")
    client.set("Users", "alice")
    with client.pipeline() as pipe:  # one datagram of two lines
        pipe.incr("Rows", 10)
        pipe.timing("Lat", 3)
    random.seed(seed)
    for call in range(20):
        client.timing("Sampled", 100 + call, rate=0.25)  # "Sampled:100.000000|ms|@0.25"
    sent = sent_by_seed(seed, 20, 0.25)
    wait(listener, 12 + len(sent))
    client.close()
    clock.advance(10)
    samples = statsd.collect()
    assert published(samples) == {
        "Rows": [(14.0, 1.0, ())],
        "Depth": [(9.5, 1.0, ())],
        "Lat": [(3.0, 1.0, ()), (12.5, 2.0, ())],  # distinct values in ascending order
        "Users": [(2.0, 1.0, ())],
        "Sampled": [(100.0 + call, 4.0, ()) for call in sent],
    }
    assert sent == [2, 3, 11]
    assert parse_errors(samples) == 0


def test_dogstatsd_every_type_tags_and_client_side_sampling(
    statsd: StatsdCollector, listener: StatsdListener, dogstatsd: DogStatsd, clock: FakeClock, seed: int
) -> None:
    dogstatsd.increment("Rows", 3, tags=["env:prod", "canary"])
    dogstatsd.decrement("Rows", tags=["env:prod"])
    dogstatsd.increment("Rows", 1, sample_rate=1)  # no "|@" field: the client leaves a rate of 1 out
    dogstatsd.gauge("Depth", 7, tags=["env:prod"])
    dogstatsd.histogram("Tokens", 512, tags=["env:prod"])
    dogstatsd.distribution("Tokens", 512, tags=["env:prod"])
    dogstatsd.timing("Lat", 41.5)
    dogstatsd.set("Users", "alice", tags=["env:prod"])
    dogstatsd.set("Users", "alice", tags=["env:prod"])
    # The client writes the space as "_": "#error:connection_refused"; "zürich" goes as UTF-8.
    dogstatsd.increment("Errors", tags=["error:connection refused", "city:zürich"])
    random.seed(seed)
    for call in range(37):
        dogstatsd.histogram("Step", call, sample_rate=10 / 37)  # "Step:2|h|@0.2702702702702703"
    sent = sent_by_seed(seed, 37, 10 / 37)
    wait(listener, 10 + len(sent))
    clock.advance(10)
    samples = statsd.collect()
    errors = (("error", "connection_refused"),)
    assert published(samples) == {
        "Rows": [(2.0, 1.0, PROD), (1.0, 1.0, ())],
        "Depth": [(7.0, 1.0, PROD)],
        "Tokens": [(512.0, 2.0, PROD)],
        "Lat": [(41.5, 1.0, ())],
        "Users": [(1.0, 1.0, PROD)],
        "Errors": [(1.0, 1.0, errors)],  # the city tag is dropped (CloudWatch takes ASCII only), not the line
        "Step": [(float(call), 1 / (10 / 37), ()) for call in sent],
    }
    assert len(sent) == 10
    assert sum(count for _, count, _ in published(samples)["Step"]) == 37.0  # SampleCount 37, not 40
    assert parse_errors(samples) == 1  # the dropped city tag


def send(listener: StatsdListener, *datagrams: bytes) -> None:
    already = listener.packets
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:
            sender.sendto(datagram, listener.address)
    wait(listener, already + len(datagrams))


def test_what_hot_shots_sends(statsd: StatsdCollector, listener: StatsdListener, clock: FakeClock) -> None:
    send(
        listener,
        # timing(stat, 251, 0.5, {error: "connection refused"}): formatTags keeps the space
        b"api.latency:251|ms|@0.5|#error:connection refused",
        # increment with globalTags ["env:prod"] and tags ["canary"]
        b"api.calls:1|c|#canary,env:prod",
        # a buffered client (maxBufferSize > 0) sends lines joined by "\n", the last one ended too
        b"api.calls:1|c|#canary,env:prod\napi.depth:4|g\napi.users:u-17|s\n",
        # distribution and histogram (DogStatsD types); a set of a number
        b"api.size:2048|d\napi.size:1024|h|@0.25\napi.users:17|s",
    )
    clock.advance(10)
    samples = statsd.collect()
    assert published(samples) == {
        "api.latency": [(251.0, 2.0, (("error", "connection refused"),))],
        "api.calls": [(2.0, 1.0, PROD)],
        "api.depth": [(4.0, 1.0, ())],
        "api.users": [(2.0, 1.0, ())],
        "api.size": [(1024.0, 4.0, ()), (2048.0, 1.0, ())],
    }
    assert parse_errors(samples) == 0


def test_what_node_statsd_sends(statsd: StatsdCollector, listener: StatsdListener, clock: FakeClock) -> None:
    send(
        listener,
        b"jobs.done:1|c|#env=prod,canary",  # tags are joined as given: Graphite-style "key=value" included
        b"jobs.done:-1|c|#env=prod",  # decrement
        b"jobs.time:87|ms|@0.1|#env=prod",
        b"jobs.depth:12|g",
        b"jobs.users:alice|s",
        b"jobs.done:1|c|#",  # an empty tag list, from a tags array of one empty string
    )
    clock.advance(10)
    samples = statsd.collect()
    assert published(samples) == {
        "jobs.done": [(0.0, 1.0, PROD), (1.0, 1.0, ())],
        "jobs.time": [(87.0, 10.0, PROD)],
        "jobs.depth": [(12.0, 1.0, ())],
        "jobs.users": [(1.0, 1.0, ())],
    }
    assert parse_errors(samples) == 0
