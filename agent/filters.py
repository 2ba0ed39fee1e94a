"""Include/exclude glob lists, as every collector's config uses them."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class NameFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        """An empty include list keeps everything; exclude wins over include."""
        if self.include and not any(fnmatchcase(name, pattern) for pattern in self.include):
            return False
        return not any(fnmatchcase(name, pattern) for pattern in self.exclude)


class MetricExclusions:
    """Which metric names `exclude_metrics` keeps out of every request, decided once per name."""

    def __init__(self, exclude: tuple[str, ...]) -> None:
        self._exclude = exclude
        self._kept: dict[str, bool] = {}  # catalogue names plus StatsD names, bounded by statsd.max_series

    def keeps(self, name: str) -> bool:
        kept = self._kept.get(name)
        if kept is None:
            kept = self._kept[name] = not any(fnmatchcase(name, pattern) for pattern in self._exclude)
        return kept
