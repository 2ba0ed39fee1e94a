"""Hand-written stand-ins for the OS sources the host collectors read, with named scenarios."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
# psutil.virtual_memory's fields as the collectors read them; `cached` is psutil's (and gopsutil's):
# /proc/meminfo Cached + SReclaimable, shared memory included.
VirtualMemory = namedtuple("VirtualMemory", "total available free buffers cached", defaults=(0, 0, 0))
SwapMemory = namedtuple("SwapMemory", "total used")
Partition = namedtuple("Partition", "device mountpoint fstype opts")
StatVfs = namedtuple("StatVfs", "f_frsize f_blocks f_bfree f_bavail f_files f_ffree")
DiskCounters = namedtuple("DiskCounters", "read_bytes write_bytes read_count write_count busy_time", defaults=(0,))
NicCounters = namedtuple("NicCounters", "bytes_recv bytes_sent packets_recv packets_sent")


def cpu(user: float = 0, system: float = 0, idle: float = 0, iowait: float = 0, steal: float = 0,
        guest: float = 0) -> CpuTimes:
    return CpuTimes(user, 0.0, system, idle, iowait, 0.0, 0.0, steal, guest, 0.0)


class Sequence:
    """Returns the next reading on each call, as /proc does between two reads."""

    def __init__(self, *readings: Any) -> None:
        self._readings: Iterator[Any] = iter(readings)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return next(self._readings)


class FakeClock:
    """A monotonic clock that only moves when told to; `sleep` advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# A GPU training host: root on NVMe, a data volume, and the pseudo filesystems every Linux host has.
TRAINING_HOST_PARTITIONS = [
    Partition("/dev/nvme0n1p1", "/", "ext4", "rw"),
    Partition("/dev/nvme1n1", "/data", "xfs", "rw"),
    Partition("tmpfs", "/run", "tmpfs", "rw"),
    Partition("overlay", "/var/lib/docker/overlay2/abc/merged", "overlay", "rw"),
    Partition("/dev/loop3", "/snap/core/1", "squashfs", "ro"),
    Partition("proc", "/proc", "proc", "rw"),
    Partition("cgroup2", "/sys/fs/cgroup", "cgroup2", "rw"),
    Partition("s3fs", "/mnt/s3", "fuse.s3fs", "rw"),
]

TRAINING_HOST_STATVFS = {
    # 4 KiB blocks: 1,000,000 total, 400,000 free of which 350,000 available to users.
    "/": StatVfs(4096, 1_000_000, 400_000, 350_000, 65_536, 16_384),
    # No inode table (f_files = 0): inode utilization is absent, not zero.
    "/data": StatVfs(4096, 2_000_000, 1_500_000, 1_500_000, 0, 0),
}


def statvfs_from(table: dict[str, StatVfs], hang: Callable[[str], None] | None = None) -> Callable[[str], StatVfs]:
    def statvfs(path: str) -> StatVfs:
        if hang is not None:
            hang(path)
        if path not in table:
            raise PermissionError(13, "Permission denied", path)
        return table[path]

    return statvfs
