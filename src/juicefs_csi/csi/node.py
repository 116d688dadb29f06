"""Node service: publish a volume at a target path, unpublish it, and report its health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import grpc

from juicefs_csi.csi.capabilities import is_read_only, unsupported_reason
from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.csi.server import unimplemented
from juicefs_csi.errors import DriverError, InvalidArgument, NotFound
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount import health
from juicefs_csi.mount.base import Mounter, PublishRequest
from juicefs_csi.mount.state import PublishInputs
from juicefs_csi.mount.targets import mount_entries, validate_target
from juicefs_csi.volume.settings import parse_volume_settings, validate_volume_id

log = logging.getLogger("juicefs_csi.node")
NodeCapability = csi_pb2.NodeServiceCapability
POD_UID_ATTRIBUTE = "csi.storage.k8s.io/pod.uid"
STATS_TIMEOUT_SECONDS = 5.0
# statfs of a hung FUSE mount blocks its thread: a bounded pool caps what a hung volume costs.
_STATS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="volume-stats")


class NodeService(csi_pb2_grpc.NodeServicer):
    def __init__(self, node_id: str, mounter: Mounter, metrics: Metrics) -> None:
        self.node_id = node_id
        self.mounter = mounter
        self.metrics = metrics

    async def NodePublishVolume(  # noqa: N802 - gRPC method names
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        try:
            publish = _publish_request(request)
            published = await self.mounter.publish(publish)
        except DriverError:
            self.metrics.volume_errors.labels(self.node_id).inc()
            raise
        log.info(
            "volume published",
            extra={
                "volume_id": request.volume_id,
                "target": published.target,
                "read_only": publish.read_only,
                "pod_uid": request.volume_context.get(POD_UID_ATTRIBUTE, ""),
            },
        )
        return csi_pb2.NodePublishVolumeResponse()

    async def NodeUnpublishVolume(  # noqa: N802
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        validate_volume_id(request.volume_id)
        target = validate_target(request.target_path)
        try:
            await self.mounter.unpublish(target)
        except DriverError:
            self.metrics.volume_del_errors.labels(self.node_id).inc()
            raise
        except OSError as exc:
            self.metrics.volume_del_errors.labels(self.node_id).inc()
            raise InvalidArgument(f"cannot unpublish {target}: {exc.strerror}") from None
        self._forget_health(request.volume_id, target)
        log.info("volume unpublished", extra={"volume_id": request.volume_id, "target": target})
        return csi_pb2.NodeUnpublishVolumeResponse()

    async def NodeGetVolumeStats(  # noqa: N802
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        validate_volume_id(request.volume_id)
        if not request.volume_path:
            raise InvalidArgument("volume_path is required")
        path = validate_target(request.volume_path)
        published = self.mounter.published(path)
        if published is None or published.volume_id != request.volume_id:
            raise NotFound(f"volume {request.volume_id} is not published at {path} on this node")
        state, reason = await health.probe(path)
        stats = None
        if state is health.PathState.HEALTHY:
            stats, reason = await _juicefs_statvfs(path)
        labels = (self.node_id, request.volume_id, path, "")
        if stats is None:
            self.metrics.volume_path_health.labels(*labels).set(0)
            return csi_pb2.NodeGetVolumeStatsResponse(
                volume_condition=csi_pb2.VolumeCondition(abnormal=True, message=reason)
            )
        self.metrics.volume_path_health.labels(*labels).set(1)
        usage = csi_pb2.VolumeUsage
        total, free = stats.f_blocks * stats.f_frsize, stats.f_bfree * stats.f_frsize
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                usage(unit=usage.BYTES, total=total, available=stats.f_bavail * stats.f_frsize, used=total - free),
                usage(
                    unit=usage.INODES, total=stats.f_files, available=stats.f_ffree, used=stats.f_files - stats.f_ffree
                ),
            ],
            volume_condition=csi_pb2.VolumeCondition(abnormal=False, message="mount point answers"),
        )

    async def NodeGetCapabilities(  # noqa: N802
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        types = (
            NodeCapability.RPC.GET_VOLUME_STATS,
            NodeCapability.RPC.VOLUME_CONDITION,
            NodeCapability.RPC.SINGLE_NODE_MULTI_WRITER,
        )
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[NodeCapability(rpc=NodeCapability.RPC(type=t)) for t in types]
        )

    async def NodeGetInfo(  # noqa: N802
        self, request: csi_pb2.NodeGetInfoRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self.node_id)

    # No staging and no node-side expansion: a JuiceFS quota grows in the controller.
    NodeStageVolume = unimplemented("NodeStageVolume")
    NodeUnstageVolume = unimplemented("NodeUnstageVolume")
    NodeExpandVolume = unimplemented("NodeExpandVolume")

    def _forget_health(self, volume_id: str, target: str) -> None:
        with contextlib.suppress(KeyError):
            self.metrics.volume_path_health.remove(self.node_id, volume_id, target, "")


def _statvfs_with_device(path: str) -> tuple[os.statvfs_result, str]:
    """statfs and the device of one open directory, so both describe the same file system."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        device = os.fstat(fd).st_dev
        return os.fstatvfs(fd), f"{os.major(device)}:{os.minor(device)}"
    finally:
        os.close(fd)


async def _juicefs_statvfs(path: str) -> tuple[os.statvfs_result | None, str]:
    """The statfs of the JuiceFS mount at `path`, or why there is none to report.

    A plain stat may still succeed from the kernel's attribute cache after the client died, and
    while a client is recovered the target is briefly a bare directory: only statfs answered by
    a JuiceFS mount sitting at `path` is the volume's usage.
    """
    loop = asyncio.get_running_loop()
    try:
        stats, device = await asyncio.wait_for(
            loop.run_in_executor(_STATS, _statvfs_with_device, path), STATS_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return None, f"statfs {path} did not answer within {STATS_TIMEOUT_SECONDS:.0f}s"
    except OSError as exc:
        return None, f"{path}: {os.strerror(exc.errno or 0)}"
    if not any(entry.is_juicefs and entry.device == device for entry in await mount_entries(path)):
        return None, f"{path} is not a JuiceFS mount (its client may be restarting)"
    return stats, ""


def _publish_request(request: csi_pb2.NodePublishVolumeRequest) -> PublishRequest:
    """Validate in the order a user fixes things: ids, paths, capability, then the Secret."""
    validate_volume_id(request.volume_id)
    target = validate_target(request.target_path)
    if not request.HasField("volume_capability"):
        raise InvalidArgument("volume_capability is required")
    reason = unsupported_reason(request.volume_capability)
    if reason:
        raise InvalidArgument(reason)
    mount_flags = list(request.volume_capability.mount.mount_flags)
    secrets, context = dict(request.secrets), dict(request.volume_context)
    settings = parse_volume_settings(request.volume_id, secrets, context, mount_flags)
    read_only = request.readonly or is_read_only(request.volume_capability)
    inputs = PublishInputs(request.volume_id, secrets, context, mount_flags)
    return PublishRequest(settings, target, read_only, inputs)
