"""Hand-written stand-ins for the OS sources the host collectors read, with named scenarios."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.collectors import mounts

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
# psutil.virtual_memory's fields as the collectors read them; `cached` is psutil's (and gopsutil's):
# /proc/meminfo Cached + SReclaimable, shared memory included.
VirtualMemory = namedtuple("VirtualMemory", "total available free buffers cached", defaults=(0, 0, 0))
SwapMemory = namedtuple("SwapMemory", "total used")
StatVfs = namedtuple("StatVfs", "f_frsize f_blocks f_bfree f_bavail f_files f_ffree")
DiskCounters = namedtuple("DiskCounters", "read_bytes write_bytes read_count write_count busy_time", defaults=(0,))
NicCounters = namedtuple("NicCounters", "bytes_recv bytes_sent packets_recv packets_sent")


def cpu(user: float = 0, system: float = 0, idle: float = 0, iowait: float = 0, steal: float = 0,
        guest: float = 0) -> CpuTimes:
    return CpuTimes(user, 0.0, system, idle, iowait, 0.0, 0.0, steal, guest, 0.0)


def proc_stat_cpu(line: str) -> CpuTimes:
    """A `cpu` line of /proc/stat in USER_HZ ticks (100 a second on every Linux ABI), as psutil reads it."""
    name, *ticks = line.split()
    assert name.startswith("cpu") and len(ticks) == 10, line
    return CpuTimes(*(int(tick) / 100 for tick in ticks))


# Two reads of /proc/stat's aggregate line 10 s apart on an idle-ish 4-vCPU host, where iowait went
# backwards as the kernel allows ("the value of iowait field in /proc/stat will decrease in certain
# conditions", Documentation/filesystems/proc.rst): with NO_HZ an idle CPU's current idle period counts as
# iowait while a task waits on I/O, and as idle once that I/O completed, so what was read as iowait shrinks.
# Δ in ticks: user 1200, nice 0, system 400, idle 2200, iowait −400, irq 0, softirq 100, steal 100.
IOWAIT_BACKWARDS = (
    proc_stat_cpu("cpu  1234500 310 456700 98765400 23400 0 12300 4500 0 0"),
    proc_stat_cpu("cpu  1235700 310 457100 98767600 23000 0 12400 4600 0 0"),
)


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


# A GPU training host as /proc/self/mountinfo shows it: root on NVMe, a data volume, and the pseudo
# filesystems every Linux host has.
TRAINING_HOST_MOUNTINFO = """\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard,errors=remount-ro
23 22 259:4 / /data rw,noatime shared:2 - xfs /dev/nvme1n1 rw,attr2,inode64,logbufs=8,logbsize=32k,noquota
24 22 0:24 / /run rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,size=6543216k,mode=755,inode64
25 22 0:60 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/l/A,upperdir=/abc/diff
26 22 7:3 / /snap/core/1 ro,nodev,relatime shared:4 - squashfs /dev/loop3 ro,errors=continue
27 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
28 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:6 - cgroup2 cgroup2 rw,nsdelegate
29 22 0:61 / /mnt/s3 rw,nosuid,nodev,relatime shared:7 - fuse.s3fs s3fs rw,user_id=0,group_id=0
"""
TRAINING_HOST_MOUNTS = mounts.parse(TRAINING_HOST_MOUNTINFO)

MOUNTINFO = Path(__file__).parent / "mountinfo"
SANDBOXED_UNIT_MOUNTS = mounts.read(str(MOUNTINFO / "sandboxed_unit.txt"))

TRAINING_HOST_STATVFS = {
    # 4 KiB blocks: 1,000,000 total, 400,000 free of which 350,000 available to users.
    "/": StatVfs(4096, 1_000_000, 400_000, 350_000, 65_536, 16_384),
    # No inode table (f_files = 0): inode utilization is absent, not zero.
    "/data": StatVfs(4096, 2_000_000, 1_500_000, 1_500_000, 0, 0),
}


def many_mounts_mountinfo(count: int) -> str:
    """A host with `count` filesystems of its own (EBS volumes at /mnt/vol00…), as mountinfo lists them."""
    lines = ["22 1 259:0 / / rw,relatime shared:1 - xfs /dev/nvme0n1p1 rw,attr2,inode64,noquota"]
    lines += [f"{30 + i} 22 259:{i + 1} / /mnt/vol{i:02d} rw,relatime shared:{i + 2} - xfs /dev/nvme{i + 1}n1 "
              "rw,attr2,inode64,noquota" for i in range(count - 1)]
    return "\n".join(lines) + "\n"


def statvfs_from(table: dict[str, StatVfs], hang: Callable[[str], None] | None = None) -> Callable[[str], StatVfs]:
    def statvfs(path: str) -> StatVfs:
        if hang is not None:
            hang(path)
        if path not in table:
            raise PermissionError(13, "Permission denied", path)
        return table[path]

    return statvfs
