"""The Python meter against a real listener: what a job adds arrives exactly, batched, never raising."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from agent.meter import MAX_PACKET, Meter, MeterClient
from agent.samples import Sample
from agent.statsd.collector import StatsdCollector
from agent.statsd.listener import StatsdListener
from tests.fakes.host import Sequence

WAIT = 10.0  # seconds; only reached when a test is failing
NEVER = 3600.0  # flush interval for tests that flush by hand


@pytest.fixture
def statsd() -> StatsdCollector:
    return StatsdCollector(monotonic=lambda: 0.0, dimension_keys=("model",))


@pytest.fixture
def client(listener: StatsdListener) -> Iterator[MeterClient]:
    meter_client = MeterClient(f"127.0.0.1:{listener.address[1]}", flush_interval=NEVER)
    yield meter_client
    meter_client.close()


def deliver(client: MeterClient, listener: StatsdListener) -> None:
    client.flush()
    assert listener.wait_for_packets(client.sent_packets, WAIT)


def values(samples: list[Sample], name: str) -> list[float]:
    return [sample.value for sample in samples if sample.name == name]


def test_adds_from_many_threads_arrive_as_exactly_their_sum(
    client: MeterClient, listener: StatsdListener, statsd: StatsdCollector
) -> None:
    meter = Meter("SamplesProcessed", tags={"model": "llama"}, client=client)

    def work(offset: int) -> None:
        for n in range(2500):
            meter.add(n % 7 + offset)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deliver(client, listener)
    expected = sum(n % 7 + offset for offset in range(4) for n in range(2500))
    samples = statsd.collect()
    assert [(s.value, s.dimensions) for s in samples if s.name == "SamplesProcessed"] == [
        (float(expected), (("model", "llama"),))
    ]
    assert client.sent_lines == 1
    assert client.errors == 0


def test_float_adds_arrive_as_the_same_float_sum(
    client: MeterClient, listener: StatsdListener, statsd: StatsdCollector
) -> None:
    meter = Meter("ReadGigabytes", client=client)
    expected = 0.0
    for n in range(1, 101):
        meter.add(n / 10)
        expected += n / 10
    deliver(client, listener)
    assert values(statsd.collect(), "ReadGigabytes") == [expected]


def test_each_flush_sends_only_what_was_added_since(
    client: MeterClient, listener: StatsdListener, statsd: StatsdCollector
) -> None:
    meter = Meter("Rows", client=client)
    meter.add(5)
    deliver(client, listener)
    meter.add(2)
    deliver(client, listener)
    deliver(client, listener)  # nothing pending: nothing sent
    assert client.sent_lines == 2
    assert values(statsd.collect(), "Rows") == [7.0]


def test_timer_records_milliseconds_also_when_the_block_raises(
    client: MeterClient, listener: StatsdListener, statsd: StatsdCollector
) -> None:
    meter = Meter("StepTime", client=client)
    with meter.time(clock=Sequence(100.0, 100.0125)):
        pass
    with pytest.raises(ZeroDivisionError), meter.time(clock=Sequence(7.0, 7.5)):
        _ = 1 / 0
    meter.record_milliseconds(3.25)
    deliver(client, listener)
    samples = statsd.collect()
    assert [(s.value, s.unit) for s in samples if s.name == "StepTime"] == [
        (3.25, "Milliseconds"), (12.5, "Milliseconds"), (500.0, "Milliseconds"),
    ]


@pytest.fixture
def raw_receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(WAIT)
        yield sock


def test_lines_are_batched_into_datagrams_of_at_most_1432_bytes(raw_receiver: socket.socket) -> None:
    client = MeterClient(f"127.0.0.1:{raw_receiver.getsockname()[1]}", flush_interval=NEVER)
    try:
        for index in range(300):
            Meter(f"Stage{index:03d}Rows", tags={"model": "llama-8b"}, client=client).add(index)
        client.flush()
        datagrams = [raw_receiver.recv(65535) for _ in range(client.sent_packets)]
    finally:
        client.close()
    assert all(len(datagram) <= MAX_PACKET for datagram in datagrams)
    assert max(len(datagram) for datagram in datagrams) > MAX_PACKET - 40  # packed, not one line each
    lines = [line for datagram in datagrams for line in datagram.decode().split("\n")]
    assert lines == [f"Stage{index:03d}Rows:{index}|c|#model:llama-8b" for index in range(300)]


def test_timings_are_sent_by_the_caller_as_soon_as_a_datagram_is_full(raw_receiver: socket.socket) -> None:
    client = MeterClient(f"127.0.0.1:{raw_receiver.getsockname()[1]}", flush_interval=NEVER)
    try:
        meter = Meter("StepTime", client=client)
        for _ in range(200):  # "StepTime:1.000|ms" is 18 bytes with its newline: 79 fit in 1432
            meter.record_milliseconds(1)
        assert client.sent_packets == 2
        assert [raw_receiver.recv(65535).count(b"\n") + 1 for _ in range(2)] == [79, 79]
    finally:
        client.close()


def test_the_background_thread_flushes_on_its_own(raw_receiver: socket.socket) -> None:
    client = MeterClient(f"127.0.0.1:{raw_receiver.getsockname()[1]}", flush_interval=0.01)
    try:
        Meter("Rows", client=client).add(3)
        assert raw_receiver.recv(65535) == b"Rows:3|c"
    finally:
        client.close()


def test_close_sends_what_is_pending_and_stops_the_thread(raw_receiver: socket.socket) -> None:
    client = MeterClient(f"127.0.0.1:{raw_receiver.getsockname()[1]}", flush_interval=NEVER)
    Meter("Rows", client=client).add(4)
    client.close()
    assert raw_receiver.recv(65535) == b"Rows:4|c"
    assert not any(thread.name == "meter-flush" and thread.is_alive() for thread in threading.enumerate())


class Vector:
    """Adds like an array would: the sum is not a number, which only shows when the flush formats it."""

    def __radd__(self, other: object) -> Vector:
        return self


def test_add_and_time_never_raise_into_the_job(raw_receiver: socket.socket) -> None:
    client = MeterClient(f"127.0.0.1:{raw_receiver.getsockname()[1]}", flush_interval=NEVER)
    try:
        meter = Meter("Rows", client=client)
        meter.add("three")  # type: ignore[arg-type]
        step = Meter("Step", client=client)
        step.record_milliseconds("slow")  # type: ignore[arg-type]
        step.record_milliseconds(float("nan"))
        Meter("Inf", client=client).add(float("inf"))
        Meter("Vector", client=client).add(Vector())  # type: ignore[arg-type]
        meter.add(2)
        client.flush()
        assert raw_receiver.recv(65535) == b"Rows:2|c"
        assert client.errors == 5
    finally:
        client.close()


def test_no_route_to_the_agent_counts_lines_as_dropped() -> None:
    def no_such_host(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(-2, "Name or service not known")

    client = MeterClient("agent.invalid:8125", flush_interval=NEVER, getaddrinfo=no_such_host)
    try:
        Meter("Rows", client=client).add(1)
        Meter("Bytes", client=client).add(1)
        client.flush()
        assert (client.sent_lines, client.dropped_lines) == (0, 2)
    finally:
        client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_send_its_parents_pending_counts(
    client: MeterClient, listener: StatsdListener, statsd: StatsdCollector
) -> None:
    meter = Meter("Rows", client=client)
    meter.add(10)
    pid = os.fork()
    if pid == 0:  # the child: a DataLoader worker, say
        meter.add(1)
        client.flush()
        os._exit(0 if client.sent_lines == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    deliver(client, listener)
    assert listener.wait_for_packets(2, WAIT)  # the child's datagram and the parent's
    assert values(statsd.collect(), "Rows") == [11.0]


def test_address_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw_receiver: socket.socket
) -> None:
    monkeypatch.setenv("INFRAWATCH_STATSD_ADDRESS", f"127.0.0.1:{raw_receiver.getsockname()[1]}")
    client = MeterClient(flush_interval=NEVER)
    try:
        Meter("Rows", client=client).add(1)
        client.flush()
        assert raw_receiver.recv(65535) == b"Rows:1|c"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("name", "tags", "message"),
    [
        ("bad name", None, "metric name 'bad name' must be 1..246 of A-Z a-z 0-9 _ . - /"),
        ("", None, "metric name '' must be 1..246 of A-Z a-z 0-9 _ . - /"),
        ("GPUUtilization", None, "metric name 'GPUUtilization' is one of the agent's own metrics"),
        ("mem_used_percent", None, "metric name 'mem_used_percent' is one of the agent's own metrics"),
        ("DiskReadBytes", None,
         "metric name 'DiskReadBytes' (its rate 'DiskReadBytesPerSecond') is one of the agent's own metrics"),
        ("Rows", {"model": ""}, "tag model: needs a key of A-Z a-z 0-9 _ . - / and a printable ASCII value"),
        ("Rows", {"a b": "x"}, "tag a b:x needs a key of A-Z a-z 0-9 _ . - / and a printable ASCII value"),
        ("Rows", {"k": "x,y"}, "tag k:x,y needs a key of A-Z a-z 0-9 _ . - / and a printable ASCII value"),
    ],
)
def test_names_and_tags_the_agent_would_refuse_fail_at_construction(
    client: MeterClient, name: str, tags: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ValueError) as error:
        Meter(name, tags=tags, client=client)
    assert str(error.value) == message


def test_two_meters_that_would_publish_the_same_metric_name_fail_at_construction(client: MeterClient) -> None:
    Meter("Coll", client=client)
    Meter("Coll", tags={"model": "a"}, client=client)  # the same name again: the same metrics
    with pytest.raises(ValueError) as error:
        Meter("CollPerSecond", client=client)
    assert str(error.value) == (
        "metric name 'CollPerSecond' would publish 'CollPerSecond', which Meter 'Coll' already publishes"
    )
    Meter("RowsPerSecond", client=client)
    with pytest.raises(ValueError) as error:
        Meter("Rows", client=client)
    assert str(error.value) == (
        "metric name 'Rows' would publish 'RowsPerSecond', which Meter 'RowsPerSecond' already publishes"
    )


def test_malformed_address_fails_at_construction() -> None:
    with pytest.raises(ValueError, match='must be "host:port"'):
        MeterClient("localhost")


def test_importing_the_meter_stays_light() -> None:
    code = "import sys, agent.meter; print(sorted({'boto3', 'psutil', 'pynvml'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_name_first_used_as_a_counter_refuses_timings_in_the_job(
    client: MeterClient, listener: StatsdListener, statsd: StatsdCollector
) -> None:
    """The agent keeps a name's first type and would drop the other's lines without a word to the job."""
    rows = Meter("Rows", client=client)
    rows.add(2)
    refused = r"Meter 'Rows' was first used with add\(\); the agent drops its time\(\) lines: use another Meter"
    with pytest.warns(RuntimeWarning, match=refused), rows.time(clock=Sequence(1.0, 1.5)):
        pass
    rows.record_milliseconds(3.0)  # counted again, warned once
    Meter("Rows", tags={"model": "a"}, client=client).record_milliseconds(4.0)  # the same name: refused too
    deliver(client, listener)
    assert [(s.name, s.value) for s in statsd.collect() if s.name.startswith("Rows")] == [("Rows", 2.0)]
    assert client.errors == 3
