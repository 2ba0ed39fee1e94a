"""Space and inode utilization per filesystem, read by a few bounded threads with a deadline per cycle.

One series per filesystem, not per mount point: which mount names a filesystem is `mounts.filesystems`'
rule (bind mounts and systemd's sandbox mounts are the same filesystem again).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import structlog

from agent.catalogue import METRICS
from agent.collectors.blockdev import BlockDeviceNames
from agent.collectors.mounts import Filesystem, Mount, MountTable, filesystems
from agent.filters import NameFilter
from agent.logs import LogOnce
from agent.samples import Sample
from agent.selfstats import COMPONENT

log = structlog.get_logger()

# statvfs threads that serve one cycle, and how many more may stay parked in hung mounts (a hung mount is
# not asked again while its call is out, so each holds one thread). 4 + 4 is far inside the unit's
# TasksMax=64; one thread per mount per cycle was not (60 mounts and every series lost).
STATVFS_THREADS = 4
PARKED_THREADS = 4


class _Call:
    """One statvfs call: queued, then run by a pool thread unless the cycle's deadline cancelled it first."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done = threading.Event()
        self.result: Any = None
        self.error: Exception | None = None
        self.started = False
        self.cancelled = False


class _StatvfsThreads:
    """Daemon threads taking statvfs calls from one queue.

    Daemon threads, because one blocked in a hung NFS mount cannot be interrupted and must not hold up
    the agent's exit (concurrent.futures joins its threads at exit).
    """

    def __init__(self, statvfs: Callable[[str], Any], threads: int, parked: int) -> None:
        self._statvfs = statvfs
        self._free_target = threads
        self._limit = threads + parked
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()  # None: a thread is to stop
        self._lock = threading.Lock()
        self._all: list[threading.Thread] = []
        self._busy: set[threading.Thread] = set()  # inside statvfs now: the hung ones are parked
        self.started_threads = 0  # for tests and the bench

    def submit(self, paths: Sequence[str]) -> list[_Call]:
        calls = [_Call(path) for path in paths]
        with self._lock:
            self._all = [thread for thread in self._all if thread.is_alive()]
            free = len(self._all) - len(self._busy)
            wanted = min(self._free_target, len(calls)) - free
            for _ in range(max(0, min(wanted, self._limit - len(self._all)))):
                thread = threading.Thread(target=self._serve, name="statvfs", daemon=True)
                thread.start()
                self._all.append(thread)
                self.started_threads += 1
        for call in calls:
            self._queue.put(call)
        return calls

    def cancel(self, call: _Call) -> bool:
        """True if the call had not started and now never will."""
        with self._lock:
            if call.started:
                return False
            call.cancelled = True
            return True

    def close(self, timeout: float) -> bool:
        """Stop every thread (on a reload the collector is replaced). One parked in a hung mount stops when
        its call returns, and is not waited for; False if an idle one did not stop within `timeout`."""
        with self._lock:
            threads, idle = list(self._all), [thread for thread in self._all if thread not in self._busy]
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in idle:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in idle)

    def _serve(self) -> None:
        me = threading.current_thread()
        while (call := self._queue.get()) is not None:
            with self._lock:
                if call.cancelled:
                    continue
                call.started = True
                self._busy.add(me)
            try:
                call.result = self._statvfs(call.path)
            except Exception as error:  # an OSError as a rule; anything else must not kill the thread either
                call.error = error
            finally:
                with self._lock:
                    self._busy.discard(me)
                call.done.set()


class StorageCollector:
    name = "storage"

    def __init__(
        self,
        *,
        mounts: NameFilter = NameFilter(),  # noqa: B008 - immutable
        fstypes: NameFilter = NameFilter(),  # noqa: B008 - immutable
        timeout: float = 2.0,
        device_dimensions: bool = False,
        inodes_free: bool = False,
        device_names: BlockDeviceNames | None = None,
        mount_table: Callable[[], list[Mount]] | None = None,  # MountTable() of /proc/self/mountinfo
        statvfs: Callable[[str], Any] = os.statvfs,
        threads: int = STATVFS_THREADS,
        parked_threads: int = PARKED_THREADS,
    ) -> None:
        self._mounts = mounts
        self._fstypes = fstypes
        self._timeout = timeout
        self._device_dimensions = device_dimensions
        self._inodes_free = inodes_free  # the CloudWatch agent's disk_inodes_free (cwagent)
        self._device_names = device_names or BlockDeviceNames()
        self._mount_table = mount_table or MountTable()
        self._threads = _StatvfsThreads(statvfs, threads, parked_threads)
        self._hung: dict[str, _Call] = {}  # by statvfs path: calls still out after their cycle's deadline
        # The mount table of the last cycle and its wanted filesystems: worked out again only when the table
        # changed (working them out costs twice what reading and parsing the table does).
        self._table: list[Mount] | None = None
        self._filesystems: list[Filesystem] = []
        self._warn = LogOnce(log)
        self.skipped: Counter[str] = Counter()  # totals by reason, for tests and the bench

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the statvfs threads; see `_StatvfsThreads.close`."""
        return self._threads.close(timeout)

    @property
    def started_threads(self) -> int:
        """statvfs threads started so far; never more than threads + parked_threads."""
        return self._threads.started_threads

    def _wanted(self, mount: Mount) -> bool:
        if mount.device.startswith("/dev/loop"):
            return False
        if not self._mounts.allows(mount.mountpoint):
            return False
        # include_fstypes rescues a type from the default ignore list; it does not narrow the rest.
        if any(fnmatchcase(mount.fstype, pattern) for pattern in self._fstypes.include):
            return True
        return not any(fnmatchcase(mount.fstype, pattern) for pattern in self._fstypes.exclude)

    def collect(self) -> list[Sample]:
        skipped: Counter[str] = Counter()
        wanted: dict[str, Mount] = {}  # statvfs path → the mount that names the filesystem
        table = self._mount_table()
        if table != self._table:
            self._table, self._filesystems = table, filesystems(table, self._wanted)
        for filesystem in self._filesystems:
            name = filesystem.mount.mountpoint
            if filesystem.reachable is None:
                self._warn.info(("hidden", name), "storage_filesystem_hidden", mount=name,
                                reason="every mount of it is covered by another mount in this namespace")
                continue
            self._warn.reset(("hidden", name))
            path = filesystem.reachable.mountpoint
            previous = self._hung.get(path)
            if previous is not None and not previous.done.is_set():
                skipped["timeout"] += 1  # still hung from an earlier cycle: it keeps its one parked thread
                continue
            self._hung.pop(path, None)
            wanted[path] = filesystem.mount
        calls = self._threads.submit(list(wanted))
        # Event waits are wall-clock waits, so the deadline is too: tests use short timeouts, not a fake clock.
        deadline = time.monotonic() + self._timeout
        samples: list[Sample] = []
        cancelled = False
        for call in calls:
            mount = wanted[call.path]
            if not call.done.wait(max(0.0, deadline - time.monotonic())):
                skipped["timeout"] += 1
                if self._threads.cancel(call):  # never started: every thread was busy on a hung mount
                    cancelled = True
                    self._warn.warning("no_thread", "statvfs_no_thread", mount=mount.mountpoint,
                                       threads=self._threads.started_threads)
                else:
                    self._hung[call.path] = call
                    self._warn.warning(("hung", call.path), "statvfs_timeout", mount=mount.mountpoint,
                                       timeout_s=self._timeout)
                continue
            self._warn.reset(("hung", call.path))
            if call.error is not None:
                skipped["error"] += 1
                self._warn.warning(("error", call.path), "statvfs_failed", variant=str(call.error),
                                   mount=mount.mountpoint, error=str(call.error))
                continue
            self._warn.reset(("error", call.path))
            dimensions = {"MountPath": mount.mountpoint, **(self._device(mount) if self._device_dimensions else {})}
            samples += _utilization(call.result, **dimensions)
            if self._inodes_free and call.result.f_blocks > 0:  # telegraf skips a filesystem of size 0
                samples.append(METRICS["StorageInodesFree"].sample(call.result.f_ffree, **dimensions))
        if not cancelled:
            self._warn.reset("no_thread")
        self.skipped += skipped
        samples += [METRICS["StorageMountsSkipped"].sample(count, Reason=reason, Component=COMPONENT)
                    for reason, count in sorted(skipped.items())]
        return samples

    def _device(self, mount: Mount) -> dict[str, str]:
        """The device and fstype dimension values as the CloudWatch agent writes them."""
        return {"Device": self._device_names.name(mount.device, mount.mountpoint), "FSType": mount.fstype}


def _utilization(stat: Any, **dims: str) -> list[Sample]:
    samples = []
    # As df: space reserved for root counts neither as used nor as available to users.
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    usable = used + stat.f_bavail * stat.f_frsize
    if usable > 0:
        samples.append(METRICS["StorageUtilization"].sample(used / usable * 100, **dims))
    if stat.f_files > 0:  # some filesystems (btrfs, vfat) report no inode table
        inodes_used = stat.f_files - stat.f_ffree
        samples.append(METRICS["StorageInodeUtilization"].sample(inodes_used / stat.f_files * 100, **dims))
    return samples
