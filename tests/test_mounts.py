"""The mount table: parsing /proc/self/mountinfo as the kernel writes it, and which mount names a filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.mounts import Mount, MountTable, filesystems, parse
from tests.fakes.host import SANDBOXED_UNIT_MOUNTS


def test_a_line_with_escaped_paths_and_any_number_of_optional_fields() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"  # proc.rst's example
        "40 22 259:5 / /mnt/team\\040data rw,relatime shared:9 master:2 propagate_from:1 - ext4 /dev/nvme2n1 rw\n"
        "41 22 0:44 /back\\134slash /srv/tab\\011name rw,relatime - nfs4 10.0.0.5:/export\\040one rw,vers=4.1\n"
    )
    assert parse(text) == [
        Mount(36, 35, 98, 0, "/mnt1", "/mnt2", "rw,noatime", "ext3", "/dev/root"),
        Mount(40, 22, 259, 5, "/", "/mnt/team data", "rw,relatime", "ext4", "/dev/nvme2n1"),
        Mount(41, 22, 0, 44, "/back\\slash", "/srv/tab\tname", "rw,relatime", "nfs4", "10.0.0.5:/export one"),
    ]


@pytest.mark.parametrize("line", [
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw",  # no "-" separator
    "36 35 98 /mnt1 /mnt2 rw,noatime - ext3 /dev/root rw",  # no minor
    "36 35 98:0 /mnt1 /mnt2 rw,noatime -",  # nothing after the separator
])
def test_a_line_not_in_the_kernels_format_is_refused_with_its_number(line: str) -> None:
    with pytest.raises(ValueError, match="mountinfo line 2 is not in the kernel's format"):
        parse("22 1 259:1 / / rw - xfs /dev/nvme0n1p1 rw\n" + line)


def test_the_sandboxed_unit_fixture_has_four_filesystems_besides_ignored_types() -> None:
    real = {"xfs", "vfat", "lustre"}
    named = [(fs.mount.mountpoint, fs.reachable and fs.reachable.mountpoint)
             for fs in filesystems(SANDBOXED_UNIT_MOUNTS, lambda mount: mount.fstype in real)]
    assert named == [("/", "/"), ("/boot/efi", "/boot/efi"), ("/data", "/data"), ("/fsx", "/fsx")]


def test_the_shortest_whole_filesystem_mount_names_it_whatever_the_order() -> None:
    text = (
        "22 1 259:1 / / rw - xfs /dev/nvme0n1p1 rw\n"
        "23 22 259:4 / /mnt/data rw - xfs /dev/nvme1n1 rw\n"  # mounted first at boot this time
        "24 22 259:4 /datasets /d rw - xfs /dev/nvme1n1 rw\n"  # shorter, but a directory of it
        "25 22 259:4 / /data rw - xfs /dev/nvme1n1 rw\n"
        "26 22 259:4 / /srv1 rw - xfs /dev/nvme1n1 rw\n"  # as short as /data: sort order decides
    )
    assert [fs.mount.mountpoint for fs in filesystems(parse(text))] == ["/", "/data"]


def test_btrfs_subvolumes_are_one_filesystem_named_by_the_shortest_mount() -> None:
    # Every mount of a btrfs filesystem shows a subvolume (root /@, /@home): none shows its root.
    text = (
        "29 1 0:27 /@ / rw,relatime shared:1 - btrfs /dev/nvme0n1p3 rw,ssd,space_cache=v2,subvol=/@\n"
        "30 29 0:27 /@home /home rw,relatime shared:2 - btrfs /dev/nvme0n1p3 rw,ssd,space_cache=v2,subvol=/@home\n"
    )
    assert [fs.mount.mountpoint for fs in filesystems(parse(text))] == ["/"]


def test_a_covered_mount_is_read_through_a_visible_one_or_not_at_all() -> None:
    text = (
        "22 1 259:1 / / rw - xfs /dev/nvme0n1p1 rw\n"
        "23 22 259:4 / /data rw - xfs /dev/nvme1n1 rw\n"
        "24 22 259:5 / /scratch rw - ext4 /dev/nvme2n1 rw\n"
        "25 22 259:4 / /mnt/data-again rw - xfs /dev/nvme1n1 rw\n"
        # InaccessiblePaths=/data /scratch: systemd covers both with an inaccessible directory.
        "26 23 0:24 /systemd/inaccessible/dir /data ro - tmpfs tmpfs rw\n"
        "27 24 0:24 /systemd/inaccessible/dir /scratch ro - tmpfs tmpfs rw\n"
    )
    found = {fs.mount.mountpoint: fs.reachable and fs.reachable.mountpoint
             for fs in filesystems(parse(text), lambda mount: mount.fstype != "tmpfs")}
    assert found == {"/": "/", "/data": "/mnt/data-again", "/scratch": None}


def test_reachability_follows_the_mount_tree_not_the_order_of_the_lines() -> None:
    # gVisor lists the root after the mounts made on it; a later line on a directory above is no cover then.
    text = (
        "22 27 259:4 / /data rw - xfs /dev/nvme1n1 rw\n"
        "27 1 259:1 / / rw - ext4 /dev/vda rw\n"
        "28 27 0:24 / /mnt rw - tmpfs tmpfs rw\n"  # a sibling of /mnt/scratch on a directory above it
        "29 27 259:5 / /mnt/scratch rw - ext4 /dev/nvme2n1 rw\n"  # listed after /mnt, covered all the same
        "30 32 259:6 / /srv rw - xfs /dev/nvme3n1 rw\n"  # on top of the tmpfs below: reachable
        "31 30 259:7 / /srv/cache rw - xfs /dev/nvme4n1 rw\n"  # inside the top /srv: reachable
        "32 27 0:30 / /srv rw - tmpfs tmpfs rw\n"  # covered by the xfs mounted on it
    )
    found = [(fs.mount.fstype, fs.mount.mountpoint, fs.reachable and fs.reachable.mountpoint)
             for fs in filesystems(parse(text))]
    assert found == [("xfs", "/data", "/data"), ("ext4", "/", "/"), ("tmpfs", "/mnt", "/mnt"),
                     ("ext4", "/mnt/scratch", None), ("xfs", "/srv", "/srv"), ("xfs", "/srv/cache", "/srv/cache"),
                     ("tmpfs", "/srv", None)]


def test_the_mount_table_is_parsed_again_only_when_its_text_changed(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    root = "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
    data = "23 22 259:4 / /data rw,noatime shared:2 - xfs /dev/nvme1n1 rw\n"
    mountinfo.write_text(root)
    table = MountTable(str(mountinfo))
    first = table()
    assert first == [Mount(22, 1, 259, 1, "/", "/", "rw,relatime", "ext4", "/dev/nvme0n1p1")]
    assert table() is first  # unchanged: the same list, not parsed again
    mountinfo.write_text(root + data)
    assert [mount.mountpoint for mount in table()] == ["/", "/data"]
    mountinfo.write_text(root + "23 22 259:4 / /data rw\n")  # not the kernel's format: refused every call
    for _ in range(2):
        with pytest.raises(ValueError, match="mountinfo line 2 is not in the kernel's format"):
            table()
    mountinfo.write_text(root)
    assert table() == first
