"""The StatsD listener over real loopback UDP: exact results end to end, big packets, and robustness."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from agent.catalogue import METRICS
from agent.samples import Sample
from agent.statsd.collector import StatsdCollector
from agent.statsd.listener import MAX_DATAGRAM, StatsdListener
from tests.fakes.host import FakeClock

WAIT = 10.0  # seconds; only reached when a test is failing


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def statsd(clock: FakeClock) -> StatsdCollector:
    return StatsdCollector(monotonic=clock, dimension_keys=("model",), max_series=50)


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


def send_all(sender: socket.socket, listener: StatsdListener, packets: list[bytes]) -> None:
    """Send, then wait until the listener has handled every datagram, however the scheduler runs."""
    already = listener.packets
    for packet in packets:
        sender.sendto(packet, listener.address)
    assert listener.wait_for_packets(already + len(packets), WAIT)


def published(samples: list[Sample], name: str) -> list[tuple[float, str, tuple[tuple[str, str], ...]]]:
    return [(s.value, s.unit, s.dimensions) for s in samples if s.name == name]


def weights(samples: list[Sample], name: str) -> dict[float, float]:
    return {s.value: s.count for s in samples if s.name == name}


def test_every_type_end_to_end_with_exact_totals_rates_and_values(
    clock: FakeClock, statsd: StatsdCollector, listener: StatsdListener, sender: socket.socket
) -> None:
    counters = [b"SamplesProcessed:%d|c|#model:llama,host:x" % n for n in range(1, 201)]  # sum 20,100
    timers = [b"StepTime:%d|ms" % n for n in (100, 120, 80, 120)]
    send_all(sender, listener, [
        *counters,
        b"\n".join(timers),
        b"ReadBytes:1000|c|@0.5",
        b"QueueDepth:10|g\nQueueDepth:-3|g\nQueueDepth:+1|g",
        b"BatchTokens:4096|h\nBatchTokens:2048|d|@0.5",
    ])
    clock.advance(20)
    samples = statsd.collect()
    llama = (("model", "llama"),)
    assert published(samples, "SamplesProcessed") == [(20_100.0, "Count", llama)]
    assert published(samples, "SamplesProcessedPerSecond") == [(1005.0, "Count/Second", llama)]
    assert published(samples, "StepTime") == [  # in ascending order of value
        (80.0, "Milliseconds", ()), (100.0, "Milliseconds", ()), (120.0, "Milliseconds", ()),
    ]
    assert weights(samples, "StepTime") == {100.0: 1.0, 120.0: 2.0, 80.0: 1.0}
    assert published(samples, "ReadBytes") == [(2000.0, "Bytes", ())]
    assert published(samples, "ReadBytesPerSecond") == [(100.0, "Bytes/Second", ())]
    assert published(samples, "QueueDepth") == [(8.0, "None", ())]
    assert published(samples, "BatchTokens") == [(2048.0, "None", ()), (4096.0, "None", ())]
    assert weights(samples, "BatchTokens") == {4096.0: 1.0, 2048.0: 2.0}
    assert samples[-2:] == [
        METRICS["StatsdSeriesDropped"].sample(0, Component="agent"),
        METRICS["StatsdParseErrors"].sample(0, Component="agent"),
    ]


def test_largest_datagram_is_handled_whole(
    clock: FakeClock, statsd: StatsdCollector, listener: StatsdListener, sender: socket.socket
) -> None:
    line = b"Rows:1|c"
    count = 65_507 // (len(line) + 1)  # the largest IPv4 UDP payload, filled with lines
    packet = b"\n".join([line] * count)
    assert 65_000 < len(packet) <= 65_507 <= MAX_DATAGRAM
    send_all(sender, listener, [packet, packet])
    clock.advance(1)
    assert published(statsd.collect(), "Rows") == [(2.0 * count, "Count", ())]


def test_oversized_line_and_garbage_are_counted_not_fatal(
    clock: FakeClock, statsd: StatsdCollector, listener: StatsdListener, sender: socket.socket
) -> None:
    send_all(sender, listener, [b"A" * 60_000 + b":1|c", b"\x00\xff" * 1000, b"", b"Rows:3|c"])
    clock.advance(1)
    samples = statsd.collect()
    assert published(samples, "Rows") == [(3.0, "Count", ())]
    assert METRICS["StatsdParseErrors"].sample(2, Component="agent") in samples


def test_a_failing_callback_is_counted_and_the_listener_carries_on(sender: socket.socket) -> None:
    received: list[bytes] = []

    def on_packet(packet: bytes) -> None:
        if packet == b"boom":
            raise RuntimeError("collector bug")
        received.append(packet)

    errors: list[None] = []
    listening = StatsdListener(on_packet, address=("127.0.0.1", 0), on_error=lambda: errors.append(None))
    listening.start()
    try:
        with capture_logs() as logs:
            send_all(sender, listening, [b"boom", b"A:1|c", b"boom", b"B:1|c"])
        assert received == [b"A:1|c", b"B:1|c"]
        assert (listening.callback_errors, len(errors)) == (2, 2)
        assert [log["event"] for log in logs] == ["statsd_packet_failed"]
    finally:
        listening.close()


def test_close_stops_the_thread_and_frees_the_port(statsd: StatsdCollector) -> None:
    listening = StatsdListener(statsd.receive, address=("127.0.0.1", 0))
    listening.start()
    listening.close()
    assert not any(thread.name == "statsd-listener" and thread.is_alive() for thread in threading.enumerate())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(listening.address)
    listening.close()  # twice is harmless


def test_close_before_start(statsd: StatsdCollector) -> None:
    StatsdListener(statsd.receive, address=("127.0.0.1", 0)).close()


def test_a_taken_port_fails_at_construction(statsd: StatsdCollector) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):
            StatsdListener(statsd.receive, address=taken.getsockname())


def test_receive_buffer_is_enlarged() -> None:
    listening = StatsdListener(lambda packet: None, address=("127.0.0.1", 0), receive_buffer=4 * 1024 * 1024)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as default:
            assert listening.receive_buffer > default.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        listening.close()


def test_ipv6_loopback(statsd: StatsdCollector, clock: FakeClock) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        listening = StatsdListener(statsd.receive, address=("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured on this host")
    listening.start()
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            send_all(sender, listening, [b"Rows:5|c"])
        clock.advance(1)
        assert published(statsd.collect(), "Rows") == [(5.0, "Count", ())]
    finally:
        listening.close()


class FailingOnceSocket:
    """A socket whose first recv fails (ENOBUFS), then delivers queued datagrams until shut down."""

    def __init__(self, family: int, kind: int) -> None:
        self.datagrams: queue.Queue[bytes | OSError] = queue.Queue()
        self.datagrams.put(OSError(105, "No buffer space available"))

    def setsockopt(self, *args: object) -> None:
        pass

    def getsockopt(self, *args: object) -> int:
        return 212_992

    def bind(self, address: tuple[str, int]) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8125)

    def recv(self, size: int) -> bytes:
        item = self.datagrams.get()
        if isinstance(item, OSError):
            raise item
        return item

    def shutdown(self, how: int) -> None:
        self.datagrams.put(b"")

    def close(self) -> None:
        pass


def test_a_failing_recv_is_logged_once_and_the_listener_carries_on() -> None:
    sockets: list[FailingOnceSocket] = []

    def factory(family: int, kind: int) -> FailingOnceSocket:
        sockets.append(FailingOnceSocket(family, kind))
        return sockets[-1]

    received: list[bytes] = []
    with capture_logs() as logs:
        listening = StatsdListener(received.append, socket_factory=factory, error_pause=0)
        listening.start()
        sockets[0].datagrams.put(OSError(105, "No buffer space available"))
        sockets[0].datagrams.put(b"A:1|c")
        assert listening.wait_for_packets(1, WAIT)
        listening.close()
    assert received == [b"A:1|c"]
    warnings = [log for log in logs if log["log_level"] == "warning"]  # once, though recv failed twice
    assert [(log["event"], log["error"]) for log in warnings] == [
        ("statsd_receive_failed", "[Errno 105] No buffer space available")
    ]


def test_a_recv_that_fails_again_after_a_datagram_got_through_is_logged_again() -> None:
    sockets: list[FailingOnceSocket] = []

    def factory(family: int, kind: int) -> FailingOnceSocket:
        sockets.append(FailingOnceSocket(family, kind))
        return sockets[-1]

    with capture_logs() as logs:
        listening = StatsdListener(lambda packet: None, socket_factory=factory, error_pause=0)
        listening.start()
        for item in (b"A:1|c", OSError(105, "No buffer space available"), b"A:1|c"):
            sockets[0].datagrams.put(item)
        assert listening.wait_for_packets(2, WAIT)
        listening.close()
    assert [log["event"] for log in logs if log["log_level"] == "warning"] == ["statsd_receive_failed"] * 2

