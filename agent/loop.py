"""The main loop: collect on a monotonic schedule, aggregate, flush at this host's phase of the interval."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence

import structlog

from agent.aggregate import Aggregator, Datum
from agent.collectors import Collector
from agent.logs import LogOnce
from agent.publisher import Publisher
from agent.samples import Dimensions
from agent.selfstats import AgentStats

log = structlog.get_logger()


def next_tick(deadline: float, interval: float, now: float) -> float:
    """The first tick after `now` on the grid of `deadline`: missed ticks are skipped, never burst."""
    if now < deadline:
        return deadline
    return deadline + interval * (math.floor((now - deadline) / interval) + 1)


class PublishWorker:
    """Publishes on its own thread, so a slow or retrying CloudWatch never delays the next sample."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._queue: queue.Queue[Sequence[Datum] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def submit(self, datums: Sequence[Datum]) -> None:
        if datums:
            self._queue.put(datums)

    def _run(self) -> None:
        while (datums := self._queue.get()) is not None:
            self._publisher.publish(datums)

    def close(self, timeout: float) -> bool:
        """Publish what is queued within `timeout`; returns False if the thread was still busy."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Agent:
    def __init__(
        self,
        *,
        collectors: Sequence[Collector],
        aggregator: Aggregator,
        stats: AgentStats,
        submit: Callable[[Sequence[Datum]], object],
        host_dimensions: Dimensions = (),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.collectors = list(collectors)
        self.aggregator = aggregator
        self.stats = stats
        self.host_dimensions = host_dimensions
        self._submit = submit
        self._wall_clock = wall_clock
        self._warn = LogOnce(log)

    def collect(self) -> int:
        """Run every collector once; a failing one is logged once, counted, and the rest carry on."""
        timestamp = self._wall_clock()
        kept = 0
        for collector in self.collectors:
            try:
                samples = collector.collect()
            except Exception as error:
                self.stats.add_collector_error(collector.name)
                self._warn.warning(("collector", collector.name, type(error).__name__), "collector_failed",
                                   collector=collector.name, error=repr(error))
                continue
            self._warn.reset(("collector", collector.name))
            kept += self.aggregator.add(samples, timestamp, self.host_dimensions)
        self.stats.add_collected(kept)
        return kept

    def flush(self) -> None:
        """Hand everything aggregated so far, with this interval's self-metrics, to the publisher."""
        self_metrics = self.stats.interval_samples()
        self.stats.add_collected(self.aggregator.add(self_metrics, self._wall_clock(), self.host_dimensions))
        self._submit(self.aggregator.drain())

    def run(
        self,
        stop: threading.Event,
        *,
        collect_interval: float,
        publish_interval: float,
        flush_phase: float,
        monotonic: Callable[[], float] = time.monotonic,
        on_cycle: Callable[[], None] = lambda: None,
    ) -> None:
        """Loop until `stop` is set. `flush_phase` (0..publish_interval) spreads a fleet's requests."""
        now = monotonic()
        next_collect = now
        next_flush = now + (flush_phase - self._wall_clock()) % publish_interval
        log.info("agent_started", collectors=[c.name for c in self.collectors],
                 collect_interval=collect_interval, publish_interval=publish_interval)
        while not stop.is_set():
            now = monotonic()
            if now >= next_collect:
                self.collect()
                on_cycle()
                next_collect = next_tick(next_collect, collect_interval, monotonic())
            if now >= next_flush:
                self.flush()
                next_flush = next_tick(next_flush, publish_interval, monotonic())
            stop.wait(max(0.0, min(next_collect, next_flush) - monotonic()))
        self.flush()
