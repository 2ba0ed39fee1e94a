"""Memory and swap utilization from /proc/meminfo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from agent.catalogue import METRICS
from agent.samples import Sample


class MemoryCollector:
    name = "memory"

    def __init__(
        self,
        *,
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        swap_memory: Callable[[], Any] = psutil.swap_memory,
    ) -> None:
        self._virtual_memory = virtual_memory
        self._swap_memory = swap_memory

    def collect(self) -> list[Sample]:
        memory = self._virtual_memory()
        samples = [
            METRICS["MemoryUtilization"].sample((memory.total - memory.available) / memory.total * 100),
            METRICS["MemoryAvailable"].sample(memory.available),
        ]
        swap = self._swap_memory()
        if swap.total > 0:  # absent is not zero: a host without swap publishes no swap series
            samples.append(METRICS["SwapUtilization"].sample(swap.used / swap.total * 100))
        return samples
