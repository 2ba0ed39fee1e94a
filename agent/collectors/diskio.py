"""Block device throughput: bytes and operations per second from /proc/diskstats deltas."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import psutil

from agent.catalogue import METRICS
from agent.filters import NameFilter
from agent.rates import CounterTracker
from agent.samples import Sample

_FIELDS = (
    ("read_bytes", "DiskReadBytesPerSecond"),
    ("write_bytes", "DiskWriteBytesPerSecond"),
    ("read_count", "DiskReadOpsPerSecond"),
    ("write_count", "DiskWriteOpsPerSecond"),
)


def _whole_disks() -> set[str]:
    """/sys/block lists whole disks only; partitions live below them."""
    try:
        return set(os.listdir("/sys/block"))
    except OSError:
        return set()


class DiskIOCollector:
    name = "diskio"

    def __init__(
        self,
        *,
        devices: NameFilter = NameFilter(),  # noqa: B008 - immutable
        partitions: bool = False,
        io_time: bool = False,
        disk_io_counters: Callable[[], dict[str, Any]] = lambda: psutil.disk_io_counters(perdisk=True) or {},
        whole_disks: Callable[[], set[str]] = _whole_disks,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._devices = devices
        self._partitions = partitions
        self._io_time = io_time  # the CloudWatch agent's diskio_io_time (cwagent)
        self._disk_io_counters = disk_io_counters
        self._whole_disks = whole_disks
        self._monotonic = monotonic
        self._counters = CounterTracker()

    def collect(self) -> list[Sample]:
        now = self._monotonic()
        disks = None if self._partitions else self._whole_disks()
        samples: list[Sample] = []
        for device, counters in sorted(self._disk_io_counters().items()):
            if not self._devices.allows(device) or (disks is not None and device not in disks):
                continue
            for field, metric in _FIELDS:
                rate = self._counters.rate((device, field), getattr(counters, field), now)
                if rate is not None:
                    samples.append(METRICS[metric].sample(rate, Device=device))
            if self._io_time:
                # The agent turns the io_ticks counter into its increase per collection (cumulativetodelta),
                # in milliseconds; psutil names it busy_time.
                change = self._counters.delta((device, "busy_time"), counters.busy_time, now)
                if change is not None:
                    samples.append(METRICS["DiskIOTime"].sample(change[0], Device=device))
        self._counters.forget_unseen()
        return samples
