"""`/proc/self/mountinfo`: the kernel's truth about what is mounted where."""

from __future__ import annotations

import os
import select
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    options: str
    fs_type: str
    source: str

    @property
    def is_juicefs(self) -> bool:
        return self.fs_type == "fuse.juicefs"


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                device=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=fields[5],
                fs_type=tail[0],
                source=_unescape(tail[1]),
            )
        )
    return entries


def read_mounts(path: Path = MOUNTINFO) -> list[MountEntry]:
    return parse_mountinfo(path.read_text())


def by_mount_point(entries: Iterable[MountEntry]) -> dict[str, list[MountEntry]]:
    """One pass over the table, so checking many paths costs one parse, not one each."""
    table: dict[str, list[MountEntry]] = {}
    for entry in entries:
        table.setdefault(entry.mount_point, []).append(entry)
    return table


def mounts_at(entries: Iterable[MountEntry], mount_point: str) -> list[MountEntry]:
    """Stacked mounts at one path, oldest first."""
    target = os.path.normpath(mount_point)
    return [entry for entry in entries if entry.mount_point == target]


class MountTableWatch:
    """Wakes on any change of this mount namespace's table: the kernel flags `mountinfo` with POLLPRI.

    Open it before starting what will mount, so that a mount made before the first `wait` still counts.
    """

    def __init__(self, path: Path = MOUNTINFO) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close(), it lives across awaits
        self._poll = select.poll()
        self._poll.register(self._file.fileno(), select.POLLPRI | select.POLLERR)

    def wait(self, timeout: float) -> bool:
        """True once the table changed since the last wait (or the opening); blocks up to `timeout`."""
        return bool(self._poll.poll(max(0, int(timeout * 1000))))

    def close(self) -> None:
        self._file.close()
