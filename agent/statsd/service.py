"""The StatsD listener and its collector, built from the config as one collector the agent can close."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from agent.cloudwatch_rules import MAX_DIMENSIONS
from agent.config import AgentConfig
from agent.samples import Sample
from agent.statsd.address import split_host_port
from agent.statsd.collector import StatsdCollector
from agent.statsd.listener import StatsdListener

log = structlog.get_logger()


class StatsdService:
    """A `Collector`: `collect` drains the collector; `close` stops the listener thread and frees the port."""

    name = "statsd"

    def __init__(self, collector: StatsdCollector, listener: StatsdListener) -> None:
        self.collector = collector
        self.listener = listener

    def collect(self) -> list[Sample]:
        return self.collector.collect()

    def close(self) -> None:
        self.listener.close()


def start_statsd(
    config: AgentConfig,
    *,
    on_drop: Callable[[str, int], None] = lambda reason, count: None,
    on_merge: Callable[[int], None] = lambda merged: None,
    on_error: Callable[[], None] = lambda: None,
) -> StatsdService | None:
    """Listening, or None when `statsd.enabled` is false or the address cannot be bound (said once, as a
    warning: the agent runs on without StatsD, as it does without a GPU)."""
    settings = config.statsd
    if not settings.enabled:
        return None
    collector = StatsdCollector(
        max_series=settings.max_series,
        dimension_keys=settings.dimension_keys,
        # Room left beside the host's identity dimensions and the static ones.
        max_dimensions=MAX_DIMENSIONS - max(len(config.append_dimensions), 1) - len(config.dimensions),
        byte_counters=settings.byte_counters,
        expire_after=settings.expire_after,
        on_drop=on_drop,
        on_merge=on_merge,
    )
    try:
        listener = StatsdListener(collector.receive, address=split_host_port(settings.address), on_error=on_error)
    except OSError as error:
        log.warning("statsd_unavailable", address=settings.address, error=str(error))
        return None
    listener.start()
    return StatsdService(collector, listener)
