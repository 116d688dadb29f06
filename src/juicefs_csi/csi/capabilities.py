"""Which volume capabilities a JuiceFS volume satisfies: any file-system access mode, never block."""

from __future__ import annotations

from collections.abc import Iterable

from juicefs_csi.csi.proto import csi_pb2
from juicefs_csi.errors import InvalidArgument

Mode = csi_pb2.VolumeCapability.AccessMode.Mode
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})
SUPPORTED_MODES = frozenset(
    {
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.MULTI_NODE_READER_ONLY,
        Mode.MULTI_NODE_SINGLE_WRITER,
        Mode.MULTI_NODE_MULTI_WRITER,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    }
)


def unsupported_reason(capability: csi_pb2.VolumeCapability) -> str | None:
    if capability.WhichOneof("access_type") == "block":
        return "block access is not supported: JuiceFS volumes are file systems"
    if capability.WhichOneof("access_type") != "mount":
        return "volume capability must set access_type 'mount'"
    if not capability.HasField("access_mode") or capability.access_mode.mode not in SUPPORTED_MODES:
        return "volume capability has no supported access mode"
    fs_type = capability.mount.fs_type
    if fs_type and fs_type != "juicefs":
        return f"fs_type {fs_type!r} is not supported (use 'juicefs' or leave it empty)"
    return None


def check_capabilities(capabilities: Iterable[csi_pb2.VolumeCapability]) -> None:
    found = False
    for capability in capabilities:
        found = True
        reason = unsupported_reason(capability)
        if reason:
            raise InvalidArgument(reason)
    if not found:
        raise InvalidArgument("volume_capabilities are required")


def is_read_only(capability: csi_pb2.VolumeCapability) -> bool:
    return capability.access_mode.mode in READ_ONLY_MODES
