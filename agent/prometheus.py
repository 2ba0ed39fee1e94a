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
import functools
import gzip
import ipaddress
import math
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Container, Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

import structlog
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    _get_best_family,  # private, in every version pyproject allows (0.20 on): start_wsgi_server's own helpers
    _SilentHandler,
    choose_encoder,
    gzip_accepted,
)
from prometheus_client.metrics_core import Metric

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


_RATE_UNITS = frozenset({COUNT_PER_SECOND, BYTES_PER_SECOND})


def _statsd_rate(name: str, unit: str) -> bool:
    """A StatsD counter's `PerSecond` twin: not served, `rate()` does it."""
    return unit in _RATE_UNITS and name not in METRICS


def labels(sample: Sample) -> tuple[tuple[str, str], ...]:
    return tuple((snake_case(key), value) for key, value in sample.dimensions)


Key = tuple[str, tuple[tuple[str, str], ...]]  # (family name, labels): one served series


class _Place(NamedTuple):
    """Where the samples of one identity (name, unit, dimensions) go: worked out once per series, not once per
    sample, since a series' identity never changes (the naming regexes cost more than all the rest of an update)."""

    exposed: Exposition
    key: Key
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


# A _Series made by tuple.__new__ straight from C: the NamedTuple's own __new__ is a Python function, a fifth
# of what an update costs per sample (every host and GPU sample, every second).
_new_series: Callable[[tuple[_Place, float, float, float, float]], _Series] = functools.partial(
    tuple.__new__, _Series)


class _Served(NamedTuple):
    """The series of a family served at one cutoff, and the cutoffs that serve the same ones: those in
    (after, until]. A gauge is served while `updated >= cutoff`, so the set changes only when the cutoff passes
    the oldest served gauge (`until`) or falls back to the newest stale one (`after`: concurrent scrapes read
    the clock in any order)."""

    series: list[_Series]
    after: float
    until: float


class View(NamedTuple):
    """What one scrape reads: the tables of one update (never changed once published, so read without the lock)
    and the cutoff before which a gauge is stale."""

    series: dict[Key, _Series]
    families: dict[str, tuple[Key, ...]]  # each family's series, in the order first written; never empty
    versions: dict[str, int]  # the update (Snapshot generation) that last changed each family: never reused
    cutoff: float

    def exposed(self, family: str) -> Exposition:
        return self.series[self.families[family][0]].place.exposed

    def served(self, family: str) -> _Served:
        members = [self.series[key] for key in self.families[family]]
        if members[0].place.exposed.kind != GAUGE:  # counters and summaries are served until forgotten
            return _Served(members, -math.inf, math.inf)
        series, after, until = [], -math.inf, math.inf
        for entry in members:
            if entry.updated >= self.cutoff:
                series.append(entry)
                until = min(until, entry.updated)
            else:
                after = max(after, entry.updated)
        return _Served(series, after, until)


class Snapshot:
    """The latest reading of every series the agent collected, and running totals of its counters.

    A gauge not updated for `stale_after` seconds (a GPU that fell off the bus, an expired StatsD series)
    is no longer served; counters and summaries are, as Prometheus expects of them, until `forget_after`
    seconds without an update, when every kind is forgotten, so series that come and go (StatsD tags) do not
    pile up. Each family carries the number of the update that last changed it, so a scrape re-renders only
    the families that changed (`Pages`).
    """

    def __init__(self, *, stale_after: float, forget_after: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._stale_after = stale_after
        self._forget_after = max(forget_after, stale_after)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._series: dict[Key, _Series] = {}
        self._families: dict[str, tuple[Key, ...]] = {}
        self._versions: dict[str, int] = {}
        self._generation = 0
        # Sample identity -> its place (None: not exposed), and each set of dimensions as labels, shared by the
        # series that carry it; both forgotten with the series, at the same sweep.
        self._places: dict[tuple[str, str, tuple[tuple[str, str], ...]], _Place | None] = {}
        self._label_sets: dict[tuple[tuple[str, str], ...], tuple[tuple[tuple[str, str], ...], dict[str, str]]] = {}
        self._next_forget = monotonic() + self._forget_after

    def update(self, samples: Iterable[Sample]) -> None:
        with self._lock:
            # Read under the lock, as `view` reads its cutoff: a view taken before this update read an earlier
            # clock, so a gauge not stale here was served to it (what keeps a rewritten gauge's version sound).
            now = self._monotonic()
            fresh_since = now - self._stale_after
            generation = self._generation + 1
            series = dict(self._series)  # new tables, swapped in whole: a scrape never sees half a batch
            versions = dict(self._versions)
            grown: dict[str, list[Key]] = {}  # the families that gain series in this batch
            places = self._places
            for sample in samples:
                name, value, unit, dimensions, weight = sample
                if _statsd_rate(name, unit):  # half of StatsD's samples: no place to remember
                    continue
                identity = (name, unit, dimensions)
                try:
                    place = places[identity]
                except KeyError:
                    place = places[identity] = self._place(sample)
                if place is None:
                    continue
                exposed, key, _ = place
                family = key[0]
                known = series.get(key)
                value *= exposed.scale
                kind = exposed.kind
                if kind == GAUGE:
                    entry = _new_series((place, value, 0.0, 0.0, now))
                elif kind == COUNTER:
                    entry = _new_series((place, value + (known.value if known else 0.0), 0.0, 0.0, now))
                else:  # a summary; a sample stands for `count` observations (a sampled StatsD timer: 1/rate)
                    count, total = (known.count, known.total) if known else (0.0, 0.0)
                    entry = _new_series((place, 0.0, count + weight, total + value * weight, now))
                series[key] = entry
                if known is None:
                    keys = grown.get(family)
                    if keys is None:
                        keys = grown[family] = list(self._families.get(family, ()))
                    keys.append(key)
                    versions[family] = generation
                # Written with nothing new, a series serves what it did: an idle StatsD counter's 0, a GPU's 0 Xid
                # errors, a gauge that holds its value (clocks, memory total, storage), unless that gauge was stale
                # and comes back. About 27 of the 42 host and GPU families at 1 s collection on 8 fake H100s.
                elif (entry.value != known.value or entry.count != known.count or entry.total != known.total
                      or (kind == GAUGE and known.updated < fresh_since)):
                    versions[family] = generation
            families = self._families
            if grown:
                families = {**families, **{name: tuple(keys) for name, keys in grown.items()}}
            if now >= self._next_forget:  # a sweep at most every forget_after: updates stay O(batch)
                series, families = self._forget(series, families, versions, now - self._forget_after, generation)
                self._next_forget = now + self._forget_after
            self._series, self._families, self._versions, self._generation = series, families, versions, generation

    def _forget(self, series: dict[Key, _Series], families: dict[str, tuple[Key, ...]], versions: dict[str, int],
                cutoff: float, generation: int) -> tuple[dict[Key, _Series], dict[str, tuple[Key, ...]]]:
        """The tables without the series last written before `cutoff`; a family that lost some is changed."""
        series = {key: entry for key, entry in series.items() if entry.updated >= cutoff}
        kept: dict[str, tuple[Key, ...]] = {}
        for name, keys in families.items():
            left = tuple(key for key in keys if key in series)
            if left:
                kept[name] = left
                if len(left) < len(keys):
                    versions[name] = generation
            else:
                del versions[name]
        self._places = {identity: place for identity, place in self._places.items()
                        if place is not None and place.key in series}
        dimensions_kept = {dims for _, _, dims in self._places}
        self._label_sets = {dims: shared for dims, shared in self._label_sets.items() if dims in dimensions_kept}
        return series, kept

    def _place(self, sample: Sample) -> _Place | None:
        exposed = exposition(sample.name, sample.unit)
        if exposed is None:
            return None
        shared = self._label_sets.get(sample.dimensions)
        if shared is None:
            labelled = labels(sample)
            shared = self._label_sets[sample.dimensions] = (labelled, dict(labelled))
        return _Place(exposed, (exposed.name, shared[0]), shared[1])

    def view(self) -> View:
        with self._lock:  # the clock too: see `update`
            return View(self._series, self._families, self._versions, self._monotonic() - self._stale_after)

    def series(self) -> list[_Series]:
        view = self.view()
        return [entry for family in view.families for entry in view.served(family).series]


def _metric(exposed: Exposition, served: Iterable[_Series], names: Container[str] | None = None) -> Metric | None:
    """One family as prometheus_client takes it from a custom collector; with `names` (`?name[]=`), only the
    samples so named, as prometheus_client's restricted registry keeps them. None when no sample is left."""
    metric = Metric(exposed.name, exposed.help, exposed.kind)
    sample_names = exposed.sample_names
    if names is not None:
        sample_names = tuple(name if name in names else "" for name in sample_names)
    for entry in served:
        # add_sample, not add_metric: series of one family may carry different labels (StatsD tags)
        if exposed.kind == SUMMARY:
            if sample_names[0]:
                metric.add_sample(sample_names[0], entry.place.labelled, entry.count)
            if sample_names[1]:
                metric.add_sample(sample_names[1], entry.place.labelled, entry.total)
        elif sample_names[0]:
            metric.add_sample(sample_names[0], entry.place.labelled, entry.value)
    return metric if metric.samples else None


class SnapshotCollector:
    """prometheus_client's custom-collector protocol: families built from the snapshot at each scrape, every
    one of them (`Pages` renders only those that changed, and must give the same bytes)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        view = self._snapshot.view()
        for family in view.families:
            metric = _metric(view.exposed(family), view.served(family).series)
            if metric is not None:
                yield metric


class _Given(NamedTuple):
    """A collector of the families it is given: what an encoder is handed to render one family alone."""

    metrics: tuple[Metric, ...]

    def collect(self) -> tuple[Metric, ...]:
        return self.metrics


class _Rendered(NamedTuple):
    """One family rendered in one format, valid for its version while the cutoff is in (after, until]."""

    version: int
    after: float
    until: float
    text: bytes


class _Format(NamedTuple):
    """The rendered families of one format (one content type), as the last scrape of it left them."""

    trailer: bytes  # what the encoder writes after the last family (OpenMetrics' `# EOF`); nothing for text
    families: dict[str, _Rendered]


Encoder = Callable[[Any], bytes]  # prometheus_client's: a collector (anything with collect()) to the page
MAX_FORMATS = 4  # content types cached at once; the scraper names the versions, so they are bounded here


class Pages:
    """The `/metrics` page, rendered by prometheus_client's encoders one family at a time and cached per family
    and per format: a scrape encodes only the families that changed since the last one (at 1 s collection the
    host and GPU families; StatsD series change once per flush) and joins the bytes it kept for the others.

    A scrape reads one `View` of the snapshot and uses a kept family only if it was rendered from the same
    version of that family at a cutoff serving the same gauges, so it serves exactly what
    `generate_latest` on a registry holding `SnapshotCollector` would have served from that view. Scrapes run
    on the server's threads, concurrently: each renders into its own table and stores it whole (the last one
    stored wins: one of an older view costs the next scrape some encoding, never a wrong family).
    """

    def __init__(self, snapshot: Snapshot, choose: Callable[[str], tuple[Encoder, str]] = choose_encoder) -> None:
        self._snapshot = snapshot
        self._choose = choose  # prometheus_client's negotiation; tests count what its encoders are handed
        self._lock = threading.Lock()
        self._formats: dict[str, _Format] = {}

    def render(self, accept: str | None, names: Collection[str] | None = None) -> tuple[bytes, str]:
        """The page and its content type for a request's Accept header (prometheus_client's negotiation), with
        only the samples `names` lists when the request has `name[]` parameters."""
        encoder, content_type = self._choose(accept or "")
        view = self._snapshot.view()
        with self._lock:
            kept = self._formats.get(content_type)
        trailer = kept.trailer if kept is not None else encoder(_Given(()))
        cached = kept.families if kept is not None else {}
        rendered: dict[str, _Rendered] = {}
        parts = []
        for name in view.families:
            if names is not None:
                exposed = view.exposed(name)
                wanted = [sample_name in names for sample_name in exposed.sample_names]
                if not any(wanted):
                    continue
                if not all(wanted):  # part of a family (a summary's `_count` alone): rendered, not kept
                    parts.append(_encode(encoder, trailer, _metric(exposed, view.served(name).series, names)))
                    continue
            version = view.versions[name]
            entry = cached.get(name)
            if entry is None or entry.version != version or not entry.after < view.cutoff <= entry.until:
                served = view.served(name)
                text = _encode(encoder, trailer, _metric(view.exposed(name), served.series))
                entry = _Rendered(version, served.after, served.until, text)
            rendered[name] = entry
            parts.append(entry.text)
        parts.append(trailer)
        if names is None:
            self._store(content_type, _Format(trailer, rendered))
        return b"".join(parts), content_type

    def _store(self, content_type: str, rendered: _Format) -> None:
        with self._lock:
            self._formats.pop(content_type, None)  # stored last: the format scraped longest ago goes first
            if len(self._formats) >= MAX_FORMATS:
                del self._formats[next(iter(self._formats))]
            self._formats[content_type] = rendered


def _encode(encoder: Encoder, trailer: bytes, metric: Metric | None) -> bytes:
    """One family as the encoder writes it, without the trailer it writes after every page."""
    if metric is None:
        return b""
    return encoder(_Given((metric,))).removesuffix(trailer)


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


# prometheus_client gzips at gzip's default, level 9. A Prometheus server asks for gzip on every scrape, and the
# page of 8 GPUs and 1,000 StatsD series (190 KB of text) then cost 1.07 ms of CPU at level 9 against 0.21 ms at
# level 1, for 14.6 KB against 15.0 KB: repeated names and labels compress well at any level.
GZIP_LEVEL = 1


def wsgi_app(pages: Pages) -> Callable[[dict[str, Any], Callable[..., object]], list[bytes]]:
    """prometheus_client's `make_wsgi_app`, serving `pages` instead of encoding a registry: the same methods,
    favicon, `name[]` parameters, content negotiation, gzip and headers (prometheus_client/exposition.py), but
    gzip at GZIP_LEVEL."""

    def app(environ: dict[str, Any], start_response: Callable[..., object]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]] = []
        if method == "OPTIONS":
            status, headers, output = "200 OK", [("Allow", "OPTIONS,GET")], b""
        elif method != "GET":
            status, headers = "405 Method Not Allowed", [("Allow", "OPTIONS,GET")]
            output = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        elif environ["PATH_INFO"] == "/favicon.ico":  # an empty answer for browsers, as prometheus_client gives
            status, output = "200 OK", b""
        else:  # any other path is the page, as prometheus_client serves it
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
            output, content_type = pages.render(environ.get("HTTP_ACCEPT"), names)
            status, headers = "200 OK", [("Content-Type", content_type)]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
                output = gzip.compress(output, compresslevel=GZIP_LEVEL)
                headers.append(("Content-Encoding", "gzip"))
        start_response(status, headers)
        return [output]

    return app


class Endpoint:
    """The HTTP server prometheus_client runs (a thread per request, wsgiref), serving `Pages` on its own thread:
    text format and OpenMetrics."""

    def __init__(self, address: str, snapshot: Snapshot) -> None:
        host, port = split_host_port(address)
        self.address = address
        self.pages = Pages(snapshot)
        try:
            # As prometheus_client's start_wsgi_server: the address family the host needs, requests not logged.
            class Server(ThreadingWSGIServer):
                address_family, _ = _get_best_family(host, port)

            self._server = make_server(host, port, wsgi_app(self.pages), Server, handler_class=_SilentHandler)
        except OSError as error:
            reason = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be listened on: {error.strerror}"
            raise EndpointError(f"prometheus.address: {address} {reason}, got \"{address}\"") from error
        self._thread = threading.Thread(target=self._server.serve_forever, name="prometheus", daemon=True)
        self._thread.start()
        self.port = self._server.server_port
        log.info("prometheus_listening", address=address, port=self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
