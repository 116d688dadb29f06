"""Node service over the real socket, on real FUSE mounts."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from juicefs_csi.csi.proto import csi_pb2
from tests.support.driver import (
    AccessMode,
    DriverProcess,
    capability,
    driver_processes_idle,
    expect_rpc_error,
    mounts_at_path,
)
from tests.support.waiting import wait_until

Code = grpc.StatusCode
NodeRPC = csi_pb2.NodeServiceCapability.RPC
Usage = csi_pb2.VolumeUsage


def usage(response: csi_pb2.NodeGetVolumeStatsResponse, unit: int) -> csi_pb2.VolumeUsage:
    found = [u for u in response.usage if u.unit == unit]
    assert len(found) == 1, response
    return found[0]


def write_synced(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())


# -- NodePublishVolume: bad requests -----------------------------------------------------------------------


def _publish_request(workdir: Path, secrets: dict[str, str], **overrides: object) -> csi_pb2.NodePublishVolumeRequest:
    fields: dict[str, object] = {
        "volume_id": "pv-bad",
        "target_path": str(workdir / "pods/bad/mount"),
        "volume_capability": capability(),
        "secrets": secrets,
    }
    fields.update(overrides)
    return csi_pb2.NodePublishVolumeRequest(**{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]


BAD_PUBLISH_REQUESTS: list[tuple[str, dict[str, object], str]] = [
    ("no volume id", {"volume_id": None}, "volume_id"),
    ("no target", {"target_path": None}, "target_path"),
    ("no capability", {"volume_capability": None}, "volume_capability"),
    ("relative target", {"target_path": "pods/relative/mount"}, "absolute"),
    # (kept inside the workdir, so that a driver which accepted them would still be cleaned up after)
    ("dotdot target", {"target_path": "{workdir}/pods/../bad/mount"}, ".."),
    ("dotdot at the end", {"target_path": "{workdir}/pods/bad/mount/.."}, ".."),
    ("block", {"volume_capability": capability(block=True)}, "block"),
]


def test_publish_rejects_bad_requests(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path, subtests: pytest.Subtests
) -> None:
    for case, overrides, expected in BAD_PUBLISH_REQUESTS:
        with subtests.test(msg=case):
            resolved = {k: v.format(workdir=workdir) if isinstance(v, str) else v for k, v in overrides.items()}
            request = _publish_request(workdir, sqlite_secret, **resolved)
            message = expect_rpc_error(Code.INVALID_ARGUMENT, driver.node.NodePublishVolume, request, timeout=30)
            assert expected in message
            assert driver_processes_idle(driver, workdir)
            assert not (workdir / "pods/bad/mount").exists()


# -- NodePublishVolume: behaviour --------------------------------------------------------------------------


@pytest.mark.mounts
def test_publish_is_idempotent_and_stacks_no_mounts(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/p/mount"
    for _ in range(10):
        assert driver.publish("pv-idem", target, sqlite_secret, {"subPath": "pv-idem"}) is not None
    assert mounts_at_path(target) == 1
    assert len(driver.client_pids()) == 1
    (target / "f").write_text("once")
    assert (target / "f").read_text() == "once"


@pytest.mark.mounts
def test_publish_other_volume_on_a_used_target_already_exists(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/p/mount"
    driver.publish("pv-first", target, sqlite_secret, {"subPath": "first"})
    (target / "mine").write_text("first")
    message = expect_rpc_error(
        Code.ALREADY_EXISTS, driver.publish, "pv-second", target, sqlite_secret, {"subPath": "second"}
    )
    assert str(target) in message
    assert mounts_at_path(target) == 1
    assert (target / "mine").read_text() == "first"


@pytest.mark.mounts
@pytest.mark.parametrize(
    ("readonly", "mode"),
    [(True, AccessMode.MULTI_NODE_MULTI_WRITER), (False, AccessMode.MULTI_NODE_READER_ONLY)],
    ids=["readonly-flag", "reader-only-mode"],
)
def test_read_only_target_refuses_writes_beside_a_writable_one(
    driver: DriverProcess,
    sqlite_secret: dict[str, str],
    workdir: Path,
    readonly: bool,
    mode: AccessMode.Mode.ValueType,
) -> None:
    rw, ro = workdir / "pods/rw/mount", workdir / "pods/ro/mount"
    context = {"subPath": "pv-ro"}
    driver.publish("pv-ro", rw, sqlite_secret, context)
    driver.publish("pv-ro", ro, sqlite_secret, context, readonly=readonly, cap=capability(mode))
    (rw / "written").write_text("by the writer")
    assert (ro / "written").read_text() == "by the writer"
    with pytest.raises(OSError) as refused:
        (ro / "attempt").write_text("no")
    assert refused.value.errno == errno.EROFS
    with pytest.raises(OSError) as refused_mkdir:
        (ro / "dir").mkdir()
    assert refused_mkdir.value.errno == errno.EROFS
    (rw / "still").write_text("writable")
    assert (rw / "still").read_text() == "writable"
    assert len(driver.client_pids()) == 1


@pytest.mark.mounts
def test_sub_paths_isolate_volumes_of_one_file_system(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    a, b = workdir / "pods/a/mount", workdir / "pods/b/mount"
    driver.publish("pv-iso-a", a, sqlite_secret, {"subPath": "iso-a"})
    driver.publish("pv-iso-b", b, sqlite_secret, {"subPath": "iso-b"})
    (a / "only-a").write_text("a")
    (b / "only-b").write_text("b")
    assert sorted(p.name for p in a.iterdir()) == ["only-a"]
    assert sorted(p.name for p in b.iterdir()) == ["only-b"]


# -- NodeUnpublishVolume -------------------------------------------------------------------------------------


def test_unpublish_never_mounted_target_removes_it(driver: DriverProcess, workdir: Path) -> None:
    target = workdir / "pods/never/mount"
    target.mkdir(parents=True)
    driver.unpublish("pv-never", target)
    assert not target.exists()
    driver.unpublish("pv-never", target)
    driver.unpublish("pv-never", workdir / "pods/absent/mount")


@pytest.mark.mounts
def test_unpublish_twice_is_ok(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    target = workdir / "pods/twice/mount"
    driver.publish("pv-twice", target, sqlite_secret, {"subPath": "twice"})
    driver.unpublish("pv-twice", target)
    driver.unpublish("pv-twice", target)
    assert not target.exists()
    assert mounts_at_path(target) == 0
    wait_until(lambda: driver_processes_idle(driver, workdir), 20, "the last client stopped")


def test_unpublish_rejects_missing_arguments(driver: DriverProcess, workdir: Path, subtests: pytest.Subtests) -> None:
    (workdir / "pods/kept").mkdir(parents=True)
    cases = [
        ("no volume id", "", str(workdir / "pods/kept"), "volume_id"),
        ("no target", "pv-x", "", "target_path"),
        ("relative target", "pv-x", "pods/kept", "absolute"),
        ("dotdot target", "pv-x", f"{workdir}/pods/x/../kept", ".."),
    ]
    for case, volume_id, target, expected in cases:
        with subtests.test(msg=case):
            message = expect_rpc_error(Code.INVALID_ARGUMENT, driver.unpublish, volume_id, target)
            assert expected in message
            assert (workdir / "pods/kept").is_dir()


# -- capabilities and info -------------------------------------------------------------------------------------


def test_node_capabilities(driver: DriverProcess) -> None:
    response = driver.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), timeout=10)
    offered = {c.rpc.type for c in response.capabilities}
    assert {NodeRPC.GET_VOLUME_STATS, NodeRPC.VOLUME_CONDITION} <= offered
    # No staging: NodeStageVolume is answered UNIMPLEMENTED, so it must not be advertised.
    assert NodeRPC.STAGE_UNSTAGE_VOLUME not in offered


def test_node_info(driver: DriverProcess) -> None:
    response = driver.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10)
    assert response.node_id == "test-node"


# -- NodeGetVolumeStats ------------------------------------------------------------------------------------------


def test_stats_of_an_unpublished_path_is_not_found(driver: DriverProcess, workdir: Path) -> None:
    (workdir / "plain").mkdir()
    message = expect_rpc_error(Code.NOT_FOUND, driver.volume_stats, "pv-nothing", workdir / "plain")
    assert "pv-nothing" in message
    expect_rpc_error(Code.NOT_FOUND, driver.volume_stats, "pv-nothing", workdir / "missing")


@pytest.mark.mounts
def test_stats_report_usage_that_grows_with_written_data(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/stats/mount"
    driver.publish("pv-stats", target, sqlite_secret, {"subPath": "stats"})
    expect_rpc_error(Code.NOT_FOUND, driver.volume_stats, "pv-other", target)  # published, but not this volume

    before = driver.volume_stats("pv-stats", target)
    assert before.volume_condition.abnormal is False
    for unit in (Usage.BYTES, Usage.INODES):
        u = usage(before, unit)
        assert u.total > 0
        assert 0 <= u.used <= u.total
        assert 0 <= u.available <= u.total
    assert usage(before, Usage.BYTES).total >= 1 << 30  # JuiceFS reports a large volume, not the host disk

    size = 8 << 20
    write_synced(target / "data", size)
    used_before = usage(before, Usage.BYTES).used

    inodes_before = usage(before, Usage.INODES).used

    def grown() -> bool:  # JuiceFS flushes its usage counters asynchronously
        now = driver.volume_stats("pv-stats", target)
        return usage(now, Usage.BYTES).used >= used_before + size and usage(now, Usage.INODES).used > inodes_before

    wait_until(grown, 30, "used bytes and inodes include the written file", interval=0.2)


@pytest.mark.mounts
def test_stats_condition_when_the_client_is_killed(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    """Every answer is OK: abnormal while the client is down, normal (and true) once recovered."""
    target = workdir / "pods/killed/mount"
    driver.publish("pv-kill", target, sqlite_secret, {"subPath": "kill"})
    (target / "kept").write_text("survives")
    healthy_total = usage(driver.volume_stats("pv-kill", target), Usage.BYTES).total
    [pid] = driver.client_pids()

    os.killpg(pid, signal.SIGKILL)
    answers: list[csi_pb2.NodeGetVolumeStatsResponse] = []
    deadline = time.monotonic() + 20
    while True:
        response = driver.volume_stats("pv-kill", target)  # any status but OK raises and fails the test
        answers.append(response)
        if not response.volume_condition.abnormal:
            # "Normal" must be the truth: the target is served by JuiceFS again, not the bare host directory.
            assert usage(response, Usage.BYTES).total == healthy_total, (len(answers), response)
            if (target / "kept").exists() and (target / "kept").read_text() == "survives":
                break
        else:
            assert response.volume_condition.message
        assert time.monotonic() < deadline, f"condition not normal again within 20s: {answers[-1]}"
        time.sleep(0.005)
    assert driver.client_pids() != [pid]


@pytest.mark.mounts
def test_target_never_becomes_a_bare_directory_during_recovery(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/bare/mount"
    driver.publish("pv-bare", target, sqlite_secret, {"subPath": "bare"})
    [pid] = driver.client_pids()

    def recovered() -> bool:
        if driver.client_pids() in ([], [pid]) or mounts_at_path(target) != 1:
            return False
        try:
            return os.stat(target).st_ino != 0
        except OSError:
            return False

    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    bare = 0
    while not recovered():
        assert time.monotonic() < deadline, "no recovery within 20s"
        if mounts_at_path(target) == 0:
            bare += 1
    assert bare == 0, f"{target} was a bare directory on {bare} polls while its client recovered"
