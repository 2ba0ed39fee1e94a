"""The mount table from /proc/self/mountinfo, and which mount stands for each filesystem.

One line per mount (Documentation/filesystems/proc.rst, "/proc/<pid>/mountinfo"; proc_pid_mountinfo(5)):

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)  (4)   (5)     (6)       (7)   (8) (9)    (10)        (11)

mount ID, parent ID, major:minor of the filesystem (its superblock's st_dev), root of the mount within the
filesystem, mount point, per-mount options, zero or more optional fields ended by "-", filesystem type,
source, superblock options. Paths have space, tab, newline and backslash escaped as \\ooo octal.

Unlike /proc/self/mounts (what psutil.disk_partitions reads), it says which filesystem a mount shows
(major:minor) and which directory of it (root): a bind mount, or a mount systemd's sandboxing makes
inside a unit's namespace (PrivateTmp, ProtectHome, StateDirectory), is the same filesystem again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"

_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    """One mountinfo line. `device`, `mountpoint`, `fstype` and `opts` as psutil.disk_partitions names them."""

    mount_id: int
    parent_id: int  # the mount this one is mounted on; outside the table for the namespace's root
    major: int
    minor: int
    root: str  # the directory of the filesystem mounted here: "/" for the whole filesystem
    mountpoint: str
    opts: str  # per-mount options
    fstype: str
    device: str  # the mount source: /dev/nvme0n1p1, /dev/root, tmpfs, server:/export

    @property
    def filesystem(self) -> tuple[int, int]:
        """major:minor: the same for every mount of one filesystem, bind mounts included."""
        return self.major, self.minor


def _unescape(path: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), path)


def parse(text: str) -> list[Mount]:
    """Every mount, in the table's order (a mount comes after the mounts it was made on top of)."""
    mounts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = fields[2].split(":")
            fstype, device = fields[separator + 1], fields[separator + 2]
            mounts.append(Mount(int(fields[0]), int(fields[1]), int(major), int(minor), _unescape(fields[3]),
                                _unescape(fields[4]), fields[5], fstype, _unescape(device)))
        except (ValueError, IndexError) as error:
            raise ValueError(f"mountinfo line {number} is not in the kernel's format: {line!r}") from error
    return mounts


def _text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as file:
        return file.read()


def read(path: str = MOUNTINFO) -> list[Mount]:
    return parse(_text(path))


class MountTable:
    """The mount table as `read` gives it, read every call but parsed again only when its text changed: the
    storage collector reads it every collection, and mounts come and go rarely. The same list while the text
    is the same (callers must not change it), so a caller can tell an unchanged table at a glance."""

    def __init__(self, path: str = MOUNTINFO) -> None:
        self._path = path
        self._text: str | None = None
        self._mounts: list[Mount] = []

    def __call__(self) -> list[Mount]:
        text = _text(self._path)
        if text != self._text:
            self._mounts = parse(text)  # raises before anything is kept: a malformed table raises every call
            self._text = text
        return self._mounts


class Filesystem(NamedTuple):
    """A filesystem, the mount point it is published as, and the visible mount to statvfs it through."""

    mount: Mount  # the mount that names it: MountPath, Device, FSType
    reachable: Mount | None  # None when every mount of it is covered by another mount (a hidden filesystem)


def _ancestors(path: str) -> list[str]:
    """The strict ancestors of an absolute path: "/a/b" → ["/", "/a"]."""
    parts = path.strip("/").split("/")
    return ["/"] + ["/" + "/".join(parts[:depth]) for depth in range(1, len(parts))] if path != "/" else []


def _visible(mounts: Sequence[Mount]) -> set[int]:
    """Mount IDs that a path walk to their mount point ends at, from the mount tree (the order of the lines
    is not mount order everywhere: gVisor lists / after /proc).

    A mount is hidden by a mount on top of it (its child on the same path). Walking up from it, at each
    parent: a sibling on a directory above (mounted later, or the mount would be inside it) or another
    mount on top of the parent takes the walk elsewhere.
    """
    by_id = {mount.mount_id: mount for mount in mounts}
    paths: dict[int, Counter[str]] = {}  # parent ID → mount points of its children
    for mount in mounts:
        paths.setdefault(mount.parent_id, Counter())[mount.mountpoint] += 1
    none: Counter[str] = Counter()

    def reachable(mount: Mount) -> bool:
        if paths.get(mount.mount_id, none)[mount.mountpoint]:
            return False
        below, seen = mount, {mount.mount_id}
        while (parent := by_id.get(below.parent_id)) is not None and parent.mount_id not in seen:
            siblings = paths.get(parent.mount_id, none)
            if any(siblings[directory] for directory in _ancestors(below.mountpoint)):
                return False
            if siblings[parent.mountpoint] > (below.mountpoint == parent.mountpoint):
                return False
            below = parent
            seen.add(parent.mount_id)
        return True

    return {mount.mount_id for mount in mounts if reachable(mount)}


def filesystems(mounts: Sequence[Mount], wanted: Callable[[Mount], bool] = lambda mount: True) -> list[Filesystem]:
    """One entry per filesystem (major:minor), in the order of their first mount.

    The name is the shortest mount point among the mounts that show the whole filesystem (root "/"),
    then the first in sort order, so it does not depend on which mount came first at boot; a bind mount
    of a directory (root other than "/") names a filesystem only when it has no whole-filesystem mount
    (btrfs subvolumes: every mount shows a subvolume). `wanted` (the include/exclude filters) sees the
    naming mount only, so excluding a bind's path never brings the filesystem back under another name.
    statvfs reports the whole filesystem through any of its mounts, so it is read through the naming
    mount when that is visible, else through any visible one.
    """
    by_device: dict[tuple[int, int], list[Mount]] = {}
    for mount in mounts:
        by_device.setdefault(mount.filesystem, []).append(mount)
    visible_ids = _visible(mounts)
    chosen = []
    for same in by_device.values():
        whole = [mount for mount in same if mount.root == "/"] or same
        name = min(whole, key=lambda mount: (len(mount.mountpoint), mount.mountpoint))
        if not wanted(name):
            continue
        visible = [mount for mount in same if mount.mount_id in visible_ids]
        reachable = name if name in visible else next(iter(visible), None)
        chosen.append(Filesystem(name, reachable))
    return chosen
