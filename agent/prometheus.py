"""The agent's readings on a Prometheus `/metrics` endpoint, from the same samples CloudWatch gets.

Nothing here collects: the agent hands every batch of samples it aggregates to `Snapshot.update`, and
`prometheus_client` asks `SnapshotCollector` for them at scrape time, so a scrape costs no NVML call and never
waits for a collection. Each update swaps in a new table under a lock, so a scrape sees every series of a
batch or none of it.

Names come from the metric catalogue (`prometheus_name`), following the Prometheus naming conventions:
`infrawatch_` prefix, snake_case, base units (seconds, bytes, joules, hertz, celsius), percentages as
`_percent` (0–100, the numbers CloudWatch holds), per-interval event counts as cumulative `_total` counters,
dimensions as snake_case labels. Host identity (InstanceId, Host) is not a label: Prometheus's `instance`
is. StatsD series follow the StatsD rule of `agent.catalogue`: a counter's total is `infrawatch_job_<name>_total`
(its `PerSecond` twin is left out: `rate()` does that), a timer is a summary in seconds, a gauge, histogram or
distribution is a gauge of its latest value.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import structlog
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from agent.catalogue import (
    BYTES,
    BYTES_PER_SECOND,
    COUNT,
    COUNT_PER_SECOND,
    INTERVAL_COUNTS,
    METRICS,
    MILLISECONDS,
    PERCENT,
    PHYSICAL_UNITS,
)
from agent.samples import Sample
from agent.statsd.address import split_host_port

log = structlog.get_logger()

PREFIX = "infrawatch_"
JOB_PREFIX = PREFIX + "job_"  # StatsD series, named by the jobs: kept apart from the catalogue's names
# Not exposed: Prometheus's own `up` says whether the agent answers, which is what Heartbeat tells CloudWatch.
NOT_EXPOSED = frozenset({"Heartbeat"})
# Names the conventions reserve: `_count` belongs to histograms and summaries (promtool says so).
RENAMED = {"GPUCount": "gpus"}
# Physical units as Prometheus's base units: (name suffix, factor).
BASE_UNITS = {"celsius": ("celsius", 1.0), "watts": ("watts", 1.0), "joules": ("joules", 1.0),
              "megahertz": ("hertz", 1e6)}
# Acronyms spelled as one word before the camelCase split, longest first: "CPUIOWait" → "cpu_io_wait".
ACRONYMS = ("NVLink", "PCIe", "UUID", "GPU", "CPU", "ECC", "RSS", "TCP", "Xid", "IO", "SM")
CAP_NET_BIND_SERVICE = 10  # capability bit in /proc/self/status CapEff (linux/capability.h)
PRIVILEGED_PORTS = 1024


def snake_case(name: str) -> str:
    for acronym in ACRONYMS:
        name = name.replace(acronym, acronym.capitalize())
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()


GAUGE, COUNTER, SUMMARY = "gauge", "counter", "summary"


class Exposition(NamedTuple):
    """How one published metric appears to Prometheus; `name` has no `_total` (prometheus_client adds it)."""

    name: str
    kind: str
    scale: float
    help: str

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The names its samples are served under: a counter's `_total`, a summary's `_count` and `_sum`."""
        if self.kind == SUMMARY:
            return (self.name + "_count", self.name + "_sum")
        return (self.name + ("_total" if self.kind == COUNTER else ""),)


def _with_suffix(base: str, suffix: str) -> str:
    return base if base.endswith("_" + suffix) else f"{base}_{suffix}"


def exposition(name: str, unit: str) -> Exposition | None:
    """Where the series `name` (in CloudWatch's `unit`) goes on the endpoint, or None when it is left out."""
    if name in NOT_EXPOSED or _statsd_rate(name, unit):
        return None
    metric = METRICS.get(name)
    if metric is None:  # StatsD: the job's name, kind told by the unit (agent.catalogue's StatsD rule)
        base = JOB_PREFIX + snake_case(name)
        if unit in (COUNT, BYTES):
            return Exposition(_with_suffix(base, "bytes") if unit == BYTES else base, COUNTER, 1.0,
                              f"StatsD counter {name} from jobs on this host.")
        if unit == MILLISECONDS:
            return Exposition(_with_suffix(base, "seconds"), SUMMARY, 0.001, f"StatsD timer {name}, in seconds.")
        return Exposition(base, GAUGE, 1.0, f"StatsD gauge {name}: its latest value.")
    base = PREFIX + RENAMED.get(name, snake_case(name))
    kind = COUNTER if name in INTERVAL_COUNTS else GAUGE
    scale = 1.0
    if name in PHYSICAL_UNITS:
        suffix, scale = BASE_UNITS[PHYSICAL_UNITS[name]]
        base = _with_suffix(base, suffix)
    elif unit == PERCENT:
        base = _with_suffix(base, "percent")
    elif unit == BYTES:
        base = _with_suffix(base, "bytes")
    elif unit == MILLISECONDS:
        base, scale = _with_suffix(base, "seconds"), 0.001
    return Exposition(base, kind, scale, metric.description)


def _statsd_rate(name: str, unit: str) -> bool:
    """A StatsD counter's `PerSecond` twin: not served, `rate()` does it."""
    return unit in (COUNT_PER_SECOND, BYTES_PER_SECOND) and name not in METRICS


def labels(sample: Sample) -> tuple[tuple[str, str], ...]:
    return tuple((snake_case(key), value) for key, value in sample.dimensions)


class _Place(NamedTuple):
    """Where the samples of one identity (name, unit, dimensions) go: worked out once per series, not once per
    sample, since a series' identity never changes (the naming regexes cost more than all the rest of an update)."""

    exposed: Exposition
    key: tuple[str, tuple[tuple[str, str], ...]]  # (family name, labels): one served series
    labelled: dict[str, str]  # the labels as prometheus_client takes them; shared, never changed


class _Series(NamedTuple):
    """One served series at one moment; immutable, so a table swapped in whole stays as it was."""

    place: _Place
    value: float  # gauges: latest; counters: total since start
    count: float  # type: ignore[assignment]  # summaries; shadows tuple.count, which nothing calls here
    total: float  # summaries: sum
    updated: float

    @property
    def exposed(self) -> Exposition:
        return self.place.exposed

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        return self.place.key[1]


class Snapshot:
    """The latest reading of every series the agent collected, and running totals of its counters.

    A gauge not updated for `stale_after` seconds (a GPU that fell off the bus, an expired StatsD series)
    is no longer served; counters and summaries are, as Prometheus expects of them, until `forget_after`
    seconds without an update, when every kind is forgotten, so series that come and go (StatsD tags) do not
    pile up.
    """

    def __init__(self, *, stale_after: float, forget_after: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._stale_after = stale_after
        self._forget_after = max(forget_after, stale_after)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = {}
        # Sample identity -> its place (None: not exposed), and each set of dimensions as labels, shared by the
        # series that carry it; both forgotten with the series, at the same sweep.
        self._places: dict[tuple[str, str, tuple[tuple[str, str], ...]], _Place | None] = {}
        self._label_sets: dict[tuple[tuple[str, str], ...], tuple[tuple[tuple[str, str], ...], dict[str, str]]] = {}
        self._next_forget = monotonic() + self._forget_after

    def update(self, samples: Iterable[Sample]) -> None:
        now = self._monotonic()
        with self._lock:
            series = dict(self._series)  # a new table, swapped in whole: a scrape never sees half a batch
            places = self._places
            for sample in samples:
                if _statsd_rate(sample.name, sample.unit):  # half of StatsD's samples: no place to remember
                    continue
                identity = (sample.name, sample.unit, sample.dimensions)
                try:
                    place = places[identity]
                except KeyError:
                    place = places[identity] = self._place(sample)
                if place is None:
                    continue
                exposed = place.exposed
                known = series.get(place.key)
                value = sample.value * exposed.scale
                if exposed.kind == GAUGE:
                    entry = _Series(place, value, 0.0, 0.0, now)
                elif exposed.kind == COUNTER:
                    entry = _Series(place, value + (known.value if known else 0.0), 0.0, 0.0, now)
                else:  # a summary; a sample stands for `count` observations (a sampled StatsD timer: 1/rate)
                    weight = sample.count
                    count, total = (known.count, known.total) if known else (0.0, 0.0)
                    entry = _Series(place, 0.0, count + weight, total + value * weight, now)
                series[place.key] = entry
            if now >= self._next_forget:  # a sweep at most every forget_after: updates stay O(batch)
                cutoff = now - self._forget_after
                series = {key: entry for key, entry in series.items() if entry.updated >= cutoff}
                self._places = {identity: place for identity, place in places.items()
                                if place is not None and place.key in series}
                kept = {dims for _, _, dims in self._places}
                self._label_sets = {dims: shared for dims, shared in self._label_sets.items() if dims in kept}
                self._next_forget = now + self._forget_after
            self._series = series

    def _place(self, sample: Sample) -> _Place | None:
        exposed = exposition(sample.name, sample.unit)
        if exposed is None:
            return None
        shared = self._label_sets.get(sample.dimensions)
        if shared is None:
            labelled = labels(sample)
            shared = self._label_sets[sample.dimensions] = (labelled, dict(labelled))
        return _Place(exposed, (exposed.name, shared[0]), shared[1])

    def series(self) -> list[_Series]:
        with self._lock:
            table = self._series
        cutoff = self._monotonic() - self._stale_after
        return [entry for entry in table.values() if entry.place.exposed.kind != GAUGE or entry.updated >= cutoff]


class SnapshotCollector:
    """prometheus_client's custom-collector protocol: families built from the snapshot at each scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        families: dict[str, tuple[Metric, tuple[str, ...]]] = {}
        for entry in self._snapshot.series():  # grouped by family below; Prometheus needs no order
            place = entry.place
            exposed = place.exposed
            family = families.get(exposed.name)
            if family is None:
                family = families[exposed.name] = (Metric(exposed.name, exposed.help, exposed.kind),
                                                   exposed.sample_names)
            metric, names = family
            # add_sample, not add_metric: series of one family may carry different labels (StatsD tags)
            if exposed.kind == SUMMARY:
                metric.add_sample(names[0], place.labelled, entry.count)
                metric.add_sample(names[1], place.labelled, entry.total)
            else:
                metric.add_sample(names[0], place.labelled, entry.value)
        for metric, _ in families.values():
            yield metric


class EndpointError(Exception):
    """The endpoint cannot listen where the config says; the message names `prometheus.address`."""


def _has_bind_capability() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except OSError:
        pass
    return False


def address_problem(address: str, allow_remote: bool, can_bind_privileged: Callable[[], bool] = _has_bind_capability
                    ) -> str | None:
    """Why the endpoint may not listen on `address`, or None. Loopback unless `allow_remote` says otherwise."""
    try:
        host, port = split_host_port(address)
    except ValueError as error:
        return str(error)
    if host != "localhost":
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return "host must be an IP address or localhost"
        if not ip.is_loopback and not allow_remote:
            return "listens beyond loopback: set prometheus.allow_remote = true to allow it"
    if port < PRIVILEGED_PORTS and not can_bind_privileged():
        return f"port {port} is privileged: the agent lacks CAP_NET_BIND_SERVICE; use a port of 1024 or more"
    return None


class Endpoint:
    """The HTTP server prometheus_client runs on its own thread, serving text format and OpenMetrics."""

    def __init__(self, address: str, snapshot: Snapshot) -> None:
        host, port = split_host_port(address)
        self.address = address
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as error:
            reason = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be listened on: {error.strerror}"
            raise EndpointError(f"prometheus.address: {address} {reason}, got \"{address}\"") from error
        self.port = self._server.server_port
        log.info("prometheus_listening", address=address, port=self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
