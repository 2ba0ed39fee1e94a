"""CPU utilization, iowait and steal from /proc/stat deltas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psutil

from agent.catalogue import METRICS
from agent.samples import Sample


def _shares(previous: Any, current: Any) -> tuple[float, float, float] | None:
    """(busy %, iowait %, steal %) between two psutil cpu_times readings, or None if time did not advance.

    A field that went backwards counts as 0 for the interval, and the interval is kept: "the value of
    iowait field in /proc/stat will decrease in certain conditions" (Documentation/filesystems/proc.rst),
    and psutil (`_cpu_times_deltas`, its issues 392, 645, 1210) and procps top (`TRIMz`) clamp each delta
    the same way.
    Linux counts guest time inside user and nice, so it is subtracted from the total as psutil does;
    idle and iowait are both "not busy".
    """
    deltas = {field: max(0.0, getattr(current, field) - getattr(previous, field)) for field in current._fields}
    total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
    if total <= 0:
        return None
    iowait = deltas.get("iowait", 0.0)
    busy = max(0.0, total - deltas["idle"] - iowait)  # guest clamped apart from user could tip it below 0
    return busy / total * 100, iowait / total * 100, deltas.get("steal", 0.0) / total * 100


class CpuCollector:
    name = "cpu"

    def __init__(
        self,
        *,
        per_core: bool = False,
        cpu_times: Callable[..., Any] = psutil.cpu_times,
    ) -> None:
        self._per_core = per_core
        self._cpu_times = cpu_times
        self._previous: Any = None
        self._previous_cores: Sequence[Any] = ()

    def collect(self) -> list[Sample]:
        current = self._cpu_times()
        previous, self._previous = self._previous, current
        samples: list[Sample] = []
        shares = _shares(previous, current) if previous is not None else None
        if shares is not None:
            busy, iowait, steal = shares
            samples += [
                METRICS["CPUUtilization"].sample(busy),
                METRICS["CPUIOWait"].sample(iowait),
                METRICS["CPUSteal"].sample(steal),
            ]
        if self._per_core:
            cores = self._cpu_times(percpu=True)
            # strict=False: nothing to pair on the first read, and CPUs can be hot-plugged between reads.
            for index, (before, now) in enumerate(zip(self._previous_cores, cores, strict=False)):
                core_shares = _shares(before, now)
                if core_shares is not None:
                    samples.append(METRICS["CPUCoreUtilization"].sample(core_shares[0], Core=str(index)))
            self._previous_cores = cores
        return samples
