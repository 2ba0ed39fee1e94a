"""The immutable values that flow from collectors to the publisher."""

from __future__ import annotations

from typing import NamedTuple

Dimensions = tuple[tuple[str, str], ...]
"""Dimension (name, value) pairs, sorted by name so equal sets compare and hash equal."""


def dimensions(**pairs: str) -> Dimensions:
    return tuple(sorted(pairs.items()))


class Sample(NamedTuple):
    """One reading of one series. The unit travels with the value; it is never implied by the name."""

    name: str
    value: float
    unit: str
    dimensions: Dimensions = ()
    # How many observations this sample stands for (a sampled StatsD timer value: 1/rate). It shadows
    # tuple.count, which nothing calls on a Sample.
    count: float = 1.0  # type: ignore[assignment]
