"""Controller service over the real socket, checked against the real file system.

What CreateVolume/DeleteVolume did is verified through a separate view of the
file system root (a static volume published without subPath), and quotas with
the juicefs binary itself.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from juicefs_csi.csi.proto import csi_pb2
from tests.support.driver import GIB, AccessMode, DriverProcess, capability, expect_rpc_error

JUICEFS = str(Path(sys.executable).with_name("juicefs"))
Code = grpc.StatusCode
ControllerRPC = csi_pb2.ControllerServiceCapability.RPC
_views = itertools.count()


def create_request(
    name: str,
    secrets: dict[str, str],
    *,
    required: int = 0,
    limit: int = 0,
    caps: list[csi_pb2.VolumeCapability] | None = None,
    parameters: dict[str, str] | None = None,
) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit),
        volume_capabilities=[capability()] if caps is None else caps,
        parameters=parameters or {},
        secrets=secrets,
    )


def create(
    driver: DriverProcess,
    name: str,
    secrets: dict[str, str],
    *,
    required: int = 0,
    limit: int = 0,
    caps: list[csi_pb2.VolumeCapability] | None = None,
    parameters: dict[str, str] | None = None,
) -> csi_pb2.Volume:
    request = create_request(name, secrets, required=required, limit=limit, caps=caps, parameters=parameters)
    response: csi_pb2.CreateVolumeResponse = driver.controller.CreateVolume(request, timeout=60)
    return response.volume


def delete(driver: DriverProcess, volume_id: str, secrets: dict[str, str]) -> None:
    driver.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets), timeout=60)


def validate(
    driver: DriverProcess,
    volume_id: str,
    caps: list[csi_pb2.VolumeCapability],
    secrets: dict[str, str] | None = None,
) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
    request = csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume_id, volume_capabilities=caps, secrets=secrets or {}
    )
    response: csi_pb2.ValidateVolumeCapabilitiesResponse = driver.controller.ValidateVolumeCapabilities(
        request, timeout=60
    )
    return response


@contextlib.contextmanager
def root_view(driver: DriverProcess, secrets: dict[str, str], workdir: Path) -> Iterator[Path]:
    """A fresh client's view of the file system root: a static volume without subPath."""
    n = next(_views)
    target = workdir / "views" / str(n)
    volume_id = f"root-view-{n}"
    driver.publish(volume_id, target, secrets)
    try:
        yield target
    finally:
        driver.unpublish(volume_id, target)


def root_dirs(driver: DriverProcess, secrets: dict[str, str], workdir: Path) -> set[str]:
    with root_view(driver, secrets, workdir) as root:
        return {p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()}


def quota_gib(secrets: dict[str, str], sub_path: str) -> str:
    """The directory quota as `juicefs quota get` prints it, e.g. '3.0 GiB'."""
    result = subprocess.run(
        [JUICEFS, "quota", "get", secrets["metaurl"], "--path", f"/{sub_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    row = re.search(rf"^\|\s*/{re.escape(sub_path)}\s*\|\s*([^|]+?)\s*\|", result.stdout, re.MULTILINE)
    assert row, result.stdout + result.stderr
    return row.group(1)


# -- CreateVolume: bad requests ------------------------------------------------------------------------


def _no_name(r: csi_pb2.CreateVolumeRequest) -> None:
    r.ClearField("name")


def _no_capabilities(r: csi_pb2.CreateVolumeRequest) -> None:
    r.ClearField("volume_capabilities")


def _block(r: csi_pb2.CreateVolumeRequest) -> None:
    r.volume_capabilities[0].CopyFrom(capability(block=True))


def _no_secrets(r: csi_pb2.CreateVolumeRequest) -> None:
    r.ClearField("secrets")


def _required_above_limit(r: csi_pb2.CreateVolumeRequest) -> None:
    r.capacity_range.CopyFrom(csi_pb2.CapacityRange(required_bytes=2 * GIB, limit_bytes=GIB))


def _content_source(r: csi_pb2.CreateVolumeRequest) -> None:
    r.volume_content_source.snapshot.snapshot_id = "snap-1"


BAD_CREATE_REQUESTS: list[tuple[str, Callable[[csi_pb2.CreateVolumeRequest], None], str]] = [
    ("missing name", _no_name, "name"),
    ("no capabilities", _no_capabilities, "volume_capabilities"),
    ("block capability", _block, "block"),
    ("no secrets", _no_secrets, "Secret"),
    ("required above limit", _required_above_limit, "limit_bytes"),
    ("content source", _content_source, "snapshot"),
]


def test_create_volume_rejects_bad_requests(
    driver: DriverProcess, sqlite_secret: dict[str, str], subtests: pytest.Subtests
) -> None:
    for case, mutate, expected in BAD_CREATE_REQUESTS:
        with subtests.test(msg=case):
            request = create_request("pvc-bad", sqlite_secret, required=GIB)
            mutate(request)
            message = expect_rpc_error(Code.INVALID_ARGUMENT, driver.controller.CreateVolume, request, timeout=60)
            assert expected in message
            # Nothing was recorded: the volume is still unknown.
            expect_rpc_error(Code.NOT_FOUND, validate, driver, "pvc-bad", [capability()])


# -- CreateVolume: behaviour -----------------------------------------------------------------------------


@pytest.mark.mounts
def test_create_volume_makes_its_sub_directory_with_a_whole_gib_quota(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    volume = create(driver, "pvc-create", sqlite_secret, required=GIB + GIB // 2)
    assert volume.volume_id == "pvc-create"
    assert volume.capacity_bytes == 2 * GIB
    assert volume.volume_context["subPath"] == "pvc-create"
    assert volume.volume_context["capacity"] == str(2 * GIB)
    with root_view(driver, sqlite_secret, workdir) as root:
        assert (root / "pvc-create").is_dir()
        assert (root / "pvc-create").stat().st_mode & 0o777 == 0o777
    assert quota_gib(sqlite_secret, "pvc-create") == "2.0 GiB"


@pytest.mark.mounts
def test_create_volume_twice_gives_the_same_answer_and_one_directory(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    first = create(driver, "pvc-idem", sqlite_secret, required=GIB, parameters={"tier": "gold"})
    second = create(driver, "pvc-idem", sqlite_secret, required=GIB, parameters={"tier": "gold"})
    assert first == second
    assert first.volume_context["tier"] == "gold"
    assert root_dirs(driver, sqlite_secret, workdir) == {"pvc-idem"}


@pytest.mark.mounts
def test_create_volume_same_name_different_capacity_already_exists(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    create(driver, "pvc-clash", sqlite_secret, required=GIB)
    message = expect_rpc_error(
        Code.ALREADY_EXISTS,
        driver.controller.CreateVolume,
        create_request("pvc-clash", sqlite_secret, required=5 * GIB),
        timeout=60,
    )
    assert "pvc-clash" in message
    assert quota_gib(sqlite_secret, "pvc-clash") == "1.0 GiB"


# -- DeleteVolume ----------------------------------------------------------------------------------------


@pytest.mark.mounts
def test_delete_volume_removes_only_its_own_directory(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    doomed = create(driver, "pvc-doomed", sqlite_secret, required=GIB)
    kept = create(driver, "pvc-kept", sqlite_secret, required=GIB)
    a, b = workdir / "pods/a/vol", workdir / "pods/b/vol"
    driver.publish(doomed.volume_id, a, sqlite_secret, dict(doomed.volume_context))
    driver.publish(kept.volume_id, b, sqlite_secret, dict(kept.volume_context))
    (a / "nested/deeper").mkdir(parents=True)
    (a / "nested/deeper/file.txt").write_text("gone soon")
    (a / "top.txt").write_text("gone soon")
    (b / "keep.txt").write_text("still here")
    driver.unpublish(doomed.volume_id, a)
    driver.unpublish(kept.volume_id, b)

    delete(driver, "pvc-doomed", sqlite_secret)

    with root_view(driver, sqlite_secret, workdir) as root:
        names = {p.name for p in root.iterdir() if not p.name.startswith(".")}
        assert names == {"pvc-kept"}
        assert (root / "pvc-kept/keep.txt").read_text() == "still here"
    # Deleting again, or deleting something never created, is fine.
    delete(driver, "pvc-doomed", sqlite_secret)
    delete(driver, "pvc-never-existed", sqlite_secret)
    delete(driver, "pvc-never-existed", {})


# -- ValidateVolumeCapabilities ------------------------------------------------------------------------


def test_validate_unknown_volume_is_not_found(driver: DriverProcess) -> None:
    message = expect_rpc_error(Code.NOT_FOUND, validate, driver, "pvc-unknown", [capability()])
    assert "pvc-unknown" in message


@pytest.mark.mounts
def test_validate_unknown_volume_with_secrets_is_not_found(
    driver: DriverProcess, sqlite_secret: dict[str, str]
) -> None:
    expect_rpc_error(Code.NOT_FOUND, validate, driver, "pvc-unknown", [capability()], sqlite_secret)


@pytest.mark.mounts
def test_validate_known_volume_confirms_file_system_access_and_survives_a_restart(
    driver: DriverProcess, sqlite_secret: dict[str, str]
) -> None:
    create(driver, "pvc-valid", sqlite_secret, required=GIB)
    caps = [capability(AccessMode.MULTI_NODE_MULTI_WRITER), capability(AccessMode.MULTI_NODE_READER_ONLY)]

    response = validate(driver, "pvc-valid", caps)
    assert response.HasField("confirmed")
    assert list(response.confirmed.volume_capabilities) == caps

    block = validate(driver, "pvc-valid", [capability(block=True)])
    assert not block.HasField("confirmed")
    assert "block" in block.message

    driver.restart()
    again = validate(driver, "pvc-valid", caps)
    assert again.HasField("confirmed")
    assert list(again.confirmed.volume_capabilities) == caps


# -- ControllerExpandVolume --------------------------------------------------------------------------------


@pytest.mark.mounts
def test_expand_volume_raises_the_quota(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    create(driver, "pvc-grow", sqlite_secret, required=GIB)
    assert quota_gib(sqlite_secret, "pvc-grow") == "1.0 GiB"
    response = driver.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id="pvc-grow",
            capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB + 1),
            secrets=sqlite_secret,
            volume_capability=capability(),
        ),
        timeout=60,
    )
    assert response.capacity_bytes == 3 * GIB
    assert response.node_expansion_required is False
    assert quota_gib(sqlite_secret, "pvc-grow") == "3.0 GiB"
    # The registry follows: the original CreateVolume now clashes, one for the new size is idempotent.
    expect_rpc_error(
        Code.ALREADY_EXISTS,
        driver.controller.CreateVolume,
        create_request("pvc-grow", sqlite_secret, required=GIB),
        timeout=60,
    )
    assert create(driver, "pvc-grow", sqlite_secret, required=3 * GIB).capacity_bytes == 3 * GIB


def test_expand_volume_without_capacity_is_invalid(driver: DriverProcess, sqlite_secret: dict[str, str]) -> None:
    message = expect_rpc_error(
        Code.INVALID_ARGUMENT,
        driver.controller.ControllerExpandVolume,
        csi_pb2.ControllerExpandVolumeRequest(volume_id="pvc-any", secrets=sqlite_secret),
        timeout=60,
    )
    assert "capacity_range" in message


@pytest.mark.mounts
def test_expand_unknown_volume_is_not_found(driver: DriverProcess, sqlite_secret: dict[str, str]) -> None:
    message = expect_rpc_error(
        Code.NOT_FOUND,
        driver.controller.ControllerExpandVolume,
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id="pvc-nowhere",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
            secrets=sqlite_secret,
        ),
        timeout=60,
    )
    assert "pvc-nowhere" in message


# -- capabilities and what is not offered ------------------------------------------------------------------


def test_controller_capabilities(driver: DriverProcess) -> None:
    response = driver.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest(), timeout=10)
    offered = {c.rpc.type for c in response.capabilities}
    assert {ControllerRPC.CREATE_DELETE_VOLUME, ControllerRPC.EXPAND_VOLUME} <= offered
    # What is answered UNIMPLEMENTED must not be advertised.
    assert not offered & {
        ControllerRPC.PUBLISH_UNPUBLISH_VOLUME,
        ControllerRPC.LIST_VOLUMES,
        ControllerRPC.CREATE_DELETE_SNAPSHOT,
        ControllerRPC.GET_CAPACITY,
    }


UNOFFERED: list[tuple[str, object]] = [
    ("ControllerPublishVolume", csi_pb2.ControllerPublishVolumeRequest(volume_id="pvc-1", node_id="test-node")),
    ("ControllerUnpublishVolume", csi_pb2.ControllerUnpublishVolumeRequest(volume_id="pvc-1", node_id="test-node")),
    ("ListVolumes", csi_pb2.ListVolumesRequest()),
    ("GetCapacity", csi_pb2.GetCapacityRequest()),
    ("CreateSnapshot", csi_pb2.CreateSnapshotRequest(source_volume_id="pvc-1", name="snap-1")),
    ("DeleteSnapshot", csi_pb2.DeleteSnapshotRequest(snapshot_id="snap-1")),
    ("ListSnapshots", csi_pb2.ListSnapshotsRequest()),
]


def test_unoffered_rpcs_are_unimplemented(driver: DriverProcess, subtests: pytest.Subtests) -> None:
    for method, request_message in UNOFFERED:
        with subtests.test(msg=method):
            expect_rpc_error(Code.UNIMPLEMENTED, getattr(driver.controller, method), request_message, timeout=10)
