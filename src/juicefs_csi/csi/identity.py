"""Identity service: who the plugin is, and whether it can work (its `juicefs` binary answers)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.wrappers_pb2 import BoolValue

from juicefs_csi import DRIVER_NAME, __version__
from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.errors import DriverError
from juicefs_csi.juicefs.runner import JuiceFS

log = logging.getLogger("juicefs_csi.identity")
PluginCapability = csi_pb2.PluginCapability


class IdentityService(csi_pb2_grpc.IdentityServicer):
    def __init__(self, juicefs: JuiceFS, with_controller: bool, driver_name: str = DRIVER_NAME) -> None:
        self.juicefs = juicefs
        self.with_controller = with_controller
        self.driver_name = driver_name
        self._ready = False

    async def GetPluginInfo(  # noqa: N802 - gRPC method names
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self.driver_name, vendor_version=__version__)

    async def GetPluginCapabilities(  # noqa: N802
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        capabilities = [
            PluginCapability(
                volume_expansion=PluginCapability.VolumeExpansion(type=PluginCapability.VolumeExpansion.ONLINE)
            )
        ]
        if self.with_controller:
            capabilities.insert(
                0,
                PluginCapability(service=PluginCapability.Service(type=PluginCapability.Service.CONTROLLER_SERVICE)),
            )
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=capabilities)

    async def Probe(  # noqa: N802
        self, request: csi_pb2.ProbeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        """Ready once the client binary has answered; checked again only until it does."""
        if not self._ready:
            try:
                version = await self.juicefs.version()
            except DriverError as exc:
                log.warning("juicefs binary not ready", extra={"error": exc.message})
            else:
                self._ready = True
                log.info("juicefs binary answers", extra={"version": version})
        return csi_pb2.ProbeResponse(ready=BoolValue(value=self._ready))
