"""The mount table watch that tells the driver a client's mount has appeared, without polling for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import MountTableWatch


def test_wakes_on_a_mount_made_before_or_during_the_wait_and_not_otherwise(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    table = MountTableWatch()
    try:
        assert table.wait(0.05) is False, "nothing changed"
        syscalls.bind_mount(str(source), str(target))  # before the wait: still seen
        assert table.wait(0) is True
        assert table.wait(0.05) is False, "a change is reported once"
        timer = threading.Timer(0.1, syscalls.unmount, (str(target),))
        started = time.monotonic()
        timer.start()
        assert table.wait(5.0) is True
        assert time.monotonic() - started < 2.0, "woken by the unmount, not by the timeout"
    finally:
        table.close()
        syscalls.unmount(str(target))
