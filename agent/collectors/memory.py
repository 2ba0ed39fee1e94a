"""Memory and swap utilization from /proc/meminfo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import psutil

from agent.catalogue import METRICS, Formulas
from agent.samples import Sample

MEMINFO = "/proc/meminfo"


class Swap(NamedTuple):
    total: int  # bytes
    used: int  # bytes


def swap_memory(meminfo: str = MEMINFO) -> Any:
    """Swap in bytes as psutil.swap_memory reads it: SwapTotal, and used = SwapTotal − SwapFree, from
    /proc/meminfo. psutil's call also scans /proc/vmstat for swap-in and swap-out counts, which the agent does
    not publish, at four times the cost every cycle. Where the file has no swap lines, psutil's answer (it then
    asks sysinfo(2))."""
    total = free = None
    with open(meminfo, "rb") as file:
        for line in file:
            if line.startswith(b"SwapTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith(b"SwapFree:"):
                free = int(line.split()[1]) * 1024
            if total is not None and free is not None:
                return Swap(total, total - free)
    return psutil.swap_memory()


def cwagent_used_percent(memory: Any) -> float:
    """mem_used_percent as the CloudWatch agent computes it: telegraf's mem input publishes gopsutil's
    Used / Total × 100 with Used = Total − Free − Buffers − Cached, and gopsutil adds SReclaimable to
    Cached (mem_linux.go) exactly as psutil's `cached` does. Shmem (tmpfs, /dev/shm) is part of Cached and
    gopsutil does not take it out, so shared memory counts as not used here, and as used by MemAvailable."""
    return (memory.total - memory.free - memory.buffers - memory.cached) / memory.total * 100


class MemoryCollector:
    name = "memory"

    def __init__(
        self,
        *,
        formulas: Formulas = "native",
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        swap_memory: Callable[[], Any] = swap_memory,
    ) -> None:
        self._formulas = formulas
        self._virtual_memory = virtual_memory
        self._swap_memory = swap_memory

    def collect(self) -> list[Sample]:
        memory = self._virtual_memory()
        if self._formulas == "cwagent":
            used_percent = cwagent_used_percent(memory)
        else:
            used_percent = (memory.total - memory.available) / memory.total * 100
        samples = [
            METRICS["MemoryUtilization"].sample(used_percent),
            METRICS["MemoryAvailable"].sample(memory.available),
        ]
        swap = self._swap_memory()
        if swap.total > 0:
            samples.append(METRICS["SwapUtilization"].sample(swap.used / swap.total * 100))
        elif self._formulas == "cwagent":
            # gopsutil's UsedPercent is 0 when SwapTotal is 0, and the CloudWatch agent publishes it.
            samples.append(METRICS["SwapUtilization"].sample(0.0))
        # Otherwise absent is not zero: a host without swap publishes no swap series.
        return samples
