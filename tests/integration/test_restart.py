"""Driver restarts on real mounts: clients outlive the driver, and the next run picks up where it left off.

A DaemonSet update or a crash restarts the driver while pods keep using their
volumes. The mounts must not blink, the next driver must adopt the running clients
(same pids), and whatever broke while no driver ran must be repaired at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from juicefs_csi.csi.proto import csi_pb2
from juicefs_csi.mount import syscalls
from tests.support.driver import (
    DriverProcess,
    capability,
    juicefs_processes,
    mounts_under,
    recoveries,
    sqlite_volume,
)
from tests.support.observe import group_members, serves
from tests.support.waiting import wait_until

pytestmark = pytest.mark.mounts

DEADLINE = 10.0


class Prober:
    """Uses every target continuously from another thread, recording each moment one did not serve."""

    def __init__(self, targets: dict[Path, dict[str, str]]) -> None:
        self.targets = targets
        self.failures: list[str] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for target, files in self.targets.items():
                if not serves(target, files):
                    self.failures.append(f"{time.strftime('%X')} {target}")
            self.rounds += 1
            time.sleep(0.01)

    @contextlib.contextmanager
    def running(self) -> Iterator[Prober]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


@pytest.fixture
def two_volumes(driver: DriverProcess, workdir: Path) -> dict[Path, tuple[str, dict[str, str]]]:
    """Volume one at targets a and b, volume two at c; a file in each volume."""
    one, two = sqlite_volume(workdir, "vol-one"), sqlite_volume(workdir, "vol-two")
    layout = {
        workdir / "pods/a/mount": ("pv-one", one),
        workdir / "pods/b/mount": ("pv-one", one),
        workdir / "pods/c/mount": ("pv-two", two),
    }
    for target, (volume, creds) in layout.items():
        driver.publish(volume, target, creds, {"subPath": "data"})
    (workdir / "pods/a/mount/one.txt").write_text("volume one")
    (workdir / "pods/c/mount/two.txt").write_text("volume two")
    assert len(driver.client_pids()) == 2
    return layout


def files_of(layout: dict[Path, tuple[str, dict[str, str]]]) -> dict[Path, dict[str, str]]:
    return {
        target: {"one.txt": "volume one"} if volume == "pv-one" else {"two.txt": "volume two"}
        for target, (volume, _) in layout.items()
    }


def client_of(driver: DriverProcess, volume: str) -> int:
    """The client serving `volume`: its mount point is named after the volume."""
    (pid,) = [
        pid
        for pid, argv in juicefs_processes()
        if pid in driver.client_pids() and any(a.startswith(f"{driver.mount_root}/{volume}-") for a in argv)
    ]
    return pid


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_mounts_survive_driver_restart(
    driver: DriverProcess, two_volumes: dict[Path, tuple[str, dict[str, str]]], workdir: Path, kill: bool
) -> None:
    files = files_of(two_volumes)
    pids = sorted(driver.client_pids())
    groups = {pid: sorted(group_members(pid)) for pid in pids}

    with Prober(files).running() as prober:
        driver.restart(kill=kill)
        rounds = prober.rounds
        wait_until(lambda: prober.rounds > rounds + 5, DEADLINE, "the prober used the targets after the restart")

    assert prober.failures == [], f"targets failed while the driver restarted: {prober.failures[:5]}"
    assert sorted(driver.client_pids()) == pids, "the restarted driver replaced running clients"
    assert {pid: sorted(group_members(pid)) for pid in pids} == groups
    assert recoveries(driver) == 0
    assert all(serves(target, f) for target, f in files.items())

    stats = driver.volume_stats("pv-one", workdir / "pods/a/mount", timeout=10)
    assert not stats.volume_condition.abnormal, stats.volume_condition.message
    assert {u.unit for u in stats.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}
    assert all(u.total > 0 for u in stats.usage)

    for target, (volume, _) in two_volumes.items():
        driver.unpublish(volume, target)
        assert not target.exists()
    wait_until(lambda: not driver.client_pids(), 5, "both clients stopped after their last unpublish")
    wait_until(lambda: not mounts_under(workdir), 5, "nothing mounted under the workdir")
    assert all(group_members(pid) == [] for pid in pids)


def test_client_killed_while_driver_is_down_is_repaired_on_start(
    driver: DriverProcess, two_volumes: dict[Path, tuple[str, dict[str, str]]], workdir: Path
) -> None:
    files = files_of(two_volumes)
    pids = sorted(driver.client_pids())
    a = workdir / "pods/a/mount"
    victim, survivor = client_of(driver, "pv-one"), client_of(driver, "pv-two")
    assert sorted([victim, survivor]) == pids

    driver.stop(kill=True)
    os.killpg(victim, signal.SIGKILL)
    # Not touching the dead mount here: with no driver to abort its connection, an access may block for good.
    wait_until(lambda: not group_members(victim), DEADLINE, "the killed client is gone")

    driver.start()

    for target, target_files in files.items():
        wait_until(partial(serves, target, target_files), DEADLINE, f"{target} serves again")
    current = driver.client_pids()
    assert len(current) == 2 and survivor in current and victim not in current
    assert recoveries(driver) == 1
    stats = driver.volume_stats("pv-one", a, timeout=10)
    assert not stats.volume_condition.abnormal, stats.volume_condition.message

    for target, (volume, _) in two_volumes.items():
        driver.unpublish(volume, target)
    wait_until(lambda: not driver.client_pids(), 5, "both clients stopped after their last unpublish")
    wait_until(lambda: not mounts_under(workdir), 5, "nothing mounted under the workdir")


def test_client_without_targets_after_crash_is_stopped_on_start(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    """The driver died between recording a client's last unpublish and stopping it: the next run stops it."""
    target = workdir / "pods/a/mount"
    driver.publish("pv-idle", target, sqlite_secret)
    (pid,) = driver.client_pids()
    driver.stop(kill=True)
    # What the crash leaves: the target is gone and the record lists no targets, the client runs on.
    (record_path,) = [p for p in (driver.state_dir / "node/clients").glob("*.json") if ".inputs." not in p.name]
    record = json.loads(record_path.read_text())
    record["targets"] = {}
    record_path.write_text(json.dumps(record))
    syscalls.unmount(str(target), lazy=True)
    target.rmdir()

    driver.start()

    wait_until(lambda: not group_members(pid), DEADLINE, "the idle client stopped")
    assert driver.client_pids() == []
    wait_until(lambda: not mounts_under(workdir), 5, "nothing mounted under the workdir")
    wait_until(lambda: not list((driver.state_dir / "node/clients").iterdir()), 5, "the client's state removed")


def test_idle_controller_client_stops_with_the_driver(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    """Controller work leaves its client lingering for the next burst; a stopping driver must not leave it behind."""
    driver.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(name="pvc-idle", volume_capabilities=[capability()], secrets=sqlite_secret),
        timeout=60,
    )
    (pid,) = driver.client_pids()

    driver.stop()

    assert group_members(pid) == [], "the idle client outlived the driver"
    assert mounts_under(workdir) == []
    driver.start()
    assert driver.client_pids() == []
