"""Per-minute aggregation: every sample of a series in one minute becomes one datum's Values/Counts.

CloudWatch computes SampleCount, Sum, Minimum, Maximum and percentiles from Values/Counts exactly, so
publishing every distinct value with its count loses nothing, and costs one datum per series per
minute instead of one per sample. A flush before the minute ends sends what the minute has so far;
CloudWatch adds datums with the same timestamp together.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from agent.samples import Dimensions, Sample

MAX_VALUES_PER_DATUM = 150  # distinct values in one datum's Values
MAX_ABS_VALUE = 2.0**360  # CloudWatch rejects values outside ±2^360
STANDARD_RESOLUTION = 60
HIGH_RESOLUTION = 1


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


def publishable(value: float) -> bool:
    """NaN, ±Inf and values beyond ±2^360 make CloudWatch reject the whole request."""
    return math.isfinite(value) and abs(value) <= MAX_ABS_VALUE


class Aggregator:
    def __init__(
        self,
        *,
        high_resolution: bool = False,
        on_drop: Callable[[str, int], None] = lambda reason, count: None,
        publish_as: Callable[[Datum], Datum] = lambda datum: datum,
    ) -> None:
        self._resolution = HIGH_RESOLUTION if high_resolution else STANDARD_RESOLUTION
        self._on_drop = on_drop
        self._publish_as = publish_as  # the naming profile (agent.naming.Namer.datum)
        self._buckets: dict[tuple[str, Dimensions, str, int], Counter[float]] = {}

    def add(self, samples: Iterable[Sample], timestamp: float, host_dimensions: Dimensions = ()) -> int:
        """Add samples taken at `timestamp` (epoch seconds); returns how many were kept."""
        bucket = int(timestamp // self._resolution) * self._resolution
        kept = 0
        for sample in samples:
            if not publishable(sample.value):
                self._on_drop("invalid_value", 1)
                continue
            dims = tuple(sorted(host_dimensions + sample.dimensions)) if host_dimensions else sample.dimensions
            key = (sample.name, dims, sample.unit, bucket)
            values = self._buckets.get(key)
            if values is None:
                values = self._buckets[key] = Counter()
            values[sample.value] += sample.count  # type: ignore[assignment] # Counter adds float weights too
            kept += 1
        return kept

    def drain(self) -> list[Datum]:
        """Every datum accumulated since the last drain, oldest bucket first."""
        buckets, self._buckets = self._buckets, {}
        datums: list[Datum] = []
        for (name, dims, unit, bucket), values in sorted(buckets.items(), key=lambda item: item[0][3]):
            ordered = sorted(values.items())
            for start in range(0, len(ordered), MAX_VALUES_PER_DATUM):
                chunk = ordered[start : start + MAX_VALUES_PER_DATUM]
                datums.append(self._publish_as(
                    Datum(
                        name, dims, float(bucket), unit,
                        tuple(value for value, _ in chunk), tuple(float(count) for _, count in chunk),
                        self._resolution,
                    )
                ))
        return datums

    @property
    def pending(self) -> int:
        """Datapoints held, not yet drained."""
        return sum(sum(values.values()) for values in self._buckets.values())
