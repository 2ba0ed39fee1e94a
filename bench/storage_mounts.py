"""Storage collection on a host with many mounts: time per cycle and threads used, with fake statvfs.

    .venv/bin/python bench/storage_mounts.py [--mounts 60] [--cycles 200] [--hung 1] [--timeout 0.5]

The mount table is a fake /proc/self/mountinfo with one filesystem per mount (EBS volumes at
/mnt/vol00…) and statvfs answers at once, so the time measured is the collector's own work: reading
the table, choosing one mount per filesystem, handing the calls to its threads, building samples.
`--hung N` makes the first N volumes hang as a dead NFS server does: the first cycle waits
`--timeout` once, later cycles skip them without waiting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.fakes

from agent import logs  # noqa: E402
from agent.collectors import mounts  # noqa: E402
from agent.collectors.storage import StorageCollector  # noqa: E402
from tests.fakes.host import StatVfs, many_mounts_mountinfo  # noqa: E402


def run(count: int, cycles: int, hung: int, timeout: float) -> dict[str, float]:
    text = many_mounts_mountinfo(count)
    hung_paths = {f"/mnt/vol{i:02d}" for i in range(hung)}
    release = threading.Event()

    def statvfs(path: str) -> StatVfs:
        if path in hung_paths:
            release.wait()
        return StatVfs(4096, 1_000_000, 400_000, 350_000, 65_536, 16_384)

    # The table is parsed every cycle, as the agent reads /proc/self/mountinfo every cycle.
    collector = StorageCollector(mount_table=lambda: mounts.parse(text), statvfs=statvfs, timeout=timeout)
    threads_before = threading.active_count()
    started = time.perf_counter()
    first = collector.collect()
    first_ms = (time.perf_counter() - started) * 1000
    wall, cpu = [], []
    for _ in range(cycles):
        started, started_cpu = time.perf_counter(), time.thread_time()
        samples = collector.collect()
        wall.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    threads_added = threading.active_count() - threads_before
    release.set()
    published = len({dict(s.dimensions).get("MountPath") for s in samples if s.name == "StorageUtilization"})
    return {
        "first_ms": first_ms,
        "median_ms": statistics.median(wall) * 1000,
        "p90_ms": statistics.quantiles(wall, n=10)[-1] * 1000,
        "cpu_ms": statistics.median(cpu) * 1000,
        "threads": threads_added,
        "published": published,
        "first_published": len({dict(s.dimensions).get("MountPath") for s in first if s.name == "StorageUtilization"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mounts", type=int, default=60)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--hung", type=int, default=1, help="volumes whose statvfs never answers (0 for none)")
    parser.add_argument("--timeout", type=float, default=0.5, help="storage.timeout in seconds")
    args = parser.parse_args()
    logs.configure(stream=sys.stderr)  # stdout carries the table
    print(f"## Storage collection, {args.mounts} mounts, fake statvfs ({args.cycles} cycles after the first)\n")
    print("| hung mounts | first cycle | median cycle | p90 cycle | median CPU per cycle | statvfs threads "
          "| filesystems published (first / later cycles) |")
    print("|---|---|---|---|---|---|---|")
    for hung in sorted({0, args.hung}):
        result = run(args.mounts, args.cycles, hung, args.timeout)
        print(f"| {hung} | {result['first_ms']:.2f} ms | {result['median_ms']:.3f} ms | {result['p90_ms']:.3f} ms "
              f"| {result['cpu_ms']:.3f} ms | {result['threads']:g} | {result['first_published']:g} / "
              f"{result['published']:g} of {args.mounts} |")
    print(f"\nstorage.timeout = {args.timeout:g} s: a mount that hangs costs the first cycle one timeout, "
          "then is skipped (StorageMountsSkipped) without waiting until its call returns.")


if __name__ == "__main__":
    main()
