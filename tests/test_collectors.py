"""Host collectors against fake OS sources, with hand-computed expected values."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from agent.catalogue import METRICS
from agent.collectors import mounts as mounts_module
from agent.collectors.cpu import CpuCollector
from agent.collectors.diskio import DiskIOCollector
from agent.collectors.memory import MemoryCollector, swap_memory
from agent.collectors.network import NetworkCollector
from agent.collectors.storage import STATVFS_THREADS, StorageCollector
from agent.config import DEFAULT_IGNORED_FSTYPES, NetworkConfig
from agent.filters import NameFilter
from agent.rates import CounterTracker
from agent.samples import Sample
from tests.fakes.host import (
    IOWAIT_BACKWARDS,
    SANDBOXED_UNIT_MOUNTS,
    TRAINING_HOST_MOUNTINFO,
    TRAINING_HOST_MOUNTS,
    TRAINING_HOST_STATVFS,
    DiskCounters,
    FakeClock,
    NicCounters,
    Sequence,
    StatVfs,
    SwapMemory,
    VirtualMemory,
    cpu,
    many_mounts_mountinfo,
    statvfs_from,
)


def by_name(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.dimensions): s.value for s in samples}


def test_counter_tracker_primes_then_rates_and_never_goes_negative() -> None:
    tracker = CounterTracker()
    assert tracker.rate("eth0", 1000, now=10.0) is None  # first reading only primes
    assert tracker.rate("eth0", 3000, now=12.0) == 1000.0
    assert tracker.rate("eth0", 500, now=13.0) is None  # wrapped or reset: no sample
    assert tracker.rate("eth0", 1500, now=15.0) == 500.0  # re-primed at 500
    assert tracker.rate("eth0", 1500, now=15.0) is None  # no time elapsed


def test_counter_tracker_forgets_vanished_keys() -> None:
    tracker = CounterTracker()
    tracker.rate("sdb", 10, now=1.0)
    tracker.forget_unseen()
    tracker.forget_unseen()  # sdb not read in this cycle: forgotten
    assert tracker.rate("sdb", 20, now=2.0) is None


def test_cpu_utilization_iowait_and_steal_from_deltas() -> None:
    # Δ: user 30, system 10, idle 40, iowait 15, steal 5, guest 10 (already inside user) → total 100.
    times = Sequence(cpu(user=100, system=50, idle=500, iowait=20, steal=5, guest=0),
                     cpu(user=130, system=60, idle=540, iowait=35, steal=10, guest=10))
    collector = CpuCollector(cpu_times=times)
    assert collector.collect() == []  # priming
    values = by_name(collector.collect())
    # busy = 100 − idle 40 − iowait 15 = 45 → 45 %
    assert values[("CPUUtilization", ())] == pytest.approx(45.0)
    assert values[("CPUIOWait", ())] == pytest.approx(15.0)
    assert values[("CPUSteal", ())] == pytest.approx(5.0)


def test_cpu_field_going_backwards_counts_as_zero_and_keeps_the_interval() -> None:
    collector = CpuCollector(cpu_times=Sequence(*IOWAIT_BACKWARDS))
    assert collector.collect() == []  # priming
    # iowait's −400 ticks count as 0: total = 1200 + 400 + 2200 + 100 + 100 = 4000 ticks;
    # busy = 4000 − idle 2200 = 1800 → 45 %, iowait 0 %, steal 100 / 4000 = 2.5 %.
    assert by_name(collector.collect()) == {
        ("CPUUtilization", ()): pytest.approx(45.0),
        ("CPUIOWait", ()): 0.0,
        ("CPUSteal", ()): pytest.approx(2.5),
    }


def test_cpu_per_core_only_when_configured_and_counter_reset_gives_nothing() -> None:
    whole = Sequence(cpu(idle=10), cpu(user=1, idle=11), cpu(user=0, idle=0))
    cores = Sequence([cpu(idle=5), cpu(idle=5)], [cpu(user=1, idle=5), cpu(idle=7)], [cpu(), cpu()])

    def cpu_times(percpu: bool = False) -> object:
        return cores() if percpu else whole()

    collector = CpuCollector(per_core=True, cpu_times=cpu_times)
    collector.collect()
    values = by_name(collector.collect())
    assert values[("CPUUtilization", ())] == pytest.approx(50.0)
    assert values[("CPUCoreUtilization", (("Core", "0"),))] == pytest.approx(100.0)
    assert values[("CPUCoreUtilization", (("Core", "1"),))] == pytest.approx(0.0)
    assert collector.collect() == []  # every counter went backwards (host counters reset)


def test_memory_utilization_and_swap_absent_without_swap() -> None:
    collector = MemoryCollector(
        virtual_memory=lambda: VirtualMemory(total=64 * 2**30, available=16 * 2**30),
        swap_memory=lambda: SwapMemory(total=0, used=0),
    )
    assert by_name(collector.collect()) == {
        ("MemoryUtilization", ()): 75.0,
        ("MemoryAvailable", ()): float(16 * 2**30),
    }
    with_swap = MemoryCollector(
        virtual_memory=lambda: VirtualMemory(total=100, available=40),
        swap_memory=lambda: SwapMemory(total=8, used=2),
    )
    assert by_name(with_swap.collect())[("SwapUtilization", ())] == 25.0


MEMINFO_HEAD = "MemTotal:       65536000 kB\nMemFree:         1024000 kB\nSwapCached:            0 kB\n"


def test_swap_is_read_from_meminfo_as_psutil_reads_it(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO_HEAD + "SwapTotal:       8388608 kB\nSwapFree:        6291456 kB\nZswap: 0 kB\n")
    assert swap_memory(str(meminfo)) == (8 * 2**30, 2 * 2**30)
    real = psutil.swap_memory()
    assert swap_memory()[0] == real.total  # used may move between the two reads; the total does not


def test_swap_without_swap_lines_in_meminfo_is_psutils_answer(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO_HEAD)  # psutil then asks sysinfo(2); so does the agent, through psutil
    assert swap_memory(str(meminfo)).total == psutil.swap_memory().total


def test_storage_ignores_pseudo_filesystems_and_computes_df_utilization() -> None:
    collector = StorageCollector(
        fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
        mount_table=lambda: TRAINING_HOST_MOUNTS,
        statvfs=statvfs_from(TRAINING_HOST_STATVFS),
    )
    # "/": used 600,000 blocks, usable = 600,000 + 350,000 → 63.157894…%; inodes 49,152 / 65,536 = 75 %.
    # "/data": 25 % used; no inode table → no inode series. tmpfs, overlay, loop, proc, cgroup2, fuse: skipped.
    assert by_name(collector.collect()) == {
        ("StorageUtilization", (("MountPath", "/"),)): pytest.approx(600_000 / 950_000 * 100),
        ("StorageInodeUtilization", (("MountPath", "/"),)): 75.0,
        ("StorageUtilization", (("MountPath", "/data"),)): 25.0,
    }


def test_storage_include_and_exclude_by_mount_and_fstype() -> None:
    collector = StorageCollector(
        mounts=NameFilter(exclude=("/data",)),
        fstypes=NameFilter(include=("tmpfs",), exclude=DEFAULT_IGNORED_FSTYPES),
        mount_table=lambda: TRAINING_HOST_MOUNTS,
        statvfs=statvfs_from({**TRAINING_HOST_STATVFS, "/run": StatVfs(4096, 100, 50, 50, 10, 5)}),
    )
    assert sorted({dict(s.dimensions)["MountPath"] for s in collector.collect()}) == ["/", "/run"]


def mount_paths(samples: list[Sample]) -> list[str]:
    return sorted({dict(s.dimensions)["MountPath"] for s in samples if s.name.startswith("StorageUtil")})


def skipped(samples: list[Sample]) -> dict[str, float]:
    return {dict(s.dimensions)["Reason"]: s.value for s in samples if s.name == "StorageMountsSkipped"}


class Hangs:
    """statvfs that blocks on the paths named until released, as a dead hard-mounted NFS server does."""

    def __init__(self, table: dict[str, StatVfs], *paths: str) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []
        self._paths = set(paths)
        self.statvfs = statvfs_from(table, hang=self._hang)

    def _hang(self, path: str) -> None:
        self.calls.append(path)
        if path in self._paths:
            self.release.wait(30)


def test_hung_mount_parks_one_thread_is_published_and_logged_once_until_it_recovers() -> None:
    hangs = Hangs(TRAINING_HOST_STATVFS, "/data")
    collector = StorageCollector(
        fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES), timeout=0.2,
        mount_table=lambda: TRAINING_HOST_MOUNTS, statvfs=hangs.statvfs,
    )
    with capture_logs() as logs:
        first = collector.collect()
        second = collector.collect()  # /data still hung: not asked again, "/" still published
    assert (mount_paths(first), skipped(first)) == (["/"], {"timeout": 1.0})
    assert (mount_paths(second), skipped(second)) == (["/"], {"timeout": 1.0})
    assert hangs.calls.count("/data") == 1
    assert [(line["event"], line["mount"]) for line in logs] == [("statvfs_timeout", "/data")]
    hangs.release.set()
    with capture_logs() as logs:
        waited = 0  # cycles until the parked thread has answered /data's old call
        # Bounded in time, not in cycles: a cycle takes tens of microseconds, and the woken thread waits for the
        # GIL, which this loop gives up only every 5 ms (sys.getswitchinterval), later still on a busy machine.
        deadline = time.monotonic() + 10
        while "/data" not in mount_paths(third := collector.collect()):
            waited += 1
            assert time.monotonic() < deadline
        assert (mount_paths(third), skipped(third)) == (["/", "/data"], {})
        hangs.release.clear()
        collector.collect()  # hangs again: a new condition, logged again
    assert [(line["event"], line["mount"]) for line in logs] == [("statvfs_timeout", "/data")]
    assert collector.skipped == {"timeout": 3 + waited}
    hangs.release.set()


def test_sixty_mounts_are_read_by_a_few_threads_not_one_each() -> None:
    # Under the unit's TasksMax=64 one thread per mount per cycle could not even start: every series lost.
    table = {"/": StatVfs(4096, 100, 50, 50, 10, 5), **{f"/mnt/vol{i:02d}": StatVfs(4096, 100, 75, 75, 10, 5)
                                                          for i in range(59)}}
    threads: set[int] = set()

    def statvfs(path: str) -> StatVfs:
        threads.add(threading.get_ident())
        return table[path]

    mounts = mounts_module.parse(many_mounts_mountinfo(60))
    collector = StorageCollector(mount_table=lambda: mounts, statvfs=statvfs)
    for _ in range(3):
        samples = collector.collect()
        assert len(mount_paths(samples)) == 60
    assert collector.started_threads == STATVFS_THREADS
    assert len(threads) <= STATVFS_THREADS


def test_close_stops_the_idle_threads_and_leaves_a_parked_one_to_its_call() -> None:
    hangs = Hangs(TRAINING_HOST_STATVFS, "/data")
    collector = StorageCollector(fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES), timeout=0.2,
                                 mount_table=lambda: TRAINING_HOST_MOUNTS, statvfs=hangs.statvfs)
    others = set(threading.enumerate())
    collector.collect()
    mine = set(threading.enumerate()) - others
    assert len(mine) == 2  # one for "/", one for "/data"
    assert collector.close(timeout=5.0)  # a reload replaces the collector: its threads must not pile up
    alive = [thread for thread in mine if thread.is_alive()]
    assert len(alive) == 1  # the idle one stopped; the one parked in /data stops when its call returns
    parked = alive[0]
    hangs.release.set()
    parked.join(5.0)
    assert not parked.is_alive()


def test_every_thread_parked_on_a_hung_mount_skips_the_rest_and_says_so() -> None:
    table = {"/": StatVfs(4096, 100, 50, 50, 10, 5), **{f"/mnt/vol{i:02d}": StatVfs(4096, 100, 75, 75, 10, 5)
                                                          for i in range(4)}}
    hangs = Hangs(table, "/", "/mnt/vol00")
    mounts = mounts_module.parse(many_mounts_mountinfo(5))
    collector = StorageCollector(mount_table=lambda: mounts, statvfs=hangs.statvfs, timeout=0.2, threads=1,
                                 parked_threads=1)
    with capture_logs() as logs:
        first = collector.collect()  # one thread: "/" hangs in it and every later call waits behind it
        assert (mount_paths(first), skipped(first)) == ([], {"timeout": 5.0})
        second = collector.collect()  # a second thread replaces the parked one; it parks in /mnt/vol00
        assert (mount_paths(second), skipped(second)) == ([], {"timeout": 5.0})
        third = collector.collect()  # the limit of 2 threads is reached: nothing can be read
        assert (mount_paths(third), skipped(third)) == ([], {"timeout": 5.0})
    assert collector.started_threads == 2
    assert [line["event"] for line in logs] == ["statvfs_timeout", "statvfs_no_thread", "statvfs_timeout"]
    hangs.release.set()


def test_statvfs_error_is_counted_and_logged_once_per_mount() -> None:
    collector = StorageCollector(fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
                                 mount_table=lambda: TRAINING_HOST_MOUNTS,
                                 statvfs=statvfs_from({"/": TRAINING_HOST_STATVFS["/"]}))
    with capture_logs() as logs:
        first, second = collector.collect(), collector.collect()
    assert (mount_paths(first), skipped(first)) == (["/"], {"error": 1.0})
    assert skipped(second) == {"error": 1.0}
    assert [(line["event"], line["mount"]) for line in logs] == [("statvfs_failed", "/data")]


def test_storage_publishes_one_series_per_filesystem_in_a_sandboxed_unit() -> None:
    # tests/fakes/mountinfo/README.md: /, /boot/efi, /data, /fsx; not /home, /root, /tmp, /var/tmp, the state
    # directory (sandbox mounts of the root filesystem), /srv/datasets or /var/cache/models (/data again).
    table = {path: StatVfs(4096, 1000, 500, 400, 100, 50) for path in ("/", "/boot/efi", "/data", "/fsx")}
    calls: list[str] = []
    collector = StorageCollector(fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
                                 mount_table=lambda: SANDBOXED_UNIT_MOUNTS,
                                 statvfs=statvfs_from(table, hang=calls.append))
    assert mount_paths(collector.collect()) == ["/", "/boot/efi", "/data", "/fsx"]
    assert sorted(calls) == ["/", "/boot/efi", "/data", "/fsx"]


def test_a_filesystem_the_sandbox_covers_is_not_read_and_said_once() -> None:
    mounts = mounts_module.parse(
        TRAINING_HOST_MOUNTINFO + "40 23 0:24 /systemd/inaccessible/dir /data ro - tmpfs tmpfs rw\n"
    )
    calls: list[str] = []
    collector = StorageCollector(fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES), mount_table=lambda: mounts,
                                 statvfs=statvfs_from(TRAINING_HOST_STATVFS, hang=calls.append))
    with capture_logs() as logs:
        assert mount_paths(collector.collect()) == mount_paths(collector.collect()) == ["/"]
    assert calls == ["/", "/"]  # statvfs("/data") would read the covering tmpfs under /data's name
    assert [(line["event"], line["mount"]) for line in logs] == [("storage_filesystem_hidden", "/data")]


def test_excluding_a_filesystems_mount_point_does_not_bring_it_back_under_a_bind_mount() -> None:
    collector = StorageCollector(mounts=NameFilter(exclude=("/data", "/boot/*")),
                                 fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
                                 mount_table=lambda: SANDBOXED_UNIT_MOUNTS,
                                 statvfs=statvfs_from({"/": StatVfs(4096, 1000, 500, 400, 100, 50),
                                                       "/fsx": StatVfs(4096, 1000, 500, 400, 0, 0)}))
    assert mount_paths(collector.collect()) == ["/", "/fsx"]


def test_storage_follows_the_mount_table_when_it_changes_between_cycles() -> None:
    # The filesystems are worked out again only when the table changed: a mount, an unmount, or a mount on
    # top that hides one must each show in the next cycle.
    root, data = TRAINING_HOST_MOUNTS[0], TRAINING_HOST_MOUNTS[1]
    covered = mounts_module.parse(
        TRAINING_HOST_MOUNTINFO + "40 23 0:24 /systemd/inaccessible/dir /data ro - tmpfs tmpfs rw\n")
    tables = [[root], [root], [root, data], [root, data], covered, [root]]
    calls: list[str] = []
    collector = StorageCollector(fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES), mount_table=lambda: tables.pop(0),
                                 statvfs=statvfs_from(TRAINING_HOST_STATVFS, hang=calls.append))
    assert [mount_paths(collector.collect()) for _ in range(6)] == [["/"], ["/"], ["/", "/data"], ["/", "/data"],
                                                                   ["/"], ["/"]]
    assert calls == ["/", "/", "/", "/data", "/", "/data", "/", "/"]


def test_disk_throughput_whole_disks_only_with_wrap_giving_no_sample() -> None:
    clock = FakeClock()
    counters = Sequence(
        {"nvme0n1": DiskCounters(1000, 2000, 10, 20), "nvme0n1p1": DiskCounters(1, 1, 1, 1),
         "loop0": DiskCounters(0, 0, 0, 0)},
        {"nvme0n1": DiskCounters(5000, 2000 + 8192, 30, 24), "nvme0n1p1": DiskCounters(2, 2, 2, 2),
         "loop0": DiskCounters(9, 9, 9, 9)},
        {"nvme0n1": DiskCounters(100, 20_000, 40, 30), "nvme0n1p1": DiskCounters(3, 3, 3, 3),
         "loop0": DiskCounters(9, 9, 9, 9)},
    )
    collector = DiskIOCollector(
        devices=NameFilter(exclude=("loop*",)), disk_io_counters=counters,
        whole_disks=lambda: {"nvme0n1", "loop0"}, monotonic=clock,
    )
    assert collector.collect() == []
    clock.advance(2.0)
    assert by_name(collector.collect()) == {
        ("DiskReadBytesPerSecond", (("Device", "nvme0n1"),)): 2000.0,
        ("DiskWriteBytesPerSecond", (("Device", "nvme0n1"),)): 4096.0,
        ("DiskReadOpsPerSecond", (("Device", "nvme0n1"),)): 10.0,
        ("DiskWriteOpsPerSecond", (("Device", "nvme0n1"),)): 2.0,
    }
    clock.advance(1.0)
    # read_bytes went backwards: that one series is absent; the others carry on.
    assert by_name(collector.collect()) == {
        ("DiskWriteBytesPerSecond", (("Device", "nvme0n1"),)): 20_000.0 - 10_192,
        ("DiskReadOpsPerSecond", (("Device", "nvme0n1"),)): 10.0,
        ("DiskWriteOpsPerSecond", (("Device", "nvme0n1"),)): 6.0,
    }


def test_network_throughput_excludes_loopback() -> None:
    clock = FakeClock()
    counters = Sequence(
        {"lo": NicCounters(0, 0, 0, 0), "ens5": NicCounters(1_000, 2_000, 10, 20)},
        {"lo": NicCounters(500, 500, 5, 5), "ens5": NicCounters(11_000, 7_000, 60, 30)},
    )
    collector = NetworkCollector(net_io_counters=counters, monotonic=clock)
    collector.collect()
    clock.advance(5.0)
    assert by_name(collector.collect()) == {
        ("NetworkReceiveBytesPerSecond", (("Interface", "ens5"),)): 2000.0,
        ("NetworkTransmitBytesPerSecond", (("Interface", "ens5"),)): 1000.0,
        ("NetworkReceivePacketsPerSecond", (("Interface", "ens5"),)): 10.0,
        ("NetworkTransmitPacketsPerSecond", (("Interface", "ens5"),)): 2.0,
    }


def test_network_default_excludes_kubernetes_pod_interfaces() -> None:
    # An EKS GPU node: the primary ENI, a secondary ENI the VPC CNI attached, and one pod veth per CNI.
    names = ("ens5", "ens6", "enX0", "eni3f2a1b0c9d8", "cali1a2b3c4d5e6", "lxc5e6f7a8b9c0", "veth1234", "lo")
    clock = FakeClock()
    counters = Sequence({name: NicCounters(0, 0, 0, 0) for name in names},
                        {name: NicCounters(10, 10, 10, 10) for name in names})
    collector = NetworkCollector(
        interfaces=NameFilter(exclude=NetworkConfig().exclude_interfaces), net_io_counters=counters, monotonic=clock
    )
    collector.collect()
    clock.advance(1.0)
    assert sorted({dict(s.dimensions)["Interface"] for s in collector.collect()}) == ["enX0", "ens5", "ens6"]


def test_every_host_sample_is_in_the_catalogue_with_its_unit() -> None:
    clock = FakeClock()
    collectors = [
        CpuCollector(cpu_times=Sequence(cpu(idle=1), cpu(user=1, idle=2))),
        MemoryCollector(virtual_memory=lambda: VirtualMemory(10, 5), swap_memory=lambda: SwapMemory(4, 1)),
        StorageCollector(mount_table=lambda: TRAINING_HOST_MOUNTS[:1],
                         statvfs=statvfs_from(TRAINING_HOST_STATVFS)),
        NetworkCollector(net_io_counters=Sequence({"ens5": NicCounters(0, 0, 0, 0)},
                                                  {"ens5": NicCounters(1, 1, 1, 1)}), monotonic=clock),
    ]
    for collector in collectors:
        collector.collect()
    clock.advance(1.0)
    samples = [sample for collector in collectors for sample in collector.collect()]
    assert len(samples) == 12
    for sample in samples:
        metric = METRICS[sample.name]
        assert sample.unit == metric.unit
        assert tuple(name for name, _ in sample.dimensions) == tuple(sorted(metric.dimensions))
