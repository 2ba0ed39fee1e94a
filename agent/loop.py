"""The main loop: collect on a monotonic schedule, aggregate, flush at this host's phase of the interval."""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from agent.aggregate import Aggregator, Datum
from agent.collectors import Buffered, Collector
from agent.fleet import DimensionPlan
from agent.logs import LogOnce
from agent.publisher import Publisher
from agent.replay import Replayer
from agent.samples import Dimensions, Sample
from agent.selfstats import AgentStats

log = structlog.get_logger()

LAST_INSTANT = 0.001  # seconds before a bucket's end: the self-metrics' stamp when the open bucket is held


def next_tick(deadline: float, interval: float, now: float) -> float:
    """The first tick after `now` on the grid of `deadline`: missed ticks are skipped, never burst."""
    if now < deadline:
        return deadline
    return deadline + interval * (math.floor((now - deadline) / interval) + 1)


class _Replay(enum.Enum):
    DUE = enum.auto()


class PublishWorker:
    """Publishes on its own thread, so a slow or retrying CloudWatch never delays the next sample.

    Live batches always go first; spooled datums are replayed only when no live batch waits, at the
    replayer's pace. `close` gives what is queued one last attempt within the shutdown timeout and hands
    whatever is left, the batch in flight included, to the publisher's `on_undeliverable` (the spool):
    each batch is handed over exactly once, by the worker or, if it is stuck in a request, by `close`.
    """

    def __init__(self, publisher: Publisher, replayer: Replayer | None = None) -> None:
        self._publisher = publisher
        self._replayer = replayer
        self._wakeup = threading.Condition()
        self._batches: deque[list[Datum]] = deque()
        self._in_flight: list[Datum] | None = None
        self._closing = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def submit(self, datums: Sequence[Datum]) -> None:
        if not datums:
            return
        batches = self._publisher.pack(datums)
        with self._wakeup:
            self._batches.extend(batches)
            self._wakeup.notify()

    def _next_work(self) -> list[Datum] | _Replay | None:
        """The next live batch, or REPLAY when none waits and a replay is due; None when closed."""
        with self._wakeup:
            while not self._batches and not self._closing:
                due = self._replayer.due_in() if self._replayer is not None else None
                if due == 0:
                    return _Replay.DUE
                self._wakeup.wait(due)
            if self._abandoned or not self._batches:
                return None
            self._in_flight = self._batches.popleft()
            return self._in_flight

    def _run(self) -> None:
        while (work := self._next_work()) is not None:
            if isinstance(work, _Replay):
                assert self._replayer is not None
                self._replayer.replay_one()
                continue
            self._publisher.send(work, on_undeliverable=self._undeliverable)
            with self._wakeup:
                self._in_flight = None

    def _undeliverable(self, datums: Sequence[Datum], reason: str) -> None:
        # Under the lock, so `close` cannot take the same batch over at the same moment.
        with self._wakeup:
            if not self._abandoned:
                self._publisher.on_undeliverable(datums, reason)

    def close(self, timeout: float) -> bool:
        """One last attempt for what is queued within `timeout`, then hand over the rest; returns False
        if the thread was still busy (stuck in a request) when the time was up."""
        self._publisher.abort()
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._wakeup:
            self._abandoned = True
            left = [*(self._in_flight or ()), *(datum for batch in self._batches for datum in batch)]
            self._batches.clear()
            if left:
                self._publisher.on_undeliverable(left, "shutdown")
        return False


class StopFlag(Protocol):
    """What `Agent.run` waits on: a threading.Event, or a WakeupFlag when signal handlers set it."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Agent:
    def __init__(
        self,
        *,
        collectors: Sequence[Collector],
        aggregator: Aggregator,
        stats: AgentStats,
        submit: Callable[[Sequence[Datum]], object],
        host_dimensions: Dimensions = (),
        plan: DimensionPlan | None = None,
        wall_clock: Callable[[], float] = time.time,
        gauges: Sequence[Callable[[], list[Sample]]] = (),
        keeps: Callable[[str], bool] | None = None,
        observe: Callable[[Sequence[Sample]], object] | None = None,
        sample_as: Callable[[Sample], Sample] | None = None,
        hold_open: bool = False,
    ) -> None:
        """`hold_open`: a periodic flush sends closed buckets only, leaving the open one for the next (set when
        publish.interval is at least a bucket, so each series goes out once per minute, whole)."""
        self._hold_open = hold_open
        self.collectors = list(collectors)
        self._observe = observe  # the Prometheus snapshot: every batch the aggregator gets, as it gets it
        self._keeps = keeps  # exclude_metrics: names never published, to save their cost
        self._sample_as = sample_as  # the naming profile's sample stage (agent.naming.Namer.sample)
        self.gauges = list(gauges)  # self-metrics read at each flush: process usage, spool depth
        self.aggregator = aggregator
        self.stats = stats
        self.host_dimensions = host_dimensions
        self.plan = plan  # when set, it decides the dimensions (EC2 identity, roll-ups) instead of host_dimensions
        self._submit = submit
        self._wall_clock = wall_clock
        self._warn = LogOnce(log)

    def collect(self, *, final: bool = False) -> int:
        """Run every collector once; a failing one is logged once, counted, and the rest carry on. `final`: the
        last collection before a stop or a reload, which drains what a `Buffered` collector holds."""
        timestamp = self._wall_clock()
        kept = 0
        observed: list[Sample] = []  # the cycle's samples, handed to `observe` as one batch
        for collector in self.collectors:
            try:
                if final and isinstance(collector, Buffered):
                    samples = collector.collect_final()
                else:
                    samples = collector.collect()
            except Exception as error:
                self.stats.add_collector_error(collector.name)
                self._warn.warning(("collector", collector.name), "collector_failed", variant=type(error).__name__,
                                   collector=collector.name, error=repr(error))
                continue
            self._warn.reset(("collector", collector.name))
            kept += self._add(samples, timestamp, observed)
        if self._observe is not None:
            self._observe(observed)
        self.stats.add_collected(kept)
        return kept

    def _add(self, samples: Sequence[Sample], timestamp: float, observed: list[Sample] | None = None) -> int:
        """`observed`: where a collection cycle gathers what `observe` gets once at its end (one snapshot
        update a cycle, not one per collector: each update copies the snapshot's tables); None: observe now."""
        if self._keeps is not None:
            samples = [sample for sample in samples if self._keeps(sample.name)]
        if observed is not None:
            observed += samples
        elif self._observe is not None:
            self._observe(samples)
        if self._sample_as is not None:
            samples = [self._sample_as(sample) for sample in samples]
        if self.plan is None:
            return self.aggregator.add(samples, timestamp, self.host_dimensions)
        return sum(self.aggregator.add(group, at, dims) for group, at, dims in self.plan.place(samples, timestamp))

    def flush(self, *, final: bool = False) -> None:
        """Hand what is due, with this interval's self-metrics, to the publisher: the closed buckets when the
        open one is held (`hold_open`), else everything. `final` (a stop, a reload, `--once`): everything, the
        open bucket's part so far included, so nothing is left behind.

        As the CloudWatch agent's aggregator flushes an interval once it has closed (aws/amazon-cloudwatch-agent,
        plugins/outputs/cloudwatch/aggregator.go, `durationAggregator.aggregating`, which also flushes what it
        holds on shutdown): a series is then one whole datum per minute, not the rest of the last minute and
        the start of this one, half the datums and requests, and CloudWatch never shows a partial minute."""
        now = self._wall_clock()
        hold = self._hold_open and not final
        # The self-metrics describe the interval that ends now. Stamped now they would land in the open bucket
        # and wait a whole interval for it to close, so the heartbeat alarm would learn of a dead host that
        # much later: with the open bucket held they are stamped at the last instant of the bucket that just
        # closed, and go out with it (still one Heartbeat per flush, so one per minute at 60 s).
        stamp = self.aggregator.bucket_of(now) - LAST_INSTANT if hold else now
        self_metrics = self.stats.interval_samples() + [sample for gauge in self.gauges for sample in gauge()]
        self.stats.add_collected(self._add(self_metrics, stamp))
        self._submit(self.aggregator.drain(closed_by=now if hold else None))

    def run(
        self,
        stop: StopFlag,
        *,
        collect_interval: float,
        publish_interval: float,
        flush_phase: float,
        monotonic: Callable[[], float] = time.monotonic,
        on_cycle: Callable[[], None] = lambda: None,
        on_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Loop until `stop` is set and `on_stop()` does not return True (to carry on: a reload that was
        refused); then collect once more and flush. `flush_phase` (0..publish_interval) spreads a fleet's
        requests."""
        now = monotonic()
        next_collect = now
        next_flush = now + (flush_phase - self._wall_clock()) % publish_interval
        log.info("agent_started", collectors=[c.name for c in self.collectors],
                 collect_interval=collect_interval, publish_interval=publish_interval)
        while True:  # the first collection always happens, so even an immediate stop flushes a reading
            now = monotonic()
            if now >= next_collect:
                self.collect()
                on_cycle()
                next_collect = next_tick(next_collect, collect_interval, monotonic())
            if now >= next_flush:
                self.flush()
                next_flush = next_tick(next_flush, publish_interval, monotonic())
            if stop.wait(max(0.0, min(next_collect, next_flush) - monotonic())) and not on_stop():
                break
        # What came in since the last collection (StatsD lines, counter increases: GPU energy, ECC and Xid
        # errors) exists nowhere else: without this it would be lost on every stop and reload.
        self.collect(final=True)
        self.flush(final=True)
