"""One GPU sweep on the fake 8-GPU H100 host: time per sweep and per GPU, and NVML calls per sweep.

    .venv/bin/python bench/gpu_sweep.py

Also the same host on a driver before R560 (no PCIe byte counters), where PCIe throughput comes from
nvmlDeviceGetPcieThroughput, which the fake makes block for its real 20 ms window per call: the sweep
time on that path shows whether the collection loop waits for it.

The fake answers in microseconds, so the time measured is the agent's own Python work (wrapper,
collector, samples) plus the fake's, which the target of at most 2 ms per GPU is about. NVML's own time on a real host
comes on top; bench/gpu_vs_nvidia_smi.py measures a real sweep.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.collectors.gpu import GpuCollector
from agent.fake_nvml import FakeNvml, before_r560_h100, healthy_h100
from agent.nvml import Nvml

GPUS = 8
SWEEPS = 500
SLOW_PATH_SWEEPS = 100
TARGET_MS_PER_GPU = 2.0


class SteppingClock:
    """Moves 10 s per sweep, as the agent's collect interval does, so every counter yields a delta."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingLibrary:
    """Passes every pynvml function through to the fake and counts the calls."""

    def __init__(self, library: Any) -> None:
        self._library = library
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        function = getattr(self._library, name)

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return function(*args)

        return counted


def sweep_times(
    make: Callable[[SteppingClock], FakeNvml] = lambda clock: healthy_h100(GPUS, clock=clock), sweeps: int = SWEEPS
) -> tuple[list[float], list[float]]:
    """Wall time and this thread's CPU time of each sweep; CPU time is what other processes cannot inflate."""
    clock = SteppingClock()
    collector = GpuCollector(Nvml(make(clock)), monotonic=clock, xid_wait_ms=50)
    try:
        for _ in range(2):  # discovery and counter priming are one-offs
            collector.collect()
            clock.now += 10
        wall, cpu = [], []
        for _ in range(sweeps):
            started, started_cpu = time.perf_counter(), time.thread_time()
            collector.collect()
            wall.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
            clock.now += 10
        return wall, cpu
    finally:
        collector.close()


def calls_per_sweep() -> tuple[Counter[str], Counter[str], int]:
    """NVML calls of the first sweep (discovery included) and of a steady one, and samples per sweep."""
    clock = SteppingClock()
    library = CountingLibrary(healthy_h100(GPUS, clock=clock))
    collector = GpuCollector(Nvml(library), monotonic=clock, xid_wait_ms=50)
    try:
        collector.collect()
        first = Counter(library.calls)
        clock.now += 10
        library.calls.clear()
        samples = len(collector.collect())
        # The Xid thread waits in NVML all the time; its waits are not part of a sweep.
        steady = Counter({name: count for name, count in library.calls.items() if name != "nvmlEventSetWait_v2"})
        first.pop("nvmlEventSetWait_v2", None)
        return first, steady, samples
    finally:
        collector.close()


def main() -> None:
    wall, cpu = sweep_times()
    slow_wall, _ = sweep_times(lambda clock: before_r560_h100(GPUS, clock=clock), SLOW_PATH_SWEEPS)
    first, steady, samples = calls_per_sweep()
    cpu_ms = statistics.median(cpu) * 1000
    print(f"## GPU sweep, fake {GPUS}× H100 ({SWEEPS} sweeps after 2 warm-up)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| median CPU time per sweep | {cpu_ms:.3f} ms |")
    print(f"| median CPU time per GPU | {cpu_ms / GPUS:.3f} ms (target ≤ {TARGET_MS_PER_GPU:g} ms) |")
    print(f"| median wall time per sweep | {statistics.median(wall) * 1000:.3f} ms |")
    print(f"| p90 wall time per sweep | {statistics.quantiles(wall, n=10)[-1] * 1000:.3f} ms |")
    print(f"| median wall time per sweep, driver before R560 (20 ms PCIe throughput calls, off the loop) "
          f"| {statistics.median(slow_wall) * 1000:.3f} ms |")
    slow_p90 = statistics.quantiles(slow_wall, n=10)[-1] * 1000
    print(f"| p90 wall time per sweep, driver before R560 | {slow_p90:.3f} ms |")
    print(f"| samples per sweep | {samples} |")
    print(f"| NVML calls per sweep | {sum(steady.values())} ({sum(steady.values()) / GPUS:g} per GPU) |")
    print(f"| NVML calls in the first sweep | {sum(first.values())} (handles, Xid registration) |")
    print("\n| NVML function | calls per steady sweep |")
    print("|---|---|")
    for name, count in sorted(steady.items()):
        print(f"| {name} | {count} |")


if __name__ == "__main__":
    main()
