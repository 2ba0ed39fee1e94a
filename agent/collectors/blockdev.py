"""The real block device behind a mount the kernel lists as /dev/root.

The mount table names the root filesystem mounted from the kernel command line `/dev/root`, a name no
device has. The CloudWatch agent's disk input resolves it through sysfs (gopsutil's disk.Partitions:
readlink /sys/dev/block/MAJ:MIN, whose last component is the kernel's device name), so its `device`
dimension reads `nvme0n1p1`, never `root`. MAJ:MIN is the filesystem's device number, which stat()
of the mount point returns as st_dev (mountinfo's third field is the same number).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import structlog

from agent.logs import LogOnce

log = structlog.get_logger()

ROOT = "/dev/root"


def _uevent_name(text: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return value
    return None


class BlockDeviceNames:
    """`device` as the CloudWatch agent writes it: /dev/root resolved, then every "/dev/" removed (telegraf's
    disk input: strings.Replace(device, "/dev/", "", -1)). Resolved once per mount point."""

    def __init__(
        self,
        *,
        sys_root: Path = Path("/sys"),
        stat: Callable[[str], os.stat_result] = os.stat,
    ) -> None:
        self._sys = sys_root
        self._stat = stat
        self._resolved: dict[str, str] = {}
        self._warn = LogOnce(log)

    def name(self, device: str, mountpoint: str) -> str:
        if device == ROOT:
            device = self._resolved.get(mountpoint) or self._resolve(mountpoint)
        return device.replace("/dev/", "")

    def _resolve(self, mountpoint: str) -> str:
        try:
            number = self._stat(mountpoint).st_dev
            link = self._sys / "dev" / "block" / f"{os.major(number)}:{os.minor(number)}"
            name: str | None
            # gopsutil reads the link; the device's uevent DEVNAME is the same kernel name, read where
            # the entry is no link (a sysfs some container runtimes present).
            if link.is_symlink():
                name = os.path.basename(os.readlink(link))
            else:
                name = _uevent_name((link / "uevent").read_text())
        except OSError as error:
            return self._unresolved(mountpoint, str(error))
        if name is None:
            return self._unresolved(mountpoint, "no DEVNAME in uevent")
        self._resolved[mountpoint] = name
        return name

    def _unresolved(self, mountpoint: str, error: str) -> str:
        """What the agent publishes when sysfs cannot tell (device=root), said once; tried again next time."""
        self._warn.warning(("root", mountpoint), "root_device_unresolved", mount=mountpoint, error=error)
        return ROOT
