"""Controller service: one sub-directory per volume inside the file system named by the Secret."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping

import grpc

from juicefs_csi.controller.registry import VolumeRecord, VolumeRegistry
from juicefs_csi.controller.volumes import VolumeFiles
from juicefs_csi.csi.capabilities import check_capabilities, unsupported_reason
from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.csi.server import unimplemented
from juicefs_csi.errors import AlreadyExists, InvalidArgument, NotFound, OutOfRange
from juicefs_csi.juicefs.commands import GIB, capacity_gib
from juicefs_csi.volume.settings import ATTR_SUB_PATH, validate_volume_id

log = logging.getLogger("juicefs_csi.controller")
ControllerCapability = csi_pb2.ControllerServiceCapability
ATTR_CAPACITY = "capacity"
# Kubernetes' external-provisioner adds these to parameters; they are not volume settings.
PROVISIONER_PREFIX = "csi.storage.k8s.io/"


class ControllerService(csi_pb2_grpc.ControllerServicer):
    def __init__(self, files: VolumeFiles, registry: VolumeRegistry) -> None:
        self.files = files
        self.registry = registry
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def CreateVolume(  # noqa: N802 - gRPC method names
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        if not request.name:
            raise InvalidArgument("name is required")
        volume_id = validate_volume_id(request.name)
        check_capabilities(request.volume_capabilities)
        if request.HasField("volume_content_source"):
            raise InvalidArgument("creating a volume from a snapshot or another volume is not supported")
        capacity = _capacity(request.capacity_range)
        parameters = {k: v for k, v in request.parameters.items() if not k.startswith(PROVISIONER_PREFIX)}
        async with self._locks[volume_id]:
            existing = self.registry.get(volume_id)
            if existing is not None:
                if existing.capacity_bytes != capacity or existing.parameters != parameters:
                    raise AlreadyExists(f"volume {volume_id} already exists with a different capacity or parameters")
                return _create_response(existing)
            _require_secrets(request.secrets, "CreateVolume")
            record = VolumeRecord(volume_id, volume_id, capacity, parameters)
            await self.files.create(request.secrets, record.sub_path, capacity)
            self.registry.put(record)
        log.info("volume created", extra={"volume_id": volume_id, "capacity_bytes": capacity})
        return _create_response(record)

    async def DeleteVolume(  # noqa: N802
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        volume_id = validate_volume_id(request.volume_id)
        async with self._locks[volume_id]:
            record = self.registry.get(volume_id)
            if record is None:
                log.info("delete of unknown volume is a no-op", extra={"volume_id": volume_id})
                return csi_pb2.DeleteVolumeResponse()
            _require_secrets(request.secrets, "DeleteVolume")
            await self.files.remove(request.secrets, record.sub_path)
            self.registry.delete(volume_id)
        self._locks.pop(volume_id, None)
        log.info("volume deleted", extra={"volume_id": volume_id, "sub_path": record.sub_path})
        return csi_pb2.DeleteVolumeResponse()

    async def ValidateVolumeCapabilities(  # noqa: N802
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        volume_id = validate_volume_id(request.volume_id)
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities are required")
        await self._require_volume(volume_id, request.secrets, request.volume_context)
        reasons = [r for r in map(unsupported_reason, request.volume_capabilities) if r]
        if reasons:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message="; ".join(reasons))
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    async def ControllerExpandVolume(  # noqa: N802
        self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        volume_id = validate_volume_id(request.volume_id)
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required")
        capacity = _capacity(request.capacity_range)
        if capacity == 0:
            raise InvalidArgument("capacity_range must ask for some bytes")
        _require_secrets(request.secrets, "ControllerExpandVolume")
        async with self._locks[volume_id]:
            record = self.registry.get(volume_id)
            sub_path = record.sub_path if record else volume_id
            if record is None and not await self.files.exists(request.secrets, sub_path):
                raise NotFound(f"volume {volume_id} does not exist")
            await self.files.resize(request.secrets, sub_path, capacity)
            if record is not None:
                self.registry.put(VolumeRecord(volume_id, sub_path, capacity, record.parameters))
        log.info("volume expanded", extra={"volume_id": volume_id, "capacity_bytes": capacity})
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=capacity, node_expansion_required=False)

    async def ControllerGetCapabilities(  # noqa: N802
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        types = (
            ControllerCapability.RPC.CREATE_DELETE_VOLUME,
            ControllerCapability.RPC.EXPAND_VOLUME,
            ControllerCapability.RPC.SINGLE_NODE_MULTI_WRITER,
        )
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[ControllerCapability(rpc=ControllerCapability.RPC(type=t)) for t in types]
        )

    # Not advertised in ControllerGetCapabilities; answered UNIMPLEMENTED as the spec asks.
    ControllerPublishVolume = unimplemented("ControllerPublishVolume")
    ControllerUnpublishVolume = unimplemented("ControllerUnpublishVolume")
    ListVolumes = unimplemented("ListVolumes")
    GetCapacity = unimplemented("GetCapacity")
    CreateSnapshot = unimplemented("CreateSnapshot")
    DeleteSnapshot = unimplemented("DeleteSnapshot")
    ListSnapshots = unimplemented("ListSnapshots")
    ControllerGetVolume = unimplemented("ControllerGetVolume")
    ControllerModifyVolume = unimplemented("ControllerModifyVolume")

    async def _require_volume(self, volume_id: str, secrets: Mapping[str, str], context: Mapping[str, str]) -> None:
        """Known from the registry, or, with secrets, found in the file system itself."""
        if self.registry.get(volume_id) is not None:
            return
        sub_path = context.get(ATTR_SUB_PATH, volume_id)
        if secrets and await self.files.exists(secrets, sub_path):
            return
        raise NotFound(f"volume {volume_id} does not exist")


def _capacity(capacity_range: csi_pb2.CapacityRange) -> int:
    """Quotas are whole GiB: round the request up, and refuse if that passes the limit."""
    required, limit = capacity_range.required_bytes, capacity_range.limit_bytes
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range bytes must not be negative")
    if limit and required > limit:
        raise InvalidArgument("capacity_range.required_bytes is larger than limit_bytes")
    if required == 0:
        if limit and limit < GIB:
            raise OutOfRange(f"capacity is allocated in whole GiB; limit {limit} bytes is below 1 GiB")
        return limit // GIB * GIB
    capacity = capacity_gib(required) * GIB
    if limit and capacity > limit:
        raise OutOfRange(f"capacity is allocated in whole GiB; {capacity} bytes would exceed limit {limit}")
    return capacity


def _require_secrets(secrets: Mapping[str, str], rpc: str) -> None:
    if not secrets:
        raise InvalidArgument(f"{rpc} needs the volume's Secret (provisioner/controller secrets are empty)")


def _create_response(record: VolumeRecord) -> csi_pb2.CreateVolumeResponse:
    context = {**record.parameters, ATTR_SUB_PATH: record.sub_path}
    if record.capacity_bytes:
        context[ATTR_CAPACITY] = str(record.capacity_bytes)
    return csi_pb2.CreateVolumeResponse(
        volume=csi_pb2.Volume(volume_id=record.volume_id, capacity_bytes=record.capacity_bytes, volume_context=context)
    )
