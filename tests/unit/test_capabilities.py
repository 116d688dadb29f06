"""Volume capabilities: any file-system access mode, never block."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pytest

from juicefs_csi.csi.capabilities import check_capabilities, is_read_only, unsupported_reason
from juicefs_csi.csi.proto import csi_pb2
from juicefs_csi.errors import InvalidArgument

VolumeCapability = csi_pb2.VolumeCapability
Mode = VolumeCapability.AccessMode.Mode
if TYPE_CHECKING:
    ModeValue: TypeAlias = csi_pb2.VolumeCapability.AccessMode.Mode.ValueType

ALL_MODES = [
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.MULTI_NODE_READER_ONLY,
    Mode.MULTI_NODE_SINGLE_WRITER,
    Mode.MULTI_NODE_MULTI_WRITER,
    Mode.SINGLE_NODE_SINGLE_WRITER,
    Mode.SINGLE_NODE_MULTI_WRITER,
]
READER_ONLY = {Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY}


def mount_capability(mode: ModeValue = Mode.MULTI_NODE_MULTI_WRITER, fs_type: str = "") -> csi_pb2.VolumeCapability:
    return VolumeCapability(
        mount=VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=["cache-size=100"]),
        access_mode=VolumeCapability.AccessMode(mode=mode),
    )


def block_capability(mode: ModeValue = Mode.SINGLE_NODE_WRITER) -> csi_pb2.VolumeCapability:
    return VolumeCapability(block=VolumeCapability.BlockVolume(), access_mode=VolumeCapability.AccessMode(mode=mode))


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("fs_type", ["", "juicefs"])
def test_every_file_system_access_mode_is_supported(mode: ModeValue, fs_type: str) -> None:
    capability = mount_capability(mode, fs_type)
    assert unsupported_reason(capability) is None
    check_capabilities([capability])


@pytest.mark.parametrize("mode", ALL_MODES)
def test_block_is_rejected(mode: ModeValue) -> None:
    reason = unsupported_reason(block_capability(mode))
    assert reason is not None
    assert "block" in reason
    with pytest.raises(InvalidArgument, match="block"):
        check_capabilities([mount_capability(), block_capability(mode)])


def test_missing_access_type_is_rejected() -> None:
    capability = VolumeCapability(access_mode=VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER))
    reason = unsupported_reason(capability)
    assert reason is not None
    assert "access_type" in reason


@pytest.mark.parametrize(
    "capability",
    [
        VolumeCapability(mount=VolumeCapability.MountVolume()),
        VolumeCapability(mount=VolumeCapability.MountVolume(), access_mode=VolumeCapability.AccessMode()),
        VolumeCapability(
            mount=VolumeCapability.MountVolume(), access_mode=VolumeCapability.AccessMode(mode=Mode.UNKNOWN)
        ),
        VolumeCapability(
            mount=VolumeCapability.MountVolume(), access_mode=VolumeCapability.AccessMode(mode=Mode.ValueType(99))
        ),
    ],
)
def test_missing_or_unknown_access_mode_is_rejected(capability: csi_pb2.VolumeCapability) -> None:
    reason = unsupported_reason(capability)
    assert reason is not None
    assert "access mode" in reason
    with pytest.raises(InvalidArgument, match="access mode"):
        check_capabilities([capability])


@pytest.mark.parametrize("fs_type", ["ext4", "xfs", "nfs", "JuiceFS", "fuse.juicefs", "juicefs "])
def test_other_fs_types_are_rejected(fs_type: str) -> None:
    reason = unsupported_reason(mount_capability(fs_type=fs_type))
    assert reason is not None
    assert repr(fs_type) in reason
    with pytest.raises(InvalidArgument, match="fs_type"):
        check_capabilities([mount_capability(fs_type=fs_type)])


def test_no_capabilities_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="required"):
        check_capabilities([])


def test_check_capabilities_accepts_a_generator() -> None:
    check_capabilities(mount_capability(mode) for mode in ALL_MODES)
    with pytest.raises(InvalidArgument, match="required"):
        check_capabilities(c for c in list[csi_pb2.VolumeCapability]())


@pytest.mark.parametrize("mode", ALL_MODES)
def test_reader_only_modes_are_read_only(mode: ModeValue) -> None:
    assert is_read_only(mount_capability(mode)) is (mode in READER_ONLY)
