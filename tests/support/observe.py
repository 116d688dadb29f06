"""What the tests see on the node without asking the driver: processes, their command lines, and targets in use."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def _pids() -> Iterator[Path]:
    """`/proc/<pid>` of every process."""
    return (entry for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _status(proc: Path) -> dict[str, str]:
    """The fields of `/proc/<pid>/status`.

    Not `stat`: reading `stat` of a process stuck in execve blocks, and so would the test.
    """
    return dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)


def process_group(pid: int) -> int | None:
    """The process group of `pid`, None if it is gone."""
    try:
        return int(_status(Path(f"/proc/{pid}"))["NSpgid"].split()[0])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for proc in _pids():
        with contextlib.suppress(OSError, IndexError, KeyError, ValueError):
            fields = _status(proc)
            if fields["State"].split()[0] != "Z" and int(fields["NSpgid"].split()[0]) == pgid:
                members.append(int(proc.name))
    return members


def all_cmdlines() -> dict[int, str]:
    """The command line of every process, its arguments joined by spaces."""
    found = {}
    for proc in _pids():
        with contextlib.suppress(OSError):
            found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found


def serves(target: Path, files: dict[str, str]) -> bool:
    """The target lists, still holds `files`, and takes a new write (safe to call from several threads)."""
    try:
        os.listdir(target)
        if any((target / name).read_text() != content for name, content in files.items()):
            return False
        probe = target / f"probe-{threading.get_ident()}-{time.monotonic_ns()}"
        probe.write_text("p")
        ok = probe.read_text() == "p"
        probe.unlink()
        return ok
    except OSError:
        return False
