"""`/proc/self/mountinfo` parsing with real-world lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from juicefs_csi.mount.mountinfo import MountEntry, mounts_at, parse_mountinfo, read_mounts

KUBELET = "/var/lib/kubelet/pods/0b5c-11ef/volumes/kubernetes.io~csi/pvc-1/mount"

# Captured from a Kubernetes node running the driver (ids and paths shortened).
REAL = "\n".join(
    [
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro",
        "23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
        "24 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw",
        "25 22 0:5 / /dev rw,nosuid,relatime shared:2 master:1 - devtmpfs udev rw,size=8123456k,mode=755",
        "41 22 0:37 / /run rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=1632k,mode=755",
        "600 22 0:52 / /var/lib/juicefs/mnt/pvc-1-0f979b87fa10943d rw,relatime shared:300 - fuse.juicefs "
        "JuiceFS:myjfs rw,user_id=0,group_id=0,default_permissions,allow_other",
        f"601 40 0:52 /pvc-1 {KUBELET} rw,relatime shared:300 - fuse.juicefs JuiceFS:myjfs "
        "rw,user_id=0,group_id=0,default_permissions,allow_other",
        "602 22 0:53 / /mnt/my\\040dir rw,relatime shared:301 - fuse.juicefs JuiceFS:other\\040fs rw,user_id=0",
        "603 22 0:54 / /mnt/tab\\011and\\012newline\\134back rw - tmpfs none rw",
        "604 22 0:55 /sub\\040dir /mnt/bind ro,relatime shared:302 master:7 propagate_from:3 - ext4 /dev/sdb1 rw",
        "605 22 0:56 / /mnt/sshfs rw,nosuid - fuse.sshfs user@host:/ rw,user_id=0",
        "606 22 0:57 / /mnt/plain rw - fuse /dev/fuse rw",
    ]
)


def entries_by_id() -> dict[int, MountEntry]:
    return {entry.mount_id: entry for entry in parse_mountinfo(REAL)}


def test_every_real_line_is_parsed() -> None:
    assert [entry.mount_id for entry in parse_mountinfo(REAL)] == [22, 23, 24, 25, 41, *range(600, 607)]


def test_root_mount_fields() -> None:
    entry = entries_by_id()[22]
    assert entry == MountEntry(
        mount_id=22,
        parent_id=1,
        device="259:2",
        root="/",
        mount_point="/",
        options="rw,relatime",
        fs_type="ext4",
        source="/dev/nvme0n1p2",
    )


def test_juicefs_client_mount() -> None:
    entry = entries_by_id()[600]
    assert entry.is_juicefs
    assert entry.fs_type == "fuse.juicefs"
    assert entry.source == "JuiceFS:myjfs"
    assert entry.device == "0:52"
    assert entry.root == "/"
    assert entry.mount_point == "/var/lib/juicefs/mnt/pvc-1-0f979b87fa10943d"


def test_bind_mount_of_a_sub_directory_has_a_non_root_root() -> None:
    entry = entries_by_id()[601]
    assert entry.is_juicefs
    assert entry.root == "/pvc-1"
    assert entry.mount_point == KUBELET
    assert entry.device == entries_by_id()[600].device
    assert entry.parent_id == 40


@pytest.mark.parametrize(
    ("mount_id", "field", "expected"),
    [
        (602, "mount_point", "/mnt/my dir"),
        (602, "source", "JuiceFS:other fs"),
        (603, "mount_point", "/mnt/tab\tand\nnewline\\back"),
        (604, "root", "/sub dir"),
    ],
)
def test_octal_escapes_are_decoded(mount_id: int, field: str, expected: str) -> None:
    assert getattr(entries_by_id()[mount_id], field) == expected


@pytest.mark.parametrize(
    ("mount_id", "options"),
    [(22, "rw,relatime"), (25, "rw,nosuid,relatime"), (41, "rw,nosuid,nodev,noexec,relatime"), (604, "ro,relatime")],
)
def test_optional_fields_do_not_shift_the_others(mount_id: int, options: str) -> None:
    entry = entries_by_id()[mount_id]
    assert entry.options == options
    assert entry.fs_type in {"ext4", "devtmpfs", "tmpfs"}


@pytest.mark.parametrize(("mount_id", "juicefs"), [(600, True), (601, True), (602, True), (605, False), (606, False)])
def test_is_juicefs_only_for_fuse_juicefs(mount_id: int, juicefs: bool) -> None:
    assert entries_by_id()[mount_id].is_juicefs is juicefs


def test_sshfs_source_with_colon_and_at() -> None:
    assert entries_by_id()[605].source == "user@host:/"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "garbage",
        "1 2 3 4 5 6 no separator here",
        "1 2 0:1 / /x - tmpfs",
        "1 2 0:1 / - tmpfs none rw",
    ],
)
def test_malformed_lines_are_skipped(text: str) -> None:
    assert parse_mountinfo(text) == []


def test_malformed_lines_do_not_hide_good_ones() -> None:
    text = "garbage\n" + REAL.splitlines()[0] + "\n1 2 0:1 / /x - tmpfs\n"
    assert [entry.mount_id for entry in parse_mountinfo(text)] == [22]


def test_stacked_mounts_oldest_first() -> None:
    text = "\n".join(
        [
            "700 22 0:60 / /mnt/stack rw - tmpfs first rw",
            "701 22 0:61 / /mnt/other rw - tmpfs other rw",
            "702 700 0:62 / /mnt/stack rw - fuse.juicefs JuiceFS:second rw",
            "703 702 0:63 /x /mnt/stack ro - fuse.juicefs JuiceFS:third rw",
        ]
    )
    stacked = mounts_at(parse_mountinfo(text), "/mnt/stack")
    assert [entry.mount_id for entry in stacked] == [700, 702, 703]
    assert [entry.source for entry in stacked] == ["first", "JuiceFS:second", "JuiceFS:third"]


@pytest.mark.parametrize("path", ["/mnt/stack", "/mnt/stack/", "/mnt//stack", "/mnt/x/../stack", "/mnt/./stack"])
def test_mounts_at_normalises_the_path(path: str) -> None:
    entries = parse_mountinfo("700 22 0:60 / /mnt/stack rw - tmpfs first rw")
    assert [entry.mount_id for entry in mounts_at(entries, path)] == [700]


def test_mounts_at_does_not_match_prefixes() -> None:
    entries = parse_mountinfo("700 22 0:60 / /mnt/stack rw - tmpfs first rw\n701 22 0:61 / /mnt/stack2 rw - tmpfs t rw")
    assert [entry.mount_id for entry in mounts_at(entries, "/mnt/stack")] == [700]
    assert mounts_at(entries, "/mnt") == []


def test_mounts_at_with_escaped_path() -> None:
    assert [entry.mount_id for entry in mounts_at(parse_mountinfo(REAL), "/mnt/my dir")] == [602]


def test_read_mounts_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(REAL + "\n")
    assert read_mounts(path) == parse_mountinfo(REAL)
