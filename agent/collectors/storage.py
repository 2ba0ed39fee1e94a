"""Space and inode utilization per mounted filesystem, with every statvfs call time-bounded."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import psutil
import structlog

from agent.catalogue import METRICS
from agent.collectors.blockdev import BlockDeviceNames
from agent.filters import NameFilter
from agent.logs import LogOnce
from agent.samples import Sample

log = structlog.get_logger()


class _Statvfs:
    """One statvfs call on a daemon thread: a hung NFS mount leaves a parked thread, not a hung agent."""

    def __init__(self, statvfs: Callable[[str], Any], path: str) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: OSError | None = None
        thread = threading.Thread(target=self._run, args=(statvfs, path), name=f"statvfs {path}", daemon=True)
        thread.start()

    def _run(self, statvfs: Callable[[str], Any], path: str) -> None:
        try:
            self.result = statvfs(path)
        except OSError as error:
            self.error = error
        finally:
            self.done.set()


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
        disk_partitions: Callable[..., Any] = psutil.disk_partitions,
        statvfs: Callable[[str], Any] = os.statvfs,
    ) -> None:
        self._mounts = mounts
        self._fstypes = fstypes
        self._timeout = timeout
        self._device_dimensions = device_dimensions
        self._inodes_free = inodes_free  # the CloudWatch agent's disk_inodes_free (cwagent)
        self._device_names = device_names or BlockDeviceNames()
        self._disk_partitions = disk_partitions
        self._statvfs = statvfs
        self._hung: dict[str, _Statvfs] = {}
        self._warn = LogOnce(log)
        self.skipped_hung = 0  # mounts skipped because statvfs did not answer in time; a self-metric

    def _wanted(self, partition: Any) -> bool:
        if partition.device.startswith("/dev/loop"):
            return False
        if not self._mounts.allows(partition.mountpoint):
            return False
        # include_fstypes rescues a type from the default ignore list; it does not narrow the rest.
        if any(fnmatchcase(partition.fstype, pattern) for pattern in self._fstypes.include):
            return True
        return not any(fnmatchcase(partition.fstype, pattern) for pattern in self._fstypes.exclude)

    def collect(self) -> list[Sample]:
        partitions = [p for p in self._disk_partitions(all=True) if self._wanted(p)]
        # Start every call first, then wait on one shared deadline: one hung mount costs one timeout.
        calls: dict[str, _Statvfs] = {}
        devices: dict[str, dict[str, str]] = {}
        for partition in partitions:
            path = partition.mountpoint
            if path in calls:
                continue  # the same path mounted twice: the top mount is what statvfs sees
            previous = self._hung.get(path)
            if previous is not None and not previous.done.is_set():
                self.skipped_hung += 1
                continue  # still hung from an earlier cycle: do not pile up threads on it
            self._hung.pop(path, None)
            calls[path] = _Statvfs(self._statvfs, path)
            devices[path] = self._device(partition) if self._device_dimensions else {}
        samples: list[Sample] = []
        deadline = time.monotonic() + self._timeout
        for path, call in calls.items():
            if not call.done.wait(max(0.0, deadline - time.monotonic())):
                self._hung[path] = call
                self.skipped_hung += 1
                self._warn.warning(("hung", path), "statvfs_timeout", mount=path, timeout_s=self._timeout)
                continue
            self._warn.reset(("hung", path))
            if call.error is not None:
                self._warn.warning(("error", path), "statvfs_failed", mount=path, error=str(call.error))
                continue
            samples += _utilization(call.result, MountPath=path, **devices[path])
            if self._inodes_free and call.result.f_blocks > 0:  # telegraf skips a filesystem of size 0
                samples.append(METRICS["StorageInodesFree"].sample(call.result.f_ffree, MountPath=path,
                                                                   **devices[path]))
        return samples

    def _device(self, partition: Any) -> dict[str, str]:
        """The device and fstype dimension values as the CloudWatch agent writes them."""
        return {"Device": self._device_names.name(partition.device, partition.mountpoint), "FSType": partition.fstype}


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
