"""Wire-compatibility checks for the hand-written CSI protobuf definitions.

The facts below (service/RPC names, field numbers, field kinds, enum values)
were checked against the CSI spec (csi.v1, v1.10/v1.11). If one of these tests
fails, the generated code no longer talks to kubelet / the kubernetes-csi
sidecars correctly: fix csi.proto and rerun scripts/gen-proto.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import juicefs_csi  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from google.protobuf import descriptor as _d
from google.protobuf import descriptor_pb2, timestamp_pb2, wrappers_pb2

from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc

FILE = csi_pb2.DESCRIPTOR

# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------

SPEC_RPCS: dict[str, list[str]] = {
    "Identity": ["GetPluginInfo", "GetPluginCapabilities", "Probe"],
    "Controller": [
        "CreateVolume",
        "DeleteVolume",
        "ControllerPublishVolume",
        "ControllerUnpublishVolume",
        "ValidateVolumeCapabilities",
        "ListVolumes",
        "GetCapacity",
        "ControllerGetCapabilities",
        "CreateSnapshot",
        "DeleteSnapshot",
        "ListSnapshots",
        "ControllerExpandVolume",
        "ControllerGetVolume",
        "ControllerModifyVolume",
    ],
    "Node": [
        "NodeStageVolume",
        "NodeUnstageVolume",
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeGetVolumeStats",
        "NodeExpandVolume",
        "NodeGetCapabilities",
        "NodeGetInfo",
    ],
}

# RPCs whose request/response names do not follow "<Rpc>Request"/"<Rpc>Response".
_RPC_MESSAGE_OVERRIDES: dict[str, str] = {}


def test_package_is_csi_v1() -> None:
    assert FILE.package == "csi.v1"
    proto = descriptor_pb2.FileDescriptorProto()
    FILE.CopyToProto(proto)
    assert proto.syntax == "proto3"


def test_services_and_rpc_names_match_spec() -> None:
    assert set(FILE.services_by_name) == set(SPEC_RPCS)
    for service_name, rpcs in SPEC_RPCS.items():
        service = FILE.services_by_name[service_name]
        assert service.full_name == f"csi.v1.{service_name}"
        assert [m.name for m in service.methods] == rpcs
        for method in service.methods:
            stem = _RPC_MESSAGE_OVERRIDES.get(method.name, method.name)
            assert method.input_type.full_name == f"csi.v1.{stem}Request"
            assert method.output_type.full_name == f"csi.v1.{stem}Response"
            # All CSI RPCs are unary-unary.
            assert not method.client_streaming
            assert not method.server_streaming


def test_grpc_module_exposes_servicers_and_stubs() -> None:
    for service_name, rpcs in SPEC_RPCS.items():
        servicer = getattr(csi_pb2_grpc, f"{service_name}Servicer")
        stub = getattr(csi_pb2_grpc, f"{service_name}Stub")
        adder = getattr(csi_pb2_grpc, f"add_{service_name}Servicer_to_server")
        assert callable(adder)
        for rpc in rpcs:
            assert callable(getattr(servicer, rpc))
        assert stub is not None


def test_grpc_method_paths_on_the_wire() -> None:
    """kubelet and the sidecars call e.g. /csi.v1.Node/NodePublishVolume."""

    class _RecordingChannel:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def unary_unary(self, path: str, *args: object, **kwargs: object) -> object:
            self.paths.append(path)
            return object()

    for service_name, rpcs in SPEC_RPCS.items():
        channel = _RecordingChannel()
        getattr(csi_pb2_grpc, f"{service_name}Stub")(channel)
        assert channel.paths == [f"/csi.v1.{service_name}/{rpc}" for rpc in rpcs]


def test_grpc_module_imports_pb2_by_package_path() -> None:
    source = Path(csi_pb2_grpc.__file__).read_text()
    assert "from juicefs_csi.csi.proto import csi_pb2" in source
    assert "\nimport csi_pb2" not in source


# --------------------------------------------------------------------------
# Field numbers and kinds
# --------------------------------------------------------------------------

# Kinds: "string", "bytes", "bool", "int32", "int64", "map" (map<string,string>),
# "msg:<full name>", "enum:<full name>"; a "[]" prefix means repeated.
FIELDS: list[tuple[str, str, int, str]] = [
    # Identity
    ("GetPluginInfoResponse", "name", 1, "string"),
    ("GetPluginInfoResponse", "vendor_version", 2, "string"),
    ("GetPluginInfoResponse", "manifest", 3, "map"),
    ("GetPluginCapabilitiesResponse", "capabilities", 1, "[]msg:csi.v1.PluginCapability"),
    ("PluginCapability", "service", 1, "msg:csi.v1.PluginCapability.Service"),
    ("PluginCapability", "volume_expansion", 2, "msg:csi.v1.PluginCapability.VolumeExpansion"),
    ("PluginCapability.Service", "type", 1, "enum:csi.v1.PluginCapability.Service.Type"),
    ("PluginCapability.VolumeExpansion", "type", 1, "enum:csi.v1.PluginCapability.VolumeExpansion.Type"),
    ("ProbeResponse", "ready", 1, "msg:google.protobuf.BoolValue"),
    # CreateVolume
    ("CreateVolumeRequest", "name", 1, "string"),
    ("CreateVolumeRequest", "capacity_range", 2, "msg:csi.v1.CapacityRange"),
    ("CreateVolumeRequest", "volume_capabilities", 3, "[]msg:csi.v1.VolumeCapability"),
    ("CreateVolumeRequest", "parameters", 4, "map"),
    ("CreateVolumeRequest", "secrets", 5, "map"),
    ("CreateVolumeRequest", "volume_content_source", 6, "msg:csi.v1.VolumeContentSource"),
    ("CreateVolumeRequest", "accessibility_requirements", 7, "msg:csi.v1.TopologyRequirement"),
    ("CreateVolumeRequest", "mutable_parameters", 8, "map"),
    ("CreateVolumeResponse", "volume", 1, "msg:csi.v1.Volume"),
    ("VolumeContentSource", "snapshot", 1, "msg:csi.v1.VolumeContentSource.SnapshotSource"),
    ("VolumeContentSource", "volume", 2, "msg:csi.v1.VolumeContentSource.VolumeSource"),
    ("VolumeContentSource.SnapshotSource", "snapshot_id", 1, "string"),
    ("VolumeContentSource.VolumeSource", "volume_id", 1, "string"),
    # VolumeCapability
    ("VolumeCapability", "block", 1, "msg:csi.v1.VolumeCapability.BlockVolume"),
    ("VolumeCapability", "mount", 2, "msg:csi.v1.VolumeCapability.MountVolume"),
    ("VolumeCapability", "access_mode", 3, "msg:csi.v1.VolumeCapability.AccessMode"),
    ("VolumeCapability.MountVolume", "fs_type", 1, "string"),
    ("VolumeCapability.MountVolume", "mount_flags", 2, "[]string"),
    ("VolumeCapability.MountVolume", "volume_mount_group", 3, "string"),
    ("VolumeCapability.AccessMode", "mode", 1, "enum:csi.v1.VolumeCapability.AccessMode.Mode"),
    ("CapacityRange", "required_bytes", 1, "int64"),
    ("CapacityRange", "limit_bytes", 2, "int64"),
    # Volume / topology
    ("Volume", "capacity_bytes", 1, "int64"),
    ("Volume", "volume_id", 2, "string"),
    ("Volume", "volume_context", 3, "map"),
    ("Volume", "content_source", 4, "msg:csi.v1.VolumeContentSource"),
    ("Volume", "accessible_topology", 5, "[]msg:csi.v1.Topology"),
    ("TopologyRequirement", "requisite", 1, "[]msg:csi.v1.Topology"),
    ("TopologyRequirement", "preferred", 2, "[]msg:csi.v1.Topology"),
    ("Topology", "segments", 1, "map"),
    # DeleteVolume / ControllerPublish / ControllerUnpublish
    ("DeleteVolumeRequest", "volume_id", 1, "string"),
    ("DeleteVolumeRequest", "secrets", 2, "map"),
    ("ControllerPublishVolumeRequest", "volume_id", 1, "string"),
    ("ControllerPublishVolumeRequest", "node_id", 2, "string"),
    ("ControllerPublishVolumeRequest", "volume_capability", 3, "msg:csi.v1.VolumeCapability"),
    ("ControllerPublishVolumeRequest", "readonly", 4, "bool"),
    ("ControllerPublishVolumeRequest", "secrets", 5, "map"),
    ("ControllerPublishVolumeRequest", "volume_context", 6, "map"),
    ("ControllerPublishVolumeResponse", "publish_context", 1, "map"),
    ("ControllerUnpublishVolumeRequest", "volume_id", 1, "string"),
    ("ControllerUnpublishVolumeRequest", "node_id", 2, "string"),
    ("ControllerUnpublishVolumeRequest", "secrets", 3, "map"),
    # ValidateVolumeCapabilities
    ("ValidateVolumeCapabilitiesRequest", "volume_id", 1, "string"),
    ("ValidateVolumeCapabilitiesRequest", "volume_context", 2, "map"),
    ("ValidateVolumeCapabilitiesRequest", "volume_capabilities", 3, "[]msg:csi.v1.VolumeCapability"),
    ("ValidateVolumeCapabilitiesRequest", "parameters", 4, "map"),
    ("ValidateVolumeCapabilitiesRequest", "secrets", 5, "map"),
    ("ValidateVolumeCapabilitiesRequest", "mutable_parameters", 6, "map"),
    (
        "ValidateVolumeCapabilitiesResponse",
        "confirmed",
        1,
        "msg:csi.v1.ValidateVolumeCapabilitiesResponse.Confirmed",
    ),
    ("ValidateVolumeCapabilitiesResponse", "message", 2, "string"),
    ("ValidateVolumeCapabilitiesResponse.Confirmed", "volume_context", 1, "map"),
    (
        "ValidateVolumeCapabilitiesResponse.Confirmed",
        "volume_capabilities",
        2,
        "[]msg:csi.v1.VolumeCapability",
    ),
    ("ValidateVolumeCapabilitiesResponse.Confirmed", "parameters", 3, "map"),
    ("ValidateVolumeCapabilitiesResponse.Confirmed", "mutable_parameters", 4, "map"),
    # ListVolumes / ControllerGetVolume / ControllerModifyVolume
    ("ListVolumesRequest", "max_entries", 1, "int32"),
    ("ListVolumesRequest", "starting_token", 2, "string"),
    ("ListVolumesResponse", "entries", 1, "[]msg:csi.v1.ListVolumesResponse.Entry"),
    ("ListVolumesResponse", "next_token", 2, "string"),
    ("ListVolumesResponse.Entry", "volume", 1, "msg:csi.v1.Volume"),
    ("ListVolumesResponse.Entry", "status", 2, "msg:csi.v1.ListVolumesResponse.VolumeStatus"),
    ("ListVolumesResponse.VolumeStatus", "published_node_ids", 1, "[]string"),
    ("ListVolumesResponse.VolumeStatus", "volume_condition", 2, "msg:csi.v1.VolumeCondition"),
    ("ControllerGetVolumeRequest", "volume_id", 1, "string"),
    ("ControllerGetVolumeResponse", "volume", 1, "msg:csi.v1.Volume"),
    ("ControllerGetVolumeResponse", "status", 2, "msg:csi.v1.ControllerGetVolumeResponse.VolumeStatus"),
    ("ControllerGetVolumeResponse.VolumeStatus", "published_node_ids", 1, "[]string"),
    ("ControllerGetVolumeResponse.VolumeStatus", "volume_condition", 2, "msg:csi.v1.VolumeCondition"),
    ("ControllerModifyVolumeRequest", "volume_id", 1, "string"),
    ("ControllerModifyVolumeRequest", "secrets", 2, "map"),
    ("ControllerModifyVolumeRequest", "mutable_parameters", 3, "map"),
    # GetCapacity / ControllerGetCapabilities
    ("GetCapacityRequest", "volume_capabilities", 1, "[]msg:csi.v1.VolumeCapability"),
    ("GetCapacityRequest", "parameters", 2, "map"),
    ("GetCapacityRequest", "accessible_topology", 3, "msg:csi.v1.Topology"),
    ("GetCapacityResponse", "available_capacity", 1, "int64"),
    ("GetCapacityResponse", "maximum_volume_size", 2, "msg:google.protobuf.Int64Value"),
    ("GetCapacityResponse", "minimum_volume_size", 3, "msg:google.protobuf.Int64Value"),
    ("ControllerGetCapabilitiesResponse", "capabilities", 1, "[]msg:csi.v1.ControllerServiceCapability"),
    ("ControllerServiceCapability", "rpc", 1, "msg:csi.v1.ControllerServiceCapability.RPC"),
    ("ControllerServiceCapability.RPC", "type", 1, "enum:csi.v1.ControllerServiceCapability.RPC.Type"),
    # Snapshots
    ("CreateSnapshotRequest", "source_volume_id", 1, "string"),
    ("CreateSnapshotRequest", "name", 2, "string"),
    ("CreateSnapshotRequest", "secrets", 3, "map"),
    ("CreateSnapshotRequest", "parameters", 4, "map"),
    ("CreateSnapshotResponse", "snapshot", 1, "msg:csi.v1.Snapshot"),
    ("Snapshot", "size_bytes", 1, "int64"),
    ("Snapshot", "snapshot_id", 2, "string"),
    ("Snapshot", "source_volume_id", 3, "string"),
    ("Snapshot", "creation_time", 4, "msg:google.protobuf.Timestamp"),
    ("Snapshot", "ready_to_use", 5, "bool"),
    ("Snapshot", "group_snapshot_id", 6, "string"),
    ("DeleteSnapshotRequest", "snapshot_id", 1, "string"),
    ("DeleteSnapshotRequest", "secrets", 2, "map"),
    ("ListSnapshotsRequest", "max_entries", 1, "int32"),
    ("ListSnapshotsRequest", "starting_token", 2, "string"),
    ("ListSnapshotsRequest", "source_volume_id", 3, "string"),
    ("ListSnapshotsRequest", "snapshot_id", 4, "string"),
    ("ListSnapshotsRequest", "secrets", 5, "map"),
    ("ListSnapshotsResponse", "entries", 1, "[]msg:csi.v1.ListSnapshotsResponse.Entry"),
    ("ListSnapshotsResponse", "next_token", 2, "string"),
    ("ListSnapshotsResponse.Entry", "snapshot", 1, "msg:csi.v1.Snapshot"),
    # ControllerExpandVolume
    ("ControllerExpandVolumeRequest", "volume_id", 1, "string"),
    ("ControllerExpandVolumeRequest", "capacity_range", 2, "msg:csi.v1.CapacityRange"),
    ("ControllerExpandVolumeRequest", "secrets", 3, "map"),
    ("ControllerExpandVolumeRequest", "volume_capability", 4, "msg:csi.v1.VolumeCapability"),
    ("ControllerExpandVolumeResponse", "capacity_bytes", 1, "int64"),
    ("ControllerExpandVolumeResponse", "node_expansion_required", 2, "bool"),
    # Node
    ("NodeStageVolumeRequest", "volume_id", 1, "string"),
    ("NodeStageVolumeRequest", "publish_context", 2, "map"),
    ("NodeStageVolumeRequest", "staging_target_path", 3, "string"),
    ("NodeStageVolumeRequest", "volume_capability", 4, "msg:csi.v1.VolumeCapability"),
    ("NodeStageVolumeRequest", "secrets", 5, "map"),
    ("NodeStageVolumeRequest", "volume_context", 6, "map"),
    ("NodeUnstageVolumeRequest", "volume_id", 1, "string"),
    ("NodeUnstageVolumeRequest", "staging_target_path", 2, "string"),
    ("NodePublishVolumeRequest", "volume_id", 1, "string"),
    ("NodePublishVolumeRequest", "publish_context", 2, "map"),
    ("NodePublishVolumeRequest", "staging_target_path", 3, "string"),
    ("NodePublishVolumeRequest", "target_path", 4, "string"),
    ("NodePublishVolumeRequest", "volume_capability", 5, "msg:csi.v1.VolumeCapability"),
    ("NodePublishVolumeRequest", "readonly", 6, "bool"),
    ("NodePublishVolumeRequest", "secrets", 7, "map"),
    ("NodePublishVolumeRequest", "volume_context", 8, "map"),
    ("NodeUnpublishVolumeRequest", "volume_id", 1, "string"),
    ("NodeUnpublishVolumeRequest", "target_path", 2, "string"),
    ("NodeGetVolumeStatsRequest", "volume_id", 1, "string"),
    ("NodeGetVolumeStatsRequest", "volume_path", 2, "string"),
    ("NodeGetVolumeStatsRequest", "staging_target_path", 3, "string"),
    ("NodeGetVolumeStatsResponse", "usage", 1, "[]msg:csi.v1.VolumeUsage"),
    ("NodeGetVolumeStatsResponse", "volume_condition", 2, "msg:csi.v1.VolumeCondition"),
    ("VolumeUsage", "available", 1, "int64"),
    ("VolumeUsage", "total", 2, "int64"),
    ("VolumeUsage", "used", 3, "int64"),
    ("VolumeUsage", "unit", 4, "enum:csi.v1.VolumeUsage.Unit"),
    ("VolumeCondition", "abnormal", 1, "bool"),
    ("VolumeCondition", "message", 2, "string"),
    ("NodeGetCapabilitiesResponse", "capabilities", 1, "[]msg:csi.v1.NodeServiceCapability"),
    ("NodeServiceCapability", "rpc", 1, "msg:csi.v1.NodeServiceCapability.RPC"),
    ("NodeServiceCapability.RPC", "type", 1, "enum:csi.v1.NodeServiceCapability.RPC.Type"),
    ("NodeGetInfoResponse", "node_id", 1, "string"),
    ("NodeGetInfoResponse", "max_volumes_per_node", 2, "int64"),
    ("NodeGetInfoResponse", "accessible_topology", 3, "msg:csi.v1.Topology"),
    ("NodeExpandVolumeRequest", "volume_id", 1, "string"),
    ("NodeExpandVolumeRequest", "volume_path", 2, "string"),
    ("NodeExpandVolumeRequest", "capacity_range", 3, "msg:csi.v1.CapacityRange"),
    ("NodeExpandVolumeRequest", "staging_target_path", 4, "string"),
    ("NodeExpandVolumeRequest", "volume_capability", 5, "msg:csi.v1.VolumeCapability"),
    ("NodeExpandVolumeRequest", "secrets", 6, "map"),
    ("NodeExpandVolumeResponse", "capacity_bytes", 1, "int64"),
]

# Messages that the spec defines with no fields at all.
EMPTY_MESSAGES = [
    "GetPluginInfoRequest",
    "GetPluginCapabilitiesRequest",
    "ProbeRequest",
    "VolumeCapability.BlockVolume",
    "DeleteVolumeResponse",
    "ControllerUnpublishVolumeResponse",
    "ControllerModifyVolumeResponse",
    "ControllerGetCapabilitiesRequest",
    "DeleteSnapshotResponse",
    "NodeStageVolumeResponse",
    "NodeUnstageVolumeResponse",
    "NodePublishVolumeResponse",
    "NodeUnpublishVolumeResponse",
    "NodeGetCapabilitiesRequest",
    "NodeGetInfoRequest",
]

ONEOFS: list[tuple[str, str, list[str]]] = [
    ("PluginCapability", "type", ["service", "volume_expansion"]),
    ("VolumeContentSource", "type", ["snapshot", "volume"]),
    ("VolumeCapability", "access_type", ["block", "mount"]),
    ("ControllerServiceCapability", "type", ["rpc"]),
    ("NodeServiceCapability", "type", ["rpc"]),
]

_SCALAR_TYPES = {
    "string": _d.FieldDescriptor.TYPE_STRING,
    "bytes": _d.FieldDescriptor.TYPE_BYTES,
    "bool": _d.FieldDescriptor.TYPE_BOOL,
    "int32": _d.FieldDescriptor.TYPE_INT32,
    "int64": _d.FieldDescriptor.TYPE_INT64,
}


def _message(path: str) -> _d.Descriptor:
    top, *nested = path.split(".")
    desc = FILE.message_types_by_name[top]
    for name in nested:
        desc = desc.nested_types_by_name[name]
    return desc


def _is_repeated(field: _d.FieldDescriptor) -> bool:
    # protobuf >= 6.31 has `is_repeated`; `label` is gone in protobuf 7.
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is None:
        return bool(getattr(field, "label") == _d.FieldDescriptor.LABEL_REPEATED)  # noqa: B009
    return bool(is_repeated)


def _kind(field: _d.FieldDescriptor) -> str:
    repeated = _is_repeated(field)
    if field.type == _d.FieldDescriptor.TYPE_MESSAGE:
        entry = field.message_type
        assert entry is not None
        if repeated and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            assert key.number == 1 and value.number == 2
            assert key.type == value.type == _d.FieldDescriptor.TYPE_STRING
            return "map"
        kind = f"msg:{entry.full_name}"
    elif field.type == _d.FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        kind = f"enum:{field.enum_type.full_name}"
    else:
        names = {v: k for k, v in _SCALAR_TYPES.items()}
        kind = names.get(field.type, f"type#{field.type}")
    return f"[]{kind}" if repeated else kind


def test_field_table_is_large_enough() -> None:
    assert len(FIELDS) >= 40
    assert len({(m, f) for m, f, _, _ in FIELDS}) == len(FIELDS)


@pytest.mark.parametrize(("message", "field", "number", "kind"), FIELDS)
def test_field_number_and_kind(message: str, field: str, number: int, kind: str) -> None:
    desc = _message(message).fields_by_name[field]
    assert desc.number == number
    assert _kind(desc) == kind


def test_every_field_is_covered_by_the_table() -> None:
    """No extra (unverified) field may sneak into a message of the three services."""
    expected: dict[str, set[tuple[str, int]]] = {}
    for message, field, number, _ in FIELDS:
        expected.setdefault(message, set()).add((field, number))
    for message in EMPTY_MESSAGES:
        assert message not in expected
        expected[message] = set()

    seen: dict[str, set[tuple[str, int]]] = {}

    def walk(desc: _d.Descriptor, prefix: str) -> None:
        if desc.GetOptions().map_entry:
            return
        path = f"{prefix}{desc.name}"
        seen[path] = {(f.name, f.number) for f in desc.fields}
        for nested in desc.nested_types:
            walk(nested, f"{path}.")

    for top in FILE.message_types_by_name.values():
        walk(top, "")
    assert seen == expected


@pytest.mark.parametrize(("message", "oneof", "members"), ONEOFS)
def test_oneofs(message: str, oneof: str, members: list[str]) -> None:
    desc = _message(message)
    assert [o.name for o in desc.oneofs] == [oneof]
    assert [f.name for f in desc.oneofs_by_name[oneof].fields] == members


def test_well_known_type_imports() -> None:
    deps = {dep.name for dep in FILE.dependencies}
    assert deps == {"google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"}
    assert csi_pb2.ProbeResponse.DESCRIPTOR.fields_by_name["ready"].message_type is (wrappers_pb2.BoolValue.DESCRIPTOR)
    assert csi_pb2.Snapshot.DESCRIPTOR.fields_by_name["creation_time"].message_type is (
        timestamp_pb2.Timestamp.DESCRIPTOR
    )


# --------------------------------------------------------------------------
# Enums
# --------------------------------------------------------------------------


def _enum_values(enum: _d.EnumDescriptor) -> dict[str, int]:
    return {v.name: v.number for v in enum.values}


def test_access_mode_enum_values() -> None:
    mode = csi_pb2.VolumeCapability.AccessMode
    assert _enum_values(mode.Mode.DESCRIPTOR) == {
        "UNKNOWN": 0,
        "SINGLE_NODE_WRITER": 1,
        "SINGLE_NODE_READER_ONLY": 2,
        "MULTI_NODE_READER_ONLY": 3,
        "MULTI_NODE_SINGLE_WRITER": 4,
        "MULTI_NODE_MULTI_WRITER": 5,
        "SINGLE_NODE_SINGLE_WRITER": 6,
        "SINGLE_NODE_MULTI_WRITER": 7,
    }
    # The generated module exposes them as attributes, too.
    assert mode.MULTI_NODE_MULTI_WRITER == 5
    assert mode.SINGLE_NODE_SINGLE_WRITER == 6
    assert mode.SINGLE_NODE_MULTI_WRITER == 7


ENUMS: list[tuple[str, dict[str, int]]] = [
    (
        "PluginCapability.Service.Type",
        {
            "UNKNOWN": 0,
            "CONTROLLER_SERVICE": 1,
            "VOLUME_ACCESSIBILITY_CONSTRAINTS": 2,
            "GROUP_CONTROLLER_SERVICE": 3,
            "SNAPSHOT_METADATA_SERVICE": 4,
        },
    ),
    ("PluginCapability.VolumeExpansion.Type", {"UNKNOWN": 0, "ONLINE": 1, "OFFLINE": 2}),
    (
        "ControllerServiceCapability.RPC.Type",
        {
            "UNKNOWN": 0,
            "CREATE_DELETE_VOLUME": 1,
            "PUBLISH_UNPUBLISH_VOLUME": 2,
            "LIST_VOLUMES": 3,
            "GET_CAPACITY": 4,
            "CREATE_DELETE_SNAPSHOT": 5,
            "LIST_SNAPSHOTS": 6,
            "CLONE_VOLUME": 7,
            "PUBLISH_READONLY": 8,
            "EXPAND_VOLUME": 9,
            "LIST_VOLUMES_PUBLISHED_NODES": 10,
            "VOLUME_CONDITION": 11,
            "GET_VOLUME": 12,
            "SINGLE_NODE_MULTI_WRITER": 13,
            "MODIFY_VOLUME": 14,
        },
    ),
    (
        "NodeServiceCapability.RPC.Type",
        {
            "UNKNOWN": 0,
            "STAGE_UNSTAGE_VOLUME": 1,
            "GET_VOLUME_STATS": 2,
            "EXPAND_VOLUME": 3,
            "VOLUME_CONDITION": 4,
            "SINGLE_NODE_MULTI_WRITER": 5,
            "VOLUME_MOUNT_GROUP": 6,
        },
    ),
    ("VolumeUsage.Unit", {"UNKNOWN": 0, "BYTES": 1, "INODES": 2}),
]


@pytest.mark.parametrize(("path", "values"), ENUMS)
def test_enum_values(path: str, values: dict[str, int]) -> None:
    *message, enum_name = path.split(".")
    enum = _message(".".join(message)).enum_types_by_name[enum_name]
    assert _enum_values(enum) == values


# --------------------------------------------------------------------------
# Raw wire format
# --------------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _wire_fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """Decode one level of protobuf wire format: [(field number, wire type, payload)]."""
    out: list[tuple[int, int, bytes | int]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        payload: bytes | int
        if wire_type == 0:
            payload, pos = _read_varint(buf, pos)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            payload, pos = buf[pos : pos + length], pos + length
        else:  # CSI only uses varint and length-delimited fields
            raise AssertionError(f"unexpected wire type {wire_type} for field {number}")
        out.append((number, wire_type, payload))
    return out


def _full_volume_capability() -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(
            fs_type="juicefs", mount_flags=["ro", "noatime"], volume_mount_group="1000"
        ),
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
        ),
    )


def test_node_publish_volume_request_wire_numbers() -> None:
    req = csi_pb2.NodePublishVolumeRequest(
        volume_id="vol-1",
        publish_context={"pk": "pv"},
        staging_target_path="/var/lib/kubelet/plugins/staging",
        target_path="/var/lib/kubelet/pods/uid/volumes/mount",
        volume_capability=_full_volume_capability(),
        readonly=True,
        secrets={"token": "s3cr3t"},
        volume_context={"subPath": "a/b"},
    )
    fields = _wire_fields(req.SerializeToString())
    by_number = {number: (wire_type, payload) for number, wire_type, payload in fields}
    assert sorted(by_number) == [1, 2, 3, 4, 5, 6, 7, 8]

    assert by_number[1] == (2, b"vol-1")
    assert by_number[3] == (2, b"/var/lib/kubelet/plugins/staging")
    assert by_number[4] == (2, b"/var/lib/kubelet/pods/uid/volumes/mount")
    assert by_number[6] == (0, 1)
    # Map entries are messages {1: key, 2: value}.
    for number, key, value in ((2, b"pk", b"pv"), (7, b"token", b"s3cr3t"), (8, b"subPath", b"a/b")):
        wire_type, entry = by_number[number]
        assert wire_type == 2
        assert isinstance(entry, bytes)
        assert _wire_fields(entry) == [(1, 2, key), (2, 2, value)]

    # volume_capability (5): mount (2) + access_mode (3); block (1) absent.
    wire_type, cap = by_number[5]
    assert wire_type == 2 and isinstance(cap, bytes)
    cap_fields = _wire_fields(cap)
    assert [n for n, _, _ in cap_fields] == [2, 3]
    mount = cap_fields[0][2]
    assert isinstance(mount, bytes)
    assert _wire_fields(mount) == [
        (1, 2, b"juicefs"),
        (2, 2, b"ro"),
        (2, 2, b"noatime"),
        (3, 2, b"1000"),
    ]
    access_mode = cap_fields[1][2]
    assert isinstance(access_mode, bytes)
    assert _wire_fields(access_mode) == [(1, 0, 5)]

    # And it round-trips.
    assert csi_pb2.NodePublishVolumeRequest.FromString(req.SerializeToString()) == req


def test_golden_bytes_encoded_by_hand_from_the_spec() -> None:
    """Byte strings built by hand from the spec's field numbers decode as expected."""
    # NodeUnpublishVolumeRequest{volume_id(1)="v", target_path(2)="/t"}
    unpublish = csi_pb2.NodeUnpublishVolumeRequest.FromString(b"\x0a\x01v\x12\x02/t")
    assert (unpublish.volume_id, unpublish.target_path) == ("v", "/t")

    # NodeGetInfoResponse{node_id(1)="n1", max_volumes_per_node(2)=3,
    #                     accessible_topology(3)={segments(1)={"z": "a"}}}
    segment_entry = b"\x0a\x01z\x12\x01a"
    topology = b"\x0a" + bytes([len(segment_entry)]) + segment_entry
    info = csi_pb2.NodeGetInfoResponse.FromString(
        b"\x0a\x02n1" + b"\x10\x03" + b"\x1a" + bytes([len(topology)]) + topology
    )
    assert info.node_id == "n1"
    assert info.max_volumes_per_node == 3
    assert dict(info.accessible_topology.segments) == {"z": "a"}

    # ProbeResponse{ready(1)=BoolValue{value(1)=true}}
    probe = csi_pb2.ProbeResponse.FromString(b"\x0a\x02\x08\x01")
    assert probe.HasField("ready") and probe.ready.value is True

    # NodeGetCapabilitiesResponse{capabilities(1)=[{rpc(1)={type(1)=STAGE_UNSTAGE_VOLUME}}]}
    caps = csi_pb2.NodeGetCapabilitiesResponse.FromString(b"\x0a\x04\x0a\x02\x08\x01")
    assert caps.capabilities[0].rpc.type == csi_pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME

    # NodeGetVolumeStatsResponse{usage(1)=[{available(1)=1, total(2)=2, used(3)=1, unit(4)=BYTES}],
    #                            volume_condition(2)={abnormal(1)=true, message(2)="x"}}
    usage = b"\x08\x01\x10\x02\x18\x01\x20\x01"
    condition = b"\x08\x01\x12\x01x"
    stats = csi_pb2.NodeGetVolumeStatsResponse.FromString(
        b"\x0a" + bytes([len(usage)]) + usage + b"\x12" + bytes([len(condition)]) + condition
    )
    assert (stats.usage[0].available, stats.usage[0].total, stats.usage[0].used) == (1, 2, 1)
    assert stats.usage[0].unit == csi_pb2.VolumeUsage.BYTES
    assert stats.volume_condition.abnormal is True and stats.volume_condition.message == "x"


def test_create_volume_request_wire_numbers() -> None:
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-1",
        capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30, limit_bytes=1 << 31),
        volume_capabilities=[_full_volume_capability()],
        parameters={"p": "1"},
        secrets={"s": "2"},
        volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id="src")
        ),
        accessibility_requirements=csi_pb2.TopologyRequirement(
            requisite=[csi_pb2.Topology(segments={"zone": "a"})],
            preferred=[csi_pb2.Topology(segments={"zone": "a"})],
        ),
        mutable_parameters={"iops": "100"},
    )
    fields = _wire_fields(req.SerializeToString())
    assert sorted({n for n, _, _ in fields}) == [1, 2, 3, 4, 5, 6, 7, 8]
    content_source = next(p for n, _, p in fields if n == 6)
    assert isinstance(content_source, bytes)
    # oneof type: volume is field 2 of VolumeContentSource, volume_id is field 1.
    assert _wire_fields(content_source) == [(2, 2, b"\x0a\x03src")]
    capacity = next(p for n, _, p in fields if n == 2)
    assert isinstance(capacity, bytes)
    assert _wire_fields(capacity) == [(1, 0, 1 << 30), (2, 0, 1 << 31)]
