"""Collectors: one module per source, all behind the one `Collector` protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agent.samples import Sample


class Collector(Protocol):
    """Reads one source. `name` keys its error accounting; `collect` may raise, the loop contains it."""

    name: str

    def collect(self) -> list[Sample]: ...


@runtime_checkable
class Buffered(Protocol):
    """A collector that holds what it reads until a flush of its own is due (StatsD's flush_interval): its
    `collect` returns nothing before then, `collect_final` returns what it holds at once. The agent's last
    collection, at a stop or a reload, calls `collect_final`, so nothing it holds is lost."""

    def collect_final(self) -> list[Sample]: ...
