"""CPU shares as the CloudWatch agent computes them (telegraf's cpu input), for `naming = "cwagent"`.

Built instead of `CpuCollector` under the cwagent profile, so each series carries the agent's number:
`cpu_usage_active` counts iowait as active (100 − idle), where infrawatch's own CPUUtilization does not.
It reads /proc/stat itself so that a core keeps its kernel name (`cpu5` stays `cpu5` when `cpu3` is
offline), as the agent's `cpu` dimension does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from agent.catalogue import METRICS
from agent.samples import Sample

# /proc/stat columns after the name (proc(5)); older kernels stop early, the rest count as 0.
_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
Times = dict[str, float]

TOTAL = (("CPUUtilization", "active"), ("CPUIdle", "idle"), ("CPUIOWait", "iowait"), ("CPUUser", "user"),
         ("CPUSystem", "system"), ("CPUSteal", "steal"))
# Per core: the Standard preset's idle, iowait, user and system, and active, which infrawatch's per-core
# series already is; steal stays host-wide (each per-core series is billed).
PER_CORE = (("CPUCoreUtilization", "active"), ("CPUCoreIdle", "idle"), ("CPUCoreIOWait", "iowait"),
            ("CPUCoreUser", "user"), ("CPUCoreSystem", "system"))


def parse_stat(text: str) -> dict[str, Times]:
    """Tick counters per `cpu` line of /proc/stat, keyed by its name (`cpu`, `cpu0`, …)."""
    cpus: dict[str, Times] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu"):
            values = [float(value) for value in rest.split()]
            cpus[name] = dict(zip(_COLUMNS, values + [0.0] * (len(_COLUMNS) - len(values)), strict=True))
    return cpus


def usage(previous: Mapping[str, float], current: Mapping[str, float]) -> dict[str, float] | None:
    """Shares in % between two readings, telegraf's formulas; None when no time passed.

    total = user + nice + system + idle + iowait + irq + softirq + steal (guest time is already inside
    user and nice); active = total − idle; user leaves guest out (plugins/inputs/cpu/cpu.go). A field that
    went backwards (iowait does: Documentation/filesystems/proc.rst) counts 0 for the interval, as psutil
    and top count it, so no share is ever negative; telegraf would publish a negative iowait there.
    """
    delta = {column: max(0.0, current[column] - previous[column]) for column in _COLUMNS}
    total = sum(delta[column] for column in _COLUMNS[:8])
    if total <= 0:
        return None
    return {
        "active": (total - delta["idle"]) / total * 100,
        "idle": delta["idle"] / total * 100,
        "iowait": delta["iowait"] / total * 100,
        "user": max(0.0, delta["user"] - delta["guest"]) / total * 100,
        "system": delta["system"] / total * 100,
        "steal": delta["steal"] / total * 100,
    }


class CwagentCpuCollector:
    name = "cpu"

    def __init__(
        self,
        *,
        per_core: bool = False,
        read_stat: Callable[[], str] = lambda: Path("/proc/stat").read_text(),
    ) -> None:
        self._per_core = per_core
        self._read_stat = read_stat
        self._previous: dict[str, Times] = {}

    def collect(self) -> list[Sample]:
        current = parse_stat(self._read_stat())
        previous, self._previous = self._previous, current
        samples: list[Sample] = []
        for cpu, times in current.items():
            before = previous.get(cpu)
            shares = usage(before, times) if before is not None else None
            if shares is None:
                continue  # first reading, or a core that came back online: nothing to compare with yet
            if cpu == "cpu":
                samples += [METRICS[metric].sample(shares[share]) for metric, share in TOTAL]
            elif self._per_core:
                core = cpu.removeprefix("cpu")
                samples += [METRICS[metric].sample(shares[share], Core=core) for metric, share in PER_CORE]
        return samples
