"""The agent's own accounting: every datapoint is delivered or counted as dropped, with the reason."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil

from agent.catalogue import METRICS
from agent.samples import Sample

COMPONENT = "agent"


class AgentStats:
    """Thread-safe counters, read as self-metric samples once per publish interval.

    Totals since start stay available for tests, benches and the shutdown log line; `interval_samples`
    reports what changed since its previous call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.collected = 0
        self.published = 0
        self.dropped: Counter[str] = Counter()
        self.publish_errors: Counter[str] = Counter()
        self.collector_errors: Counter[str] = Counter()
        self.merged = 0
        self.requests = 0
        self.possible_duplicates = 0
        self._latencies_ms: list[float] = []
        self._reported: dict[str, Counter[str]] = {}

    def add_collected(self, count: int) -> None:
        with self._lock:
            self.collected += count

    def add_published(self, count: int, latency_ms: float) -> None:
        with self._lock:
            self.published += count
            self.requests += 1
            self._latencies_ms.append(latency_ms)

    def add_dropped(self, reason: str, count: int) -> None:
        with self._lock:
            self.dropped[reason] += count

    def add_merged(self, count: int) -> None:
        with self._lock:
            self.merged += count

    def add_possible_duplicates(self, count: int) -> None:
        """Datapoints sent again after a request whose answer timed out, which CloudWatch may have stored."""
        with self._lock:
            self.possible_duplicates += count

    def add_publish_error(self, code: str) -> None:
        with self._lock:
            self.publish_errors[code] += 1

    def add_collector_error(self, collector: str) -> None:
        with self._lock:
            self.collector_errors[collector] += 1

    def _since_last(self, name: str, totals: Counter[str]) -> Counter[str]:
        previous = self._reported.get(name, Counter())
        self._reported[name] = Counter(totals)
        return Counter({key: totals[key] - previous[key] for key in totals if totals[key] > previous[key]})

    def interval_samples(self) -> list[Sample]:
        """Self-metrics for the interval since the previous call, plus the Heartbeat."""
        component = {"Component": COMPONENT}
        with self._lock:
            scalars = self._since_last(
                "scalars", Counter({"DatapointsCollected": self.collected, "DatapointsPublished": self.published,
                                    "ValuesMerged": self.merged, "PossibleDuplicates": self.possible_duplicates})
            )
            dropped = self._since_last("dropped", self.dropped)
            errors = self._since_last("errors", self.publish_errors)
            collector_errors = self._since_last("collector_errors", self.collector_errors)
            latencies, self._latencies_ms = self._latencies_ms, []
        samples = [METRICS["Heartbeat"].sample(1, **component)]
        samples += [METRICS[name].sample(scalars[name], **component)
                    for name in ("DatapointsCollected", "DatapointsPublished")]
        if scalars["ValuesMerged"]:  # only under a flood: no series while nothing is merged
            samples.append(METRICS["ValuesMerged"].sample(scalars["ValuesMerged"], **component))
        if scalars["PossibleDuplicates"]:
            samples.append(METRICS["PossibleDuplicates"].sample(scalars["PossibleDuplicates"], **component))
        samples += [METRICS["DatapointsDropped"].sample(n, Reason=reason, **component)
                    for reason, n in sorted(dropped.items())]
        samples += [METRICS["PublishErrors"].sample(n, ErrorCode=code, **component)
                    for code, n in sorted(errors.items())]
        samples += [METRICS["CollectorErrors"].sample(n, Collector=name, **component)
                    for name, n in sorted(collector_errors.items())]
        samples += [METRICS["PublishLatency"].sample(ms, **component) for ms in latencies]
        return samples


class ProcessUsage:
    """The agent's own CPU (% of one core since the previous reading) and resident memory.

    `process` is anything shaped like `psutil.Process`: `cpu_times()` with user and system seconds,
    `memory_info()` with rss bytes. The first reading is taken at construction, so the first interval
    already has a CPU figure.
    """

    def __init__(self, process: Any = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._process = process if process is not None else psutil.Process()
        self._monotonic = monotonic
        self._previous = (monotonic(), self._cpu_seconds())

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def samples(self) -> list[Sample]:
        component = {"Component": COMPONENT}
        now, cpu = self._monotonic(), self._cpu_seconds()
        (then, cpu_then), self._previous = self._previous, (now, cpu)
        samples = [METRICS["AgentMemoryRSS"].sample(self._process.memory_info().rss, **component)]
        if now > then:
            samples.append(METRICS["AgentCPUUtilization"].sample((cpu - cpu_then) / (now - then) * 100, **component))
        return samples
