"""Collectors: one module per source, all behind the one `Collector` protocol."""

from __future__ import annotations

from typing import Protocol

from agent.samples import Sample


class Collector(Protocol):
    """Reads one source. `name` keys its error accounting; `collect` may raise, the loop contains it."""

    name: str

    def collect(self) -> list[Sample]: ...
