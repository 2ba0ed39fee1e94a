"""Application metrics received over StatsD, turned into samples on every collect.

The listener thread hands each datagram to `receive`; `collect` drains what arrived since the previous
collect (its window) into samples, which the aggregator folds into per-minute Values/Counts:

- a counter `<name>` gives `<name>` (the window's total, Count, or Bytes when its name matches
  `byte_counters`) and `<name>PerSecond` (total / window seconds, Count/Second or Bytes/Second), so the
  minute's Sum of `<name>` is the counter's exact total and the Average of `<name>PerSecond` its mean rate;
- a timer `<name>` gives one Milliseconds sample per value received, a histogram or distribution one
  unitless sample per value, so CloudWatch computes exact percentiles over them;
- a gauge `<name>` gives one unitless sample of its current value per collect.

A line sent with sample rate r stands for 1/r lines: a counter adds value / r; a timer or histogram
value is repeated round(1/r) times (at most 100), exact for rates such as 0.5, 0.1 or 0.01 and rounded
for the others. A counter or gauge that stops receiving keeps publishing (0, or its last value) until it
has been idle for `expire_after` seconds; then it is forgotten, and a later line starts it afresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from fnmatch import fnmatchcase

import structlog

from agent.catalogue import BYTES, BYTES_PER_SECOND, COUNT, COUNT_PER_SECOND, METRICS, MILLISECONDS, NONE
from agent.cloudwatch_rules import MAX_ABS_VALUE, publishable
from agent.logs import LogOnce
from agent.samples import Dimensions, Sample
from agent.selfstats import COMPONENT
from agent.statsd.parser import Kind, Line, LineError, Rejected, Tags, parse_line, parse_packet

log = structlog.get_logger()

RATE_SUFFIX = "PerSecond"
DEFAULT_BYTE_COUNTERS = ("*Bytes*", "*bytes*")
MAX_REPEATS = 100  # a timer value at sample rate 0.001 counts 100 times, not 1,000 (bounded memory)
DEFAULT_MAX_VALUES = 200_000  # timer/histogram values held per window, repeats included
LOGGED_REJECTIONS = 5  # malformed lines logged in full; the rest are only counted

# h and d are the same thing to the agent; a series keeps the family of its first line.
_FAMILY = {"c": "c", "g": "g", "ms": "ms", "h": "h", "d": "h"}
_VALUE_UNIT = {"g": NONE, "ms": MILLISECONDS, "h": NONE}


class _Series:
    __slots__ = (
        "dimensions", "family", "kind", "last_active", "lines", "name", "total", "unit", "value", "values"
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
        self.values: dict[float, int] = {}  # timers and histograms: value -> observations in the window


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
        max_values: int = DEFAULT_MAX_VALUES,
        on_drop: Callable[[str, int], None] = lambda reason, count: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`max_dimensions`: how many tag dimensions a series may carry, leaving room for the ones the
        agent adds (CloudWatch's 30 less InstanceId less the static dimensions). `on_drop(reason, n)`
        counts datapoints lost to `max_values` or to CloudWatch's range, as the aggregator's does."""
        self._max_series = max_series
        self._priority = {key: index for index, key in enumerate(dimension_keys)}
        self._max_dimensions = max_dimensions
        self._byte_counters = byte_counters
        self._expire_after = expire_after
        self._max_values = max_values
        self._on_drop = on_drop
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._series: dict[tuple[str, Dimensions], _Series] = {}
        self._dimensions_of: dict[Tags, Dimensions] = {(): ()}
        # fields (everything after the value) -> name -> (series, its family, sample rate) of lines taken before
        self._routes: dict[str, dict[str, tuple[_Series, str, float]]] = {}
        self._route_count = 0
        self._window_start = monotonic()
        self._pending_values = 0
        self._series_dropped = 0
        self._parse_errors = 0
        self._logged_rejections = 0
        self._warn = LogOnce(log)

    def receive(self, packet: bytes) -> None:
        """Parse one datagram and add its lines to the current window, in order."""
        try:
            texts = packet.decode("ascii").split("\n")
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
                else:
                    self._add_value(series, value, sample_rate)

    def _receive_line(self, text: str, name: str, fields: str) -> None:
        """A line the inlined path in `receive` does not take; remembers its route if it has one."""
        if not text:
            return
        try:
            line = parse_line(text)
        except LineError as error:
            self._reject([Rejected(text, str(error))])
            return
        series = self._add(line)
        # Its route may be known already: the line only came here for a value the inlined path does not read.
        if series is not None and name not in self._routes.get(fields, ()):
            if self._route_count >= 4 * self._max_series:
                self._forget_routes()  # bounded however many tag sets clients invent
            self._routes.setdefault(fields, {})[name] = (series, series.family, line.sample_rate)
            self._route_count += 1

    def _forget_routes(self) -> None:
        self._routes.clear()
        self._route_count = 0

    def _add(self, line: Line) -> _Series | None:
        """Adds one parsed line to its series, which it returns; None if the line was dropped."""
        name, kind, value, sample_rate, tags, delta = line
        dims = self._dimensions_of.get(tags)
        if dims is None:
            dims = self._dimensions(name, tags)
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
        else:
            self._add_value(series, value, sample_rate)
        return series

    def _reject(self, rejected: list[Rejected]) -> None:
        self._parse_errors += len(rejected)
        for text, reason in rejected[: LOGGED_REJECTIONS - self._logged_rejections]:
            self._logged_rejections += 1
            log.warning("statsd_line_rejected", line=text[:200], reason=reason)

    def _dimensions(self, name: str, tags: Tags) -> Dimensions:
        """The allowed tags of a line as dimensions; the first value of a key wins, and past
        `max_dimensions` the keys listed first in `dimension_keys` are kept."""
        chosen: dict[str, str] = {}
        for key, value in tags:
            if value and key in self._priority and key not in chosen:
                chosen[key] = value
        if len(chosen) > self._max_dimensions:
            self._warn.warning(
                "dimensions", "statsd_dimensions_truncated", metric=name, kept=self._max_dimensions
            )
            kept = sorted(chosen, key=self._priority.__getitem__)[: self._max_dimensions]
            chosen = {key: chosen[key] for key in kept}
        dims = tuple(sorted(chosen.items()))
        if len(self._dimensions_of) >= 4 * self._max_series:
            self._dimensions_of.clear()  # a memo only; bounded however many tag sets clients invent
            self._dimensions_of[()] = ()
        self._dimensions_of[tags] = dims
        return dims

    def _admit(self, name: str, kind: Kind, dims: Dimensions) -> _Series | None:
        family = _FAMILY[kind]
        reserved = name in METRICS or (family == "c" and name + RATE_SUFFIX in METRICS)
        if reserved or len(self._series) >= self._max_series:
            self._series_dropped += 1
            if reserved:
                self._warn.warning("reserved", "statsd_reserved_name", metric=name)
            else:
                self._warn.warning("cap", "statsd_series_limit", metric=name, limit=self._max_series)
            return None
        if family == "c":
            unit = BYTES if any(fnmatchcase(name, glob) for glob in self._byte_counters) else COUNT
        else:
            unit = _VALUE_UNIT[family]
        series = _Series(name, kind, unit, dims, self._window_start)
        self._series[(name, dims)] = series
        return series

    def _add_value(self, series: _Series, value: float, sample_rate: float) -> None:
        repeats = 1 if sample_rate == 1.0 else min(MAX_REPEATS, max(1, round(1 / sample_rate)))
        if self._pending_values + repeats > self._max_values:
            self._on_drop("statsd_value_limit", repeats)
            self._warn.warning("values", "statsd_value_limit", metric=series.name, limit=self._max_values)
            return
        self._pending_values += repeats
        series.values[value] = series.values.get(value, 0) + repeats

    def collect(self) -> list[Sample]:
        with self._lock:
            now = self._monotonic()
            window = now - self._window_start
            self._window_start = now
            samples = self._drain(now, window)
            if len(self._series) < self._max_series:
                self._warn.reset("cap")
            samples.append(METRICS["StatsdSeriesDropped"].sample(self._series_dropped, Component=COMPONENT))
            samples.append(METRICS["StatsdParseErrors"].sample(self._parse_errors, Component=COMPONENT))
            self._series_dropped = self._parse_errors = self._pending_values = 0
        return samples

    def _drain(self, now: float, window: float) -> list[Sample]:
        samples: list[Sample] = []
        expired = []
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
            else:
                for value, repeats in series.values.items():
                    samples += [Sample(series.name, value, series.unit, series.dimensions)] * repeats
                series.values = {}
        if expired:
            self._forget_routes()  # they may lead to the expired series
        for key in expired:
            del self._series[key]
        return samples

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
