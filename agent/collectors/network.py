"""Network throughput: bytes and packets per second per interface from /proc/net/dev deltas."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from agent.catalogue import METRICS
from agent.config import DEFAULT_EXCLUDED_INTERFACES
from agent.filters import NameFilter
from agent.rates import CounterTracker
from agent.samples import Sample

_FIELDS = (
    ("bytes_recv", "NetworkReceiveBytesPerSecond"),
    ("bytes_sent", "NetworkTransmitBytesPerSecond"),
    ("packets_recv", "NetworkReceivePacketsPerSecond"),
    ("packets_sent", "NetworkTransmitPacketsPerSecond"),
)


class NetworkCollector:
    name = "network"

    def __init__(
        self,
        *,
        interfaces: NameFilter = NameFilter(exclude=DEFAULT_EXCLUDED_INTERFACES),  # noqa: B008 - immutable
        net_io_counters: Callable[[], dict[str, Any]] = lambda: psutil.net_io_counters(pernic=True),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interfaces = interfaces
        self._net_io_counters = net_io_counters
        self._monotonic = monotonic
        self._counters = CounterTracker()

    def collect(self) -> list[Sample]:
        now = self._monotonic()
        samples: list[Sample] = []
        for interface, counters in sorted(self._net_io_counters().items()):
            if not self._interfaces.allows(interface):
                continue
            for field, metric in _FIELDS:
                rate = self._counters.rate((interface, field), getattr(counters, field), now)
                if rate is not None:
                    samples.append(METRICS[metric].sample(rate, Interface=interface))
        self._counters.forget_unseen()
        return samples
