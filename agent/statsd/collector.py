"""Application metrics received over StatsD, turned into samples once per flush interval.

The listener thread hands each datagram to `receive`; the first `collect` in each wall-clock multiple of
`flush_interval` drains what arrived since the previous drain (its window) into samples, which the
aggregator folds into per-minute Values/Counts; the collects between drains return nothing, and
`collect_final` (the agent's last collection, at stop and reload) drains whatever is held, due or not:

- a counter `<name>` gives `<name>` (the window's total, Count, or Bytes when its name matches
  `byte_counters`) and `<name>PerSecond` (total / window seconds, Count/Second or Bytes/Second), so the
  minute's Sum of `<name>` is the counter's exact total and the Average of `<name>PerSecond` its mean rate;
- a timer `<name>` gives one Milliseconds sample per distinct value received, a histogram or distribution
  one unitless sample per distinct value, each with the number of observations it stands for as its count,
  so CloudWatch computes exact percentiles over them;
- a gauge `<name>` gives one unitless sample of its current value per window;
- a set `<name>` gives the number of its members first seen in the current wall-clock minute (Count), so
  the minute's Sum is the number of distinct members in the minute, as Etsy StatsD and Telegraf count
  them per flush.

A line sent with sample rate r stands for 1/r lines: a counter adds value / r, a timer or histogram value
counts 1/r observations, exactly (CloudWatch's Counts are doubles), so 10 lines at DogStatsD's @0.27027...
(10/37) give a SampleCount of 37. A counter, gauge or set that stops receiving keeps publishing (0, or the
gauge's last value) until it has been idle for `expire_after` seconds, checked at each drain; then it is
forgotten, and a later line starts it afresh.

Memory is bounded whatever clients send: at most `max_series` series (`MAX_SERIES`, what fits the
unit's MemoryHigh); a window's timer and histogram values are merged into group means past
`agent.distribution`'s limits (SampleCount, Sum, Minimum and Maximum stay exact), never dropped; set
members past `max_members` are dropped and counted (a set's distinct count cannot be merged).
A name is refused when it is a name the agent publishes for itself under any naming profile
(`agent.naming.RESERVED_NAMES`), or when one of the metric names it would publish is already published
by a series of another type or name (a counter `Coll` publishes `CollPerSecond`, so a gauge
`CollPerSecond` is refused): one metric name never gets two units.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from fnmatch import fnmatchcase

import structlog

from agent.catalogue import BYTES, BYTES_PER_SECOND, COUNT, COUNT_PER_SECOND, METRICS, MILLISECONDS, NONE
from agent.cloudwatch_rules import MAX_ABS_VALUE, dimension_value_problem, publishable
from agent.distribution import MAX_HELD_VALUES, MAX_SERIES_VALUES, Distribution, ValueBudget
from agent.logs import LogOnce
from agent.naming import RATE_SUFFIX, RESERVED_NAMES, published_names
from agent.samples import Dimensions, Sample
from agent.selfstats import COMPONENT
from agent.statsd.parser import (
    MEMO_KEY_CHARS,
    Kind,
    Line,
    LineError,
    Rejected,
    Tags,
    escaped,
    parse_line,
    parse_packet,
    split_lines,
)

log = structlog.get_logger()

DEFAULT_BYTE_COUNTERS = ("*Bytes*", "*bytes*")
# statsd.max_series cannot be set higher: 10,000 live series, each timer flooded with distinct values, stay
# well within the unit's MemoryHigh=192M (bench/statsd_memory.py; 100,000 reached 384 MB), and cost about
# $3,000 a month of custom metrics per host already.
MAX_SERIES = 10_000
DEFAULT_MAX_MEMBERS = 100_000  # set members held at once (twice that across a minute's turn)
LOGGED_REJECTIONS = 5  # malformed lines logged in full; the rest are only counted

# h and d are the same thing to the agent; a series keeps the family of its first line.
_FAMILY = {"c": "c", "g": "g", "ms": "ms", "h": "h", "d": "h", "s": "s"}
_VALUE_UNIT = {"g": NONE, "ms": MILLISECONDS, "h": NONE, "s": COUNT}
MINUTE = 60  # seconds: a set counts the distinct members of a wall-clock minute; no window straddles two


class _Series:
    __slots__ = (
        "counted", "dimensions", "family", "kind", "last_active", "lines", "members", "minute", "name", "total",
        "unit", "value", "values",
    )

    def __init__(self, name: str, kind: Kind, unit: str, dimensions: Dimensions, now: float) -> None:
        self.name = name
        self.kind = kind  # of the first line
        self.family = _FAMILY[kind]
        self.unit = unit
        self.dimensions = dimensions
        self.last_active = now  # end of the last window with lines
        self.lines = 0  # in the current window
        self.total = 0.0  # counters, in the current window
        self.value: float | None = None  # gauges: current value
        self.values: Distribution | None = None  # timers and histograms: the window's values
        # Sets hold each member's hash, never its text: a member can be a 64 KiB datagram's worth. Python's str
        # hash is 64-bit SipHash keyed per process, so clients cannot aim at collisions and chance ones are
        # negligible (about 3e-10 for 100,000 members).
        self.members: set[int] = set()  # sets: members received in the window
        self.counted: set[int] = set()  # sets: members already published in `minute`
        self.minute = 0  # sets: the wall-clock minute `counted` belongs to


class StatsdCollector:
    """Keeps at most `max_series` series; `receive` is called from the listener thread."""

    name = "statsd"

    def __init__(
        self,
        *,
        max_series: int = 1000,
        dimension_keys: tuple[str, ...] = (),
        max_dimensions: int = 29,
        byte_counters: tuple[str, ...] = DEFAULT_BYTE_COUNTERS,
        expire_after: float = 300.0,
        flush_interval: int | None = None,
        max_series_values: int = MAX_SERIES_VALUES,
        max_values: int = MAX_HELD_VALUES,
        max_members: int = DEFAULT_MAX_MEMBERS,
        reserved: frozenset[str] = RESERVED_NAMES,
        on_drop: Callable[[str, int], None] = lambda reason, count: None,
        on_merge: Callable[[int], None] = lambda merged: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`max_dimensions`: how many tag dimensions a series may carry, leaving room for the ones the
        agent adds (CloudWatch's 30 less InstanceId less the static dimensions). `max_series_values` and
        `max_values`: distinct timer/histogram values one series and all of them hold in a window before
        they are merged, counted by `on_merge(n)`. `on_drop(reason, n)` counts datapoints lost to
        `max_members` or to CloudWatch's range, as the aggregator's does. `wall_clock` tells sets which
        minute a drain belongs to, as the aggregator's buckets do. `flush_interval`: seconds, a divisor of a
        minute; `collect` drains at the first call in each wall-clock multiple of it, so a window never
        straddles two (None: at every call)."""
        self._max_series = max_series
        self._reserved = reserved
        self._priority = {key: index for index, key in enumerate(dimension_keys)}
        self._max_dimensions = max_dimensions
        self._byte_counters = byte_counters
        self._expire_after = expire_after
        self._max_members = max_members
        self._on_drop = on_drop
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, Dimensions], _Series] = {}
        # published metric name -> (family, StatsD name, live series publishing it)
        self._publishers: dict[str, tuple[str, str, int]] = {}
        self._budget = ValueBudget(
            lambda: (series.values for series in self._series.values() if series.values is not None),
            per_series=max_series_values, total=max_values, on_merge=on_merge,
        )
        # tags -> (their dimensions, how many of their dimension tags were dropped as malformed)
        self._dimensions_of: dict[Tags, tuple[Dimensions, int]] = {(): ((), 0)}
        # fields (everything after the value) -> name -> (series, its family, sample rate) of lines taken before
        self._routes: dict[str, dict[str, tuple[_Series, str, float]]] = {}
        self._route_count = 0
        self._flush_interval = flush_interval
        self._window_start = monotonic()
        self._window_slot = self._slot()
        self._pending_members = 0
        self._series_dropped = 0
        self._parse_errors = 0
        self._logged_rejections = 0
        self._warn = LogOnce(log)

    def receive(self, packet: bytes) -> None:
        """Parse one datagram and add its lines to the current window, in order."""
        try:
            texts = split_lines(packet.decode("ascii"))
        except UnicodeDecodeError:
            lines, rejected = parse_packet(packet)
            with self._lock:
                if rejected:
                    self._reject(rejected)
                for line in lines:
                    self._add(line)
            return
        with self._lock:
            routes = self._routes
            # The common line, inlined: its name and fields (type, rate, tags) were parsed before, and its
            # value is plain digits with at most one ".", which float() reads exactly as the parser would.
            # Anything else goes through the parser, line by line, so the order of lines is kept.
            for text in texts:
                name, _, rest = text.partition(":")
                value_text, _, fields = rest.partition("|")
                of_fields = routes.get(fields)
                route = of_fields.get(name) if of_fields is not None else None
                if route is None or not (value_text.isdigit() or value_text.replace(".", "", 1).isdigit()):
                    self._receive_line(text, name, fields)
                    continue
                value = float(value_text)
                if value > MAX_ABS_VALUE:
                    self._receive_line(text, name, fields)
                    continue
                series, family, sample_rate = route
                series.lines += 1
                if family == "c":
                    series.total += value / sample_rate
                elif family == "g":
                    series.value = value  # unsigned, so a new value, not a delta
                elif family == "s":
                    self._add_member(series, value_text)
                else:
                    self._add_value(series, value, sample_rate)

    def _receive_line(self, text: str, name: str, fields: str) -> None:
        """A line the inlined path in `receive` does not take; remembers its route if it has one."""
        if not text:
            return
        try:
            lines = parse_line(text)
        except LineError as error:
            self._reject([Rejected(text, str(error))])
            return
        for line in lines:
            series = self._add(line)
        # Its route may be known already: the line only came here for a value the inlined path does not read.
        if series is not None and len(fields) <= MEMO_KEY_CHARS and name not in self._routes.get(fields, ()):
            if self._route_count >= 4 * self._max_series:
                self._forget_routes()  # bounded however many tag sets clients invent
            self._routes.setdefault(fields, {})[name] = (series, series.family, line.sample_rate)
            self._route_count += 1

    def _forget_routes(self) -> None:
        self._routes.clear()
        self._route_count = 0

    def _add(self, line: Line) -> _Series | None:
        """Adds one parsed line to its series. Returns the series when later lines with the same name and
        fields may take the inlined path: not when the line was dropped, nor when a tag was (so that each
        such line is counted)."""
        name, kind, value, sample_rate, tags, delta, member = line
        known = self._dimensions_of.get(tags)
        dims, bad_tags = known if known is not None else self._dimensions(name, tags)
        self._parse_errors += bad_tags
        series = self._series.get((name, dims))
        if series is None:
            series = self._admit(name, kind, dims)
            if series is None:
                return None
        if kind != series.kind and _FAMILY[kind] != series.family:
            self._series_dropped += 1
            self._warn.warning("type", "statsd_type_conflict", metric=name, first=series.kind, got=kind)
            return None
        series.lines += 1
        if kind == "c":
            series.total += value / sample_rate
        elif kind == "g":
            current = series.value
            series.value = value + current if delta and current is not None else value
        elif kind == "s":
            self._add_member(series, member)
        else:
            self._add_value(series, value, sample_rate)
        return None if bad_tags else series

    def _reject(self, rejected: list[Rejected]) -> None:
        self._parse_errors += len(rejected)
        for text, reason in rejected[: LOGGED_REJECTIONS - self._logged_rejections]:
            self._logged_rejections += 1
            log.warning("statsd_line_rejected", line=escaped(text[:200]), reason=reason)

    def _dimensions(self, name: str, tags: Tags) -> tuple[Dimensions, int]:
        """The allowed tags of a line as dimensions, and how many of them were dropped because their value
        is not one CloudWatch takes; the first value of a key wins, and past `max_dimensions` the keys
        listed first in `dimension_keys` are kept. Other tags are not looked at: the agent ignores them."""
        chosen: dict[str, str] = {}
        bad = 0
        for key, value in tags:
            if key in self._priority and key not in chosen and value:
                problem = dimension_value_problem(value)
                if problem is None:
                    chosen[key] = value
                else:
                    bad += 1
                    self._warn.warning(("tag", key), "statsd_tag_dropped", metric=name, tag=key,
                                       value=escaped(value[:200]), reason=problem)
        if len(chosen) > self._max_dimensions:
            self._warn.warning(
                "dimensions", "statsd_dimensions_truncated", metric=name, kept=self._max_dimensions
            )
            kept = sorted(chosen, key=self._priority.__getitem__)[: self._max_dimensions]
            chosen = {key: chosen[key] for key in kept}
        dims = tuple(sorted(chosen.items()))
        if sum(len(key) + len(value) + 2 for key, value in tags) > MEMO_KEY_CHARS:
            return dims, bad
        if len(self._dimensions_of) >= 4 * self._max_series:
            self._dimensions_of.clear()  # a memo only; bounded however many tag sets clients invent
            self._dimensions_of[()] = ((), 0)
        self._dimensions_of[tags] = (dims, bad)
        return dims, bad

    def _admit(self, name: str, kind: Kind, dims: Dimensions) -> _Series | None:
        family = _FAMILY[kind]
        published = published_names(name, counter=family == "c")
        if any(metric in self._reserved for metric in published):
            self._series_dropped += 1
            self._warn.warning("reserved", "statsd_reserved_name", metric=name)
            return None
        clash = next((metric for metric in published if self._publishers.get(metric, (family, name))[:2]
                      != (family, name)), None)
        if clash is not None:
            self._series_dropped += 1
            self._warn.warning(("clash", name), "statsd_name_clash", metric=name, type=kind, publishes=clash,
                               published_by=self._publishers[clash][1])
            return None
        if len(self._series) >= self._max_series:
            self._series_dropped += 1
            self._warn.warning("cap", "statsd_series_limit", metric=name, limit=self._max_series)
            return None
        for metric in published:
            live = self._publishers.get(metric, (family, name, 0))[2]
            self._publishers[metric] = (family, name, live + 1)
        if family == "c":
            unit = BYTES if any(fnmatchcase(name, glob) for glob in self._byte_counters) else COUNT
        else:
            unit = _VALUE_UNIT[family]
        series = _Series(name, kind, unit, dims, self._window_start)
        self._series[(name, dims)] = series
        return series

    def _add_value(self, series: _Series, value: float, sample_rate: float) -> None:
        count = 1.0 if sample_rate == 1.0 else 1 / sample_rate
        if series.values is None:
            series.values = Distribution(value, count)
        else:
            self._budget.add(series.values, value, count)

    def _add_member(self, series: _Series, text: str) -> None:
        # A member counted earlier in the minute is held already: it costs no room (at most twice
        # `max_members` members are held), and is kept in case the minute turns before the next drain.
        member = hash(text)
        if member not in series.members and (member in series.counted or self._hold(series, 1)):
            series.members.add(member)

    def _hold(self, series: _Series, observations: int) -> bool:
        """Whether one more set member fits in `max_members`; if not, its observation is dropped and counted."""
        if self._pending_members >= self._max_members:
            self._on_drop("statsd_value_limit", observations)
            self._warn.warning("values", "statsd_value_limit", metric=series.name, limit=self._max_members)
            return False
        self._pending_members += 1
        return True

    def _slot(self) -> int:
        """Which wall-clock multiple of `flush_interval` it is now (0 without one)."""
        return 0 if self._flush_interval is None else int(self._wall_clock() // self._flush_interval)

    def collect(self) -> list[Sample]:
        """The window's samples when a flush is due, else none: what arrives is held until then."""
        with self._lock:
            if self._flush_interval is not None and self._slot() == self._window_slot:
                return []
            return self._drain_window()

    def collect_final(self) -> list[Sample]:
        """The window's samples now, due or not: the agent's last collection before a stop or a reload."""
        with self._lock:
            return self._drain_window()

    def _drain_window(self) -> list[Sample]:
        """Called with the lock held. The StatsD self-metrics go with the window they were counted in, so each
        dropped series or rejected line is counted once, at the drain after it (the last one included)."""
        self._window_slot = self._slot()
        now = self._monotonic()
        window = now - self._window_start
        self._window_start = now
        samples = self._drain(now, window)
        if len(self._series) < self._max_series:
            self._warn.reset("cap")
        samples.append(METRICS["StatsdSeriesDropped"].sample(self._series_dropped, Component=COMPONENT))
        samples.append(METRICS["StatsdParseErrors"].sample(self._parse_errors, Component=COMPONENT))
        self._series_dropped = self._parse_errors = 0
        return samples

    def _drain(self, now: float, window: float) -> list[Sample]:
        samples: list[Sample] = []
        expired = []
        minute = int(self._wall_clock() // MINUTE)
        held = 0  # set members kept for the rest of the minute
        for key, series in self._series.items():
            if series.lines:
                series.last_active = now
                series.lines = 0
            elif now - series.last_active >= self._expire_after:
                expired.append(key)
                continue
            if series.family == "c":
                samples += self._counter(series, window)
            elif series.family == "g":
                if series.value is None:
                    continue
                if publishable(series.value):
                    samples.append(Sample(series.name, series.value, series.unit, series.dimensions))
                else:
                    self._out_of_range(series, 1)
            elif series.family == "s":
                if series.minute != minute:
                    series.minute = minute
                    series.counted = set()
                fresh = series.members - series.counted
                series.counted |= fresh
                series.members = set()
                held += len(series.counted)
                samples.append(Sample(series.name, float(len(fresh)), series.unit, series.dimensions))
            elif series.values is not None:
                samples += [Sample(series.name, value, series.unit, series.dimensions, count)
                            for value, count in series.values.items()]
                series.values = None
        self._budget.release()
        self._pending_members = held
        if expired:
            self._forget_routes()  # they may lead to the expired series
        for key in expired:
            self._release_names(self._series.pop(key))
        return samples

    def _release_names(self, series: _Series) -> None:
        for metric in published_names(series.name, counter=series.family == "c"):
            family, name, live = self._publishers[metric]
            if live > 1:
                self._publishers[metric] = (family, name, live - 1)
            else:
                del self._publishers[metric]

    def _counter(self, series: _Series, window: float) -> list[Sample]:
        total, series.total = series.total, 0.0
        if not publishable(total):
            self._out_of_range(series, 2 if window > 0 else 1)
            return []
        samples = [Sample(series.name, total, series.unit, series.dimensions)]
        if window > 0:
            rate = total / window
            if publishable(rate):
                rate_unit = BYTES_PER_SECOND if series.unit == BYTES else COUNT_PER_SECOND
                samples.append(Sample(series.name + RATE_SUFFIX, rate, rate_unit, series.dimensions))
            else:
                self._out_of_range(series, 1)
        return samples

    def _out_of_range(self, series: _Series, datapoints: int) -> None:
        """Sums and gauge deltas can leave the range CloudWatch accepts even when every line was in it."""
        self._on_drop("out_of_range", datapoints)
        self._warn.warning("range", "statsd_value_out_of_range", metric=series.name)
