"""The values of one series in one bucket (a minute, or a StatsD collect window), in bounded memory.

CloudWatch computes SampleCount, Sum, Minimum and Maximum from a datum's Values/Counts, and percentiles
from the values themselves. Holding every distinct value is exact but unbounded: a job timing requests in
float milliseconds sends a new value with nearly every line. So past `per_series` distinct values a
series' values are merged: sorted, cut into groups of about equal count (never across zero), and each
group becomes one value, the MEAN of the values it absorbed, with their summed counts. The exact minimum
and maximum are held apart and never merged. Σcount (SampleCount) and Σvalue×count (Sum, up to float
rounding) stay exact, and so do Minimum and Maximum; only percentiles become approximate, each off by at
most one group's share of the count. A group's mean lies between its smallest and largest member, so it is
as publishable as they are (CloudWatch's value range).

`ValueBudget` also bounds the total over every series held together: past `total` values, every series is
merged down to its share. Every value merged away is counted (`on_merge`, the ValuesMerged self-metric).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

MAX_SERIES_VALUES = 1500  # distinct values one series holds before merging: 10 datums of 150 values
MAX_HELD_VALUES = 100_000  # distinct values held over all series before merging each down to its share


class Distribution:
    """Values and their counts (floats: a StatsD line at sample rate r stands for 1/r observations)."""

    __slots__ = ("high", "high_count", "low", "low_count", "middle")

    def __init__(self, value: float, count: float) -> None:
        self.low = self.high = value
        self.low_count = count
        self.high_count = 0.0  # while low == high, the value's whole count is in low_count
        self.middle: dict[float, float] = {}  # every other value, exact or a group's mean

    def add(self, value: float, count: float) -> int:
        """Add `count` observations of `value`; returns how many entries `middle` grew by (0 or 1)."""
        if value == self.low:
            self.low_count += count
            return 0
        if value == self.high:
            self.high_count += count
            return 0
        if value < self.low:
            if self.low == self.high:  # the one value held so far becomes the maximum
                self.high_count, grown = self.low_count, 0
            else:
                grown = self._hold(self.low, self.low_count)
            self.low, self.low_count = value, count
            return grown
        if value > self.high:
            grown = 0 if self.low == self.high else self._hold(self.high, self.high_count)
            self.high, self.high_count = value, count
            return grown
        return self._hold(value, count)

    def _hold(self, value: float, count: float) -> int:
        held = self.middle.get(value)
        self.middle[value] = count if held is None else held + count
        return 1 if held is None else 0

    def items(self) -> list[tuple[float, float]]:
        """(value, count) pairs in ascending order of value."""
        ordered = [(self.low, self.low_count), *sorted(self.middle.items())]
        if self.high != self.low:
            ordered.append((self.high, self.high_count))
        return ordered

    @property
    def count(self) -> float:
        return self.low_count + self.high_count + sum(self.middle.values())

    def merge(self, target: int) -> int:
        """Merge `middle` into about `target` groups (a few more where groups break at zero); returns how
        many entries that removed."""
        before = len(self.middle)
        if before <= target:
            return 0
        ordered = sorted(self.middle.items())
        share = sum(count for _, count in ordered) / max(target, 1)
        merged: dict[float, float] = {}
        first = last = total = weight = 0.0
        members = 0
        for value, count in ordered:
            if members and (weight >= share or _sign(value) != _sign(first)):
                _put(merged, first, last, total, weight, members)
                members = 0
            if not members:
                first, total, weight = value, 0.0, 0.0
            last = value
            total += value * count
            weight += count
            members += 1
        if members:
            _put(merged, first, last, total, weight, members)
        self.middle = merged
        return before - len(merged)


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _put(merged: dict[float, float], first: float, last: float, total: float, weight: float, members: int) -> None:
    """One group as one value: its members' mean (kept between the smallest and largest of them, which
    float rounding could otherwise cross) with their summed count."""
    value = first if members == 1 else min(max(total / weight, first), last)
    merged[value] = merged.get(value, 0.0) + weight


class ValueBudget:
    """Bounds the distinct values held by many Distributions: `per_series` each, `total` over all of them.

    `held_by` lists the live distributions (read only when the total is exceeded); `release` is called when
    they have been handed on (drained), with those still held (an open minute kept for a later drain)."""

    def __init__(
        self,
        held_by: Callable[[], Iterable[Distribution]],
        *,
        per_series: int = MAX_SERIES_VALUES,
        total: int = MAX_HELD_VALUES,
        on_merge: Callable[[int], None] = lambda merged: None,
    ) -> None:
        self._held_by = held_by
        self._per_series = per_series
        self._total = total
        self._on_merge = on_merge
        self.held = 0  # entries in the middles of the live distributions
        self._squeeze_at = total

    def add(self, distribution: Distribution, value: float, count: float) -> None:
        if not distribution.add(value, count):
            return
        self.held += 1
        if len(distribution.middle) > self._per_series:
            self._merge(distribution, self._per_series // 2)
        elif self.held > self._squeeze_at:
            self._squeeze()

    def release(self, kept: Iterable[Distribution] = ()) -> None:
        self.held = sum(len(distribution.middle) for distribution in kept)
        self._squeeze_at = self._total

    def _merge(self, distribution: Distribution, target: int) -> None:
        removed = distribution.merge(target)
        if removed:
            self.held -= removed
            self._on_merge(removed)

    def _squeeze(self) -> None:
        """Every series down to its share of half the total; if the series alone are more than that
        (each keeps at least one middle value), the next squeeze waits until the held values double."""
        live = list(self._held_by())
        share = max(1, self._total // (2 * max(len(live), 1)))
        for distribution in live:
            if len(distribution.middle) > share:
                self._merge(distribution, share)
        self._squeeze_at = max(self._total, 2 * self.held)
