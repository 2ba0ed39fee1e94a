"""Per-minute aggregation: every sample of a series in one minute becomes one datum's Values/Counts.

CloudWatch computes SampleCount, Sum, Minimum, Maximum and percentiles from Values/Counts exactly, so
publishing every distinct value with its count loses nothing, and costs one datum per series per
minute instead of one per sample. A drain can take only the closed buckets and leave the open one to
grow (the agent's periodic flush, so each series is one datum per minute); a drain of everything (a stop,
a reload, `--once`, a publish interval shorter than the bucket) sends the open bucket's part so far, and
CloudWatch adds datums with the same timestamp together. What one minute holds is bounded
(`agent.distribution`): past a limit, values are merged into group means, SampleCount, Sum, Minimum and
Maximum staying exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import structlog

from agent.cloudwatch_rules import MAX_VALUES_PER_METRIC, publishable, series_problem
from agent.distribution import MAX_HELD_VALUES, MAX_SERIES_VALUES, Distribution, ValueBudget
from agent.logs import LogOnce
from agent.samples import Dimensions, Sample

log = structlog.get_logger()

STANDARD_RESOLUTION = 60
HIGH_RESOLUTION = 1
BucketKey = tuple[str, Dimensions, str, int]  # name, dimensions, unit, bucket start


class Datum(NamedTuple):
    """One MetricDatum: the distinct values of one series in one bucket, with their counts."""

    name: str
    dimensions: Dimensions
    timestamp: float  # epoch seconds at the start of the bucket
    unit: str
    values: tuple[float, ...]
    counts: tuple[float, ...]
    storage_resolution: int = STANDARD_RESOLUTION

    @property
    def datapoints(self) -> int:
        return int(sum(self.counts))

    def to_api(self) -> dict[str, Any]:
        datum: dict[str, Any] = {
            "MetricName": self.name,
            "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
            "Timestamp": dt.datetime.fromtimestamp(self.timestamp, dt.timezone.utc),
            "Values": list(self.values),
            "Counts": list(self.counts),
            "Unit": self.unit,
        }
        if self.storage_resolution != STANDARD_RESOLUTION:
            datum["StorageResolution"] = self.storage_resolution
        return datum


class Aggregator:
    def __init__(
        self,
        *,
        high_resolution: bool = False,
        on_drop: Callable[[str, int], None] = lambda reason, count: None,
        publish_as: Callable[[Datum], Datum] = lambda datum: datum,
        on_merge: Callable[[int], None] = lambda merged: None,
        max_series_values: int = MAX_SERIES_VALUES,
        max_held_values: int = MAX_HELD_VALUES,
    ) -> None:
        """`on_merge(n)`: n distinct values were merged into group means to bound memory."""
        self._resolution = HIGH_RESOLUTION if high_resolution else STANDARD_RESOLUTION
        self._on_drop = on_drop
        self._publish_as = publish_as  # the naming profile (agent.naming.Namer.datum)
        self._buckets: dict[BucketKey, Distribution] = {}
        self._budget = ValueBudget(lambda: self._buckets.values(), per_series=max_series_values,
                                   total=max_held_values, on_merge=on_merge)
        self._warn = LogOnce(log)

    @property
    def bucket_seconds(self) -> int:
        """The length of a bucket: 60 s, or 1 s at high resolution."""
        return self._resolution

    def bucket_of(self, timestamp: float) -> int:
        """The start (epoch seconds) of the bucket that holds `timestamp`."""
        return int(timestamp // self._resolution) * self._resolution

    def add(self, samples: Iterable[Sample], timestamp: float, host_dimensions: Dimensions = ()) -> int:
        """Add samples taken at `timestamp` (epoch seconds); returns how many were kept."""
        bucket = self.bucket_of(timestamp)
        kept = 0
        merged: dict[Dimensions, Dimensions] = {}  # a batch's samples share few dimension sets: sort each once
        buckets = self._buckets
        for sample in samples:
            if not publishable(sample.value):  # CloudWatch would refuse the whole request for it
                self._on_drop("out_of_range", 1)
                continue
            if host_dimensions:
                dims = merged.get(sample.dimensions)
                if dims is None:
                    dims = merged[sample.dimensions] = tuple(sorted(host_dimensions + sample.dimensions))
            else:
                dims = sample.dimensions
            key = (sample.name, dims, sample.unit, bucket)
            values = buckets.get(key)
            if values is None:
                buckets[key] = Distribution(sample.value, sample.count)
            else:
                self._budget.add(values, sample.value, sample.count)
            kept += 1
        return kept

    def drain(self, closed_by: float | None = None) -> list[Datum]:
        """Every datum accumulated since the last drain, oldest bucket first; with `closed_by` (epoch seconds),
        only the buckets that ended by then: the open one stays, to go out whole at a later drain.

        A series CloudWatch would refuse (a non-ASCII mount path or a tab in a dimension value, a name too
        long) is dropped here, counted as `invalid_series`, so it never takes a request down with it."""
        buckets: dict[BucketKey, Distribution] = {}
        if closed_by is None:
            buckets, self._buckets = self._buckets, buckets
        else:
            held: dict[BucketKey, Distribution] = {}
            for key, values in self._buckets.items():
                (buckets if key[3] + self._resolution <= closed_by else held)[key] = values
            self._buckets = held
        self._budget.release(self._buckets.values())
        datums: list[Datum] = []
        for key in sorted(buckets, key=lambda key: key[3]):
            name, dims, unit, bucket = key
            ordered = buckets.pop(key).items()  # freed as it goes: the datums replace it
            for start in range(0, len(ordered), MAX_VALUES_PER_METRIC):
                chunk = ordered[start : start + MAX_VALUES_PER_METRIC]
                datum = self._publish_as(
                    Datum(
                        name, dims, float(bucket), unit,
                        tuple(value for value, _ in chunk), tuple(count for _, count in chunk),
                        self._resolution,
                    )
                )
                problem = series_problem(datum.name, datum.unit, datum.dimensions)
                if problem:
                    self._on_drop("invalid_series", datum.datapoints)
                    self._warn.warning("series", "series_refused", metric=datum.name, problem=problem)
                    continue
                datums.append(datum)
        return datums

    @property
    def pending(self) -> float:
        """Datapoints held, not yet drained."""
        return sum(values.count for values in self._buckets.values())
