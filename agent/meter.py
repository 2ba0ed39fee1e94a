"""Report what a Python job processes to the infrawatch agent on its host, over StatsD.

    from agent.meter import Meter

    samples = Meter("SamplesProcessed", tags={"Model": "llama-8b"})
    step_time = Meter("StepTime")
    for batch in loader:
        with step_time.time():
            train_step(batch)
        samples.add(len(batch))

`add` sums in memory; a background thread sends the sums (and timings) every second as multi-line UDP
datagrams of at most 1,432 bytes, fire-and-forget, and once more at exit. `add` and `time` never block
on the network and never raise. A forked child (a DataLoader worker) starts with nothing pending, so
nothing is sent twice. The agent's address comes from INFRAWATCH_STATSD_ADDRESS ("host:port"), by
default 127.0.0.1:8125.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from agent.naming import RESERVED_NAMES, published_names
from agent.statsd.address import split_host_port
from agent.statsd.parser import NAME, TAG_KEY, TAG_VALUE

ADDRESS_VARIABLE = "INFRAWATCH_STATSD_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:8125"
MAX_PACKET = 1432  # DogStatsD's default: fits a 1,500-byte frame with room for IPv6 and tunnel headers
FLUSH_INTERVAL = 1.0  # seconds

CounterKey = tuple[str, str]  # (name, "|c" plus the tag field), the line without its value


class MeterClient:
    """Batches and sends the lines of every Meter that uses it; one per process is enough."""

    def __init__(
        self,
        address: str | None = None,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        max_packet: int = MAX_PACKET,
        socket_factory: Callable[[int, int], Any] = socket.socket,
        getaddrinfo: Callable[..., Any] = socket.getaddrinfo,
    ) -> None:
        """`address` defaults to $INFRAWATCH_STATSD_ADDRESS, else 127.0.0.1:8125; ValueError if malformed."""
        address = address or os.environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS
        self._host, self._port = split_host_port(address)
        self._flush_interval = flush_interval
        self._max_packet = max_packet
        self._socket_factory = socket_factory
        self._getaddrinfo = getaddrinfo
        self._socket: Any = None
        self._target: Any = None
        self.sent_lines = 0
        self.sent_packets = 0
        self.dropped_lines = 0  # could not be sent: no route, name resolution failed, send buffer full
        self.errors = 0  # calls that failed, such as add("three"); counted instead of raised
        self._publishers: dict[str, str] = {}  # metric name published -> the Meter name that publishes it
        self._kinds: dict[str, str] = {}  # Meter name -> "c" (add) or "ms" (time), whichever came first
        self._refused: set[str] = set()  # Meter names whose other kind was refused (and warned about)
        self._claim_lock = threading.Lock()
        self._reset()
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(reference, "_reset"))
        atexit.register(_call, reference, "close")

    def _reset(self) -> None:
        """Fresh state; also what a forked child starts from, since the parent sends what was pending."""
        self._lock = threading.Lock()
        self._counts: dict[CounterKey, float] = {}
        self._lines: list[str] = []
        self._lines_size = 0
        self._flusher: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._closed = threading.Event()

    def claim(self, name: str) -> None:
        """Reserve the metric names a Meter `name` publishes; ValueError if another Meter of this process
        publishes one of them (`Coll` publishes `CollPerSecond`): the agent would drop the second."""
        with self._claim_lock:
            published = published_names(name, counter=True)
            for metric in published:
                owner = self._publishers.get(metric, name)
                if owner != name:
                    raise ValueError(f"metric name {name!r} would publish {metric!r}, "
                                     f"which Meter {owner!r} already publishes")
            self._publishers.update(dict.fromkeys(published, name))

    def use(self, name: str, kind: str) -> bool:
        """Whether a Meter `name` may send lines of `kind` ("c" or "ms"): the first use decides, since the
        agent keeps a name's first type and drops the other's lines. A refused use is counted in `errors`
        and warned about once per name, in the job, instead of vanishing in the agent."""
        with self._claim_lock:
            first = self._kinds.setdefault(name, kind)
            if first == kind:
                return True
            self.errors += 1
            warned = name in self._refused
            self._refused.add(name)
        if not warned:
            used, refused = ("add", "time") if first == "c" else ("time", "add")
            warnings.warn(f"Meter {name!r} was first used with {used}(); the agent drops its {refused}() lines: "
                          f"use another Meter (another name) for them", RuntimeWarning, stacklevel=4)
        return False

    def add(self, key: CounterKey, amount: float) -> None:
        try:
            with self._lock:
                self._counts[key] = self._counts.get(key, 0) + amount
            if self._flusher is None:
                self._start_flusher()
        except Exception:  # metering must never break the job
            self.errors += 1

    def record(self, line: str) -> None:
        """Queue one complete line; sends at once when the queue would overflow one datagram."""
        full: list[str] = []
        with self._lock:
            if self._lines_size + len(line) + 1 > self._max_packet:
                full, self._lines, self._lines_size = self._lines, [], 0
            self._lines.append(line)
            self._lines_size += len(line) + 1
        if full:
            self._send(full)
        if self._flusher is None:
            self._start_flusher()

    def flush(self) -> None:
        """Send everything pending now."""
        with self._lock:
            counts, self._counts = self._counts, {}
            lines, self._lines, self._lines_size = self._lines, [], 0
        for (name, suffix), total in counts.items():
            try:
                if not math.isfinite(total):
                    raise ValueError(total)
                lines.append(f"{name}:{_number(total)}{suffix}")
            except (TypeError, ValueError):  # add(nan), or a sum of something that is not a number
                self.errors += 1
        if lines:
            self._send(lines)

    def close(self) -> None:
        """Send what is pending and stop the background thread; later lines are dropped."""
        if self._closed.is_set():
            return
        self._closed.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(self._flush_interval + 1)
        self.flush()
        if self._socket is not None:
            self._socket.close()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None or self._closed.is_set():
                return
            self._flusher = threading.Thread(target=self._flush_periodically, name="meter-flush", daemon=True)
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._flush_interval):
            try:
                self.flush()
            except Exception:  # the thread must outlive any one bad flush, or metering stops for good
                self.errors += 1

    def _send(self, lines: list[str]) -> None:
        with self._send_lock:
            for packet, count in _packets(lines, self._max_packet):
                try:
                    if self._socket is None:
                        self._connect()
                    self._socket.sendto(packet, self._target)
                    self.sent_lines += count
                    self.sent_packets += 1
                except OSError:
                    self.dropped_lines += count

    def _connect(self) -> None:
        family, kind, _, _, target = self._getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)[0]
        sock = self._socket_factory(family, kind)
        sock.setblocking(False)
        self._socket, self._target = sock, target


def _number(total: float) -> str:
    """Integers exactly; anything else (numpy scalars, fractions) as the shortest exact float."""
    return str(total) if isinstance(total, int) else repr(float(total))


def _packets(lines: list[str], max_packet: int) -> list[tuple[bytes, int]]:
    """(datagram, lines in it): newline-joined lines, each datagram at most max_packet bytes unless one
    line alone is longer."""
    packets: list[tuple[bytes, int]] = []
    batch: list[str] = []
    size = 0
    for line in lines:
        if batch and size + 1 + len(line) > max_packet:
            packets.append(("\n".join(batch).encode("ascii"), len(batch)))
            batch, size = [], 0
        size += len(line) + (1 if batch else 0)
        batch.append(line)
    if batch:
        packets.append(("\n".join(batch).encode("ascii"), len(batch)))
    return packets


def _call(reference: weakref.ref[MeterClient], method: str) -> None:
    client = reference()
    if client is not None:
        getattr(client, method)()


_default_client: MeterClient | None = None
_default_lock = threading.Lock()


def default_client() -> MeterClient:
    """The process's shared client, created on first use."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = MeterClient()
        return _default_client


class Meter:
    """A named application metric. `add` counts (the agent publishes the total and the per-second
    rate); `time` measures a block in milliseconds (the agent publishes percentiles)."""

    def __init__(
        self, name: str, *, tags: Mapping[str, str] | None = None, client: MeterClient | None = None
    ) -> None:
        """ValueError if the agent would refuse the name or a tag; nothing is sent yet."""
        if not NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must be 1..246 of A-Z a-z 0-9 _ . - /")
        # `add` publishes the rate too, so the name and its rate must both be free.
        for metric in published_names(name, counter=True):
            if metric in RESERVED_NAMES:
                shown = "" if metric == name else f" (its rate {metric!r})"
                raise ValueError(f"metric name {name!r}{shown} is one of the agent's own metrics")
        for key, value in (tags or {}).items():
            if not TAG_KEY.fullmatch(key) or not value or not TAG_VALUE.fullmatch(value):
                raise ValueError(
                    f"tag {key}:{value} needs a key of A-Z a-z 0-9 _ . - / and a printable ASCII value"
                )
        self.name = name
        tag_field = "|#" + ",".join(f"{key}:{value}" for key, value in tags.items()) if tags else ""
        self._counter: CounterKey = (name, "|c" + tag_field)
        self._timer_suffix = "|ms" + tag_field
        self._client = client if client is not None else default_client()
        self._client.claim(name)
        self._kind: str | None = None  # "c" or "ms" once the client allowed it

    def add(self, amount: float = 1) -> None:
        """Count `amount` (samples, tokens, bytes...). Never blocks, never raises."""
        if self._kind != "c" and not self._use("c"):
            return
        self._client.add(self._counter, amount)

    def time(self, clock: Callable[[], float] = time.perf_counter) -> Timing:
        """`with meter.time(): ...` records how long the block took, also when it raises."""
        return Timing(self, clock)

    def record_milliseconds(self, milliseconds: float) -> None:
        """Record one duration measured elsewhere. Never blocks, never raises."""
        if self._kind != "ms" and not self._use("ms"):
            return
        try:
            if math.isfinite(milliseconds):
                self._client.record(f"{self.name}:{milliseconds:.3f}{self._timer_suffix}")
            else:
                self._client.errors += 1
        except Exception:  # metering must never break the job
            self._client.errors += 1


    def _use(self, kind: str) -> bool:
        allowed = self._client.use(self.name, kind)
        if allowed:
            self._kind = kind
        return allowed


class Timing:
    def __init__(self, meter: Meter, clock: Callable[[], float]) -> None:
        self._meter = meter
        self._clock = clock
        self._start = 0.0

    def __enter__(self) -> Timing:
        self._start = self._clock()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._meter.record_milliseconds((self._clock() - self._start) * 1000)
