"""The StatsD listener and its collector, built from the config as one collector the agent can close."""

from __future__ import annotations

import time
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
    """A `Buffered` collector: `collect` drains the collector when its flush is due, `collect_final` at once;
    `close` stops the listener thread and frees the port."""

    name = "statsd"

    def __init__(self, collector: StatsdCollector, listener: StatsdListener) -> None:
        self.collector = collector
        self.listener = listener

    def collect(self) -> list[Sample]:
        return self.collector.collect()

    def collect_final(self) -> list[Sample]:
        return self.collector.collect_final()

    def close(self) -> None:
        self.listener.close()


def flush_interval(config: AgentConfig) -> int | None:
    """`statsd.flush_interval` as the collector applies it: None (a drain at every collection) when collections
    are at least that far apart, and with publish.high_resolution: a 10 s window would leave 9 of every 10
    one-second buckets without StatsD data."""
    if config.publish.high_resolution or config.collect.interval >= config.statsd.flush_interval:
        return None
    return config.statsd.flush_interval


def start_statsd(
    config: AgentConfig,
    *,
    on_drop: Callable[[str, int], None] = lambda reason, count: None,
    on_merge: Callable[[int], None] = lambda merged: None,
    on_error: Callable[[], None] = lambda: None,
    monotonic: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
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
        flush_interval=flush_interval(config),
        on_drop=on_drop,
        on_merge=on_merge,
        monotonic=monotonic,
        wall_clock=wall_clock,
    )
    try:
        listener = StatsdListener(collector.receive, address=split_host_port(settings.address), on_error=on_error)
    except OSError as error:
        log.warning("statsd_unavailable", address=settings.address, error=str(error))
        return None
    listener.start()
    return StatsdService(collector, listener)
