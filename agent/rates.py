"""Per-second rates and per-interval deltas from monotonically increasing counters."""

from __future__ import annotations

from collections.abc import Hashable


class CounterTracker:
    """Remembers the last reading of each counter.

    The first reading of a key only primes it. A counter that goes backwards (32-bit wrap, driver
    reset, device replaced) yields nothing and re-primes: a negative rate is never produced, and
    guessing the wrap width would invent data.
    """

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[float, float]] = {}
        self._seen: set[Hashable] = set()

    def delta(self, key: Hashable, value: float, now: float) -> tuple[float, float] | None:
        """(value increase, seconds elapsed) since the previous reading, or None."""
        self._seen.add(key)
        previous = self._last.get(key)
        self._last[key] = (value, now)
        if previous is None:
            return None
        last_value, last_time = previous
        elapsed = now - last_time
        if value < last_value or elapsed <= 0:
            return None
        return value - last_value, elapsed

    def rate(self, key: Hashable, value: float, now: float) -> float | None:
        """Increase per second since the previous reading, or None."""
        change = self.delta(key, value, now)
        return None if change is None else change[0] / change[1]

    def forget_unseen(self) -> None:
        """Drop keys not read since the last call, so vanished devices do not accumulate."""
        for key in self._last.keys() - self._seen:
            del self._last[key]
        self._seen.clear()
