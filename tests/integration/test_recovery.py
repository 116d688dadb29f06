"""Automatic mount point recovery on real mounts: the workload's targets serve again without it acting.

A juicefs 1.4.2 client is a process group: `juicefs mount` in the foreground is a
supervisor (the group leader) that runs the FUSE server as its child and restarts
that child, handing it the FUSE fd, if it crashes. The driver watches the leader
and the mount point; whatever dies, the volume's targets must come back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import read_mounts
from tests.support.driver import DriverProcess, juicefs_pids_under, mounts_under, recoveries
from tests.support.observe import group_members, serves
from tests.support.waiting import wait_until

pytestmark = pytest.mark.mounts

VOLUME = "pv-rec"
CONTEXT = {"subPath": "data"}
RECOVERY_DEADLINE = 10.0
SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)


def client_mountpoint(driver: DriverProcess) -> str:
    points = mounts_under(driver.mount_root)
    assert len(points) == 1, points
    return points[0]


def device_of(path: Path | str) -> str:
    """The FUSE connection (major:minor) a mount point is served by; the newest mount wins."""
    devices = [m.device for m in read_mounts() if m.mount_point == str(path)]
    return devices[-1] if devices else ""


def hold_fuse_fd(pid: int) -> int:
    """A duplicate, in this process, of the /dev/fuse fd of process `pid` (pidfd_getfd(2))."""
    (fd,) = [int(e.name) for e in os.scandir(f"/proc/{pid}/fd") if os.readlink(e.path) == "/dev/fuse"][:1]
    pidfd = os.pidfd_open(pid)
    try:
        held = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if held < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return int(held)
    finally:
        os.close(pidfd)


@pytest.fixture
def published(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> Iterator[tuple[list[Path], dict[str, str]]]:
    """Two targets of one volume with a file written and fsynced through the first.

    Unpublished at the end, so the driver stops the client cleanly: SIGKILLed with its
    mount up and `.config` open (the harness' last resort), juicefs can wedge on exit.
    """
    targets = [workdir / "pods/a/mount", workdir / "pods/b/mount"]
    for target in targets:
        driver.publish(VOLUME, target, sqlite_secret, CONTEXT)
    files = {"before.txt": "written before the crash"}
    with open(targets[0] / "before.txt", "w") as handle:
        handle.write(files["before.txt"])
        handle.flush()
        os.fsync(handle.fileno())
    assert all(serves(t, files) for t in targets)
    yield targets, files
    for target in (workdir / "pods").glob("*/mount"):
        with contextlib.suppress(grpc.RpcError):
            driver.unpublish(VOLUME, target, timeout=30)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not driver.client_pids(), 15, "the client stopped")


def rebound(driver: DriverProcess, targets: list[Path], old_pid: int) -> bool:
    """A new client runs and every target is a bind of its mount."""
    pids = driver.client_pids()
    if not pids or old_pid in pids:
        return False
    points = [m for m in read_mounts() if m.mount_point.startswith(f"{driver.mount_root}/")]
    return len(points) == 1 and all(device_of(t) == points[0].device for t in targets)


def only_client(driver: DriverProcess) -> int:
    pids = driver.client_pids()
    assert len(pids) == 1, pids
    return pids[0]


def new_client(driver: DriverProcess, old: int, deadline: float = RECOVERY_DEADLINE) -> int:
    """Waits for the one client that replaced `old`."""

    def replaced() -> list[int]:
        pids = driver.client_pids()
        return pids if pids and old not in pids else []

    pids = wait_until(replaced, deadline, "a new juicefs client started")
    assert len(pids) == 1, pids
    return pids[0]


def assert_recovered(
    driver: DriverProcess,
    targets: list[Path],
    files: dict[str, str],
    old_pid: int,
    recoveries_before: float,
    *,
    deadline: float = RECOVERY_DEADLINE,
) -> None:
    started = time.monotonic()
    new_pid = new_client(driver, old_pid, deadline)
    for target in targets:
        left = max(deadline - (time.monotonic() - started), 0.0)
        wait_until(partial(serves, target, files), left, f"{target} serves")
    assert time.monotonic() - started < deadline
    wait_until(lambda: recoveries(driver) > recoveries_before, 5, "juicefs_mount_recoveries increased")
    assert group_members(old_pid) == [], "a process of the old client is still running"
    assert driver.client_pids() == [new_pid]
    assert all(device_of(t) == device_of(client_mountpoint(driver)) for t in targets), "a target is not re-bound"
    # Recovered targets are ordinary targets: more data, shared, and a clean unpublish.
    (targets[1] / "after.txt").write_text("after")
    assert (targets[0] / "after.txt").read_text() == "after"
    assert "recovered mount point" in driver.log_text()
    # One failure, one recovery: a second one would have replaced the client we just checked.
    assert recoveries(driver) == recoveries_before + 1
    assert driver.client_pids() == [new_pid]


def test_killed_client_group_is_remounted(driver: DriverProcess, published: tuple[list[Path], dict[str, str]]) -> None:
    targets, files = published
    pid, before = only_client(driver), recoveries(driver)

    os.killpg(pid, signal.SIGKILL)
    # Until the new bind replaces it, a target is the dead mount (errors), never the bare directory below.
    bare: list[Path] = []
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while not rebound(driver, targets, pid):
        bare += [t for t in targets if not device_of(t)]
        assert time.monotonic() < deadline, "targets not re-bound to a new client"
    assert bare == [], f"targets were bare directories during the recovery: {sorted(set(map(str, bare)))}"

    assert_recovered(driver, targets, files, pid, before)
    for target in targets:
        driver.unpublish(VOLUME, target)
    wait_until(lambda: not driver.client_pids(), 5, "the recovered client stopped after the last unpublish")


def holds_files_on(pid: int, mountpoint: str) -> bool:
    """Whether a process has a file under `mountpoint` open."""
    with contextlib.suppress(OSError):
        return any(os.readlink(e.path).startswith(f"{mountpoint}/") for e in os.scandir(f"/proc/{pid}/fd"))
    return False


def test_killed_fuse_worker_is_restarted_by_juicefs(
    driver: DriverProcess, published: tuple[list[Path], dict[str, str]]
) -> None:
    """juicefs' own supervisor, not the driver, restarts a crashed FUSE worker.

    The supervisor keeps the FUSE fd and hands it to a new worker, so the mount point
    and every bind of it stay the same kernel mount: the driver must leave this alone
    (no recovery, same supervisor pid) and the targets keep serving.

    juicefs 1.4.2 can wedge itself here: if its watchdog has `.config` of the mount open
    when the worker dies, the new worker's execve blocks closing that file (a FLUSH only
    a worker could answer). The test kills the worker while the supervisor holds no
    file on the mount; should juicefs wedge anyway, the driver must have recovered the
    client for exactly that reason.
    """
    targets, files = published
    leader, before = only_client(driver), recoveries(driver)
    mountpoint = client_mountpoint(driver)
    (worker,) = [p for p in group_members(leader) if p != leader]
    devices = [device_of(t) for t in targets]

    wait_until(lambda: not holds_files_on(leader, mountpoint), 5, "the supervisor holds no file on its mount")
    os.kill(worker, signal.SIGKILL)

    for target in targets:  # a wedged juicefs takes the driver's health check (~7 s) and a recovery
        wait_until(partial(serves, target, files), 2.5 * RECOVERY_DEADLINE, f"{target} serves")
    if recoveries(driver) > before:
        assert "juicefs runs no FUSE server" in driver.log_text(), "the driver replaced a client that was restarting"
        assert rebound(driver, targets, leader)
        assert group_members(leader) == []
        return
    replacement = [p for p in group_members(leader) if p not in (leader, worker)]
    assert len(replacement) == 1, replacement
    assert only_client(driver) == leader
    assert [device_of(t) for t in targets] == devices
    # Give the health loop (every 2 s) a chance to act wrongly before concluding it did not.
    time.sleep(2.5)
    assert recoveries(driver) == before
    assert only_client(driver) == leader
    assert all(serves(t, files) for t in targets)


def test_client_whose_fuse_server_never_returns_is_replaced(
    driver: DriverProcess, published: tuple[list[Path], dict[str, str]]
) -> None:
    """A hung mount alone is left alone (killing a slow client would lose its writes); one nothing serves is not.

    Here the supervisor is frozen so it cannot restart its killed worker, as juicefs
    1.4.2 can also wedge on its own: the mount then hangs for good. Detection takes
    the health interval plus the probe timeout, so this test allows longer.
    """
    targets, files = published
    leader, before = only_client(driver), recoveries(driver)
    (worker,) = [p for p in group_members(leader) if p != leader]

    os.kill(leader, signal.SIGSTOP)
    os.kill(worker, signal.SIGKILL)

    assert_recovered(driver, targets, files, leader, before, deadline=2 * RECOVERY_DEADLINE)
    assert "juicefs runs no FUSE server" in driver.log_text()


def test_killed_supervisor_is_replaced_without_orphans(
    driver: DriverProcess, published: tuple[list[Path], dict[str, str]]
) -> None:
    """Without its leader the orphaned worker still serves, unsupervised: the driver replaces the whole group."""
    targets, files = published
    leader, before = only_client(driver), recoveries(driver)
    assert len(group_members(leader)) == 2

    os.kill(leader, signal.SIGKILL)

    assert_recovered(driver, targets, files, leader, before)
    mounts = juicefs_pids_under(driver.mount_root)
    new_leader = only_client(driver)
    assert sorted(mounts) == sorted(group_members(new_leader)), "a juicefs process outside the new client's group"


def test_lazily_unmounted_mount_point_is_noticed(
    driver: DriverProcess, published: tuple[list[Path], dict[str, str]]
) -> None:
    """Detached behind the driver's back, the client lives on through the targets' binds.

    Nothing exits, so only the health loop can see that the client's mount point is
    no longer a juicefs mount (it is the plain directory below): it must remount and
    re-bind the targets onto the new mount.
    """
    targets, files = published
    pid, before = only_client(driver), recoveries(driver)
    mountpoint = client_mountpoint(driver)

    assert syscalls.unmount(mountpoint, lazy=True)

    assert_recovered(driver, targets, files, pid, before)
    assert client_mountpoint(driver) == mountpoint
    assert os.stat(mountpoint).st_ino == 1, "the client's mount point is not a juicefs root"


def test_publish_during_recovery_binds_to_the_new_client(
    driver: DriverProcess, sqlite_secret: dict[str, str], published: tuple[list[Path], dict[str, str]], workdir: Path
) -> None:
    """A publish that arrives while the client is dead waits for the recovery instead of failing.

    Binding the dead mount point would bind the bare directory below it (local disk);
    failing would only make kubelet retry. It must succeed, on the new client.
    """
    targets, files = published
    pid, before = only_client(driver), recoveries(driver)
    late = workdir / "pods/late/mount"

    os.killpg(pid, signal.SIGKILL)
    driver.publish(VOLUME, late, sqlite_secret, CONTEXT, timeout=RECOVERY_DEADLINE)

    assert serves(late, files)
    assert_recovered(driver, [*targets, late], files, pid, before)
    assert device_of(late) == device_of(client_mountpoint(driver))


def test_dead_clients_connection_is_aborted(
    driver: DriverProcess, published: tuple[list[Path], dict[str, str]]
) -> None:
    """Whatever still holds a dead client's FUSE fd keeps its connection up, and every access to the old mount blocks.

    That is what a juicefs supervisor does when SIGKILL catches one of its threads in
    a request to its own mount that the dying worker had already read: the thread
    never returns, the group never goes, and workloads touching the old mount hang
    in D state. Here the test holds the fd; the driver must abort the connection.
    """
    targets, files = published
    pid, before = only_client(driver), recoveries(driver)
    held = hold_fuse_fd(pid)
    outcome: list[str] = []

    def access() -> None:
        try:
            os.stat(targets[0] / f"missing-{time.monotonic_ns()}")
            outcome.append("found")
        except OSError as exc:
            outcome.append(os.strerror(exc.errno or 0))

    blocked = threading.Thread(target=access, daemon=True)
    try:
        # A frozen client reads no request: the access is pending on the old connection before the kill.
        os.killpg(pid, signal.SIGSTOP)
        blocked.start()
        time.sleep(0.2)
        assert blocked.is_alive() and not outcome, f"the access did not reach the frozen client: {outcome}"
        os.killpg(pid, signal.SIGKILL)
        blocked.join(RECOVERY_DEADLINE)
        assert not blocked.is_alive(), "an access to the dead client's mount is still blocked"
        assert outcome, outcome
        assert_recovered(driver, targets, files, pid, before)
    finally:
        os.close(held)
