"""Assembles a driver process from its configuration: services, mounter, metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web

from juicefs_csi import DRIVER_NAME
from juicefs_csi.controller.registry import VolumeRegistry
from juicefs_csi.controller.volumes import VolumeFiles
from juicefs_csi.csi.controller import ControllerService
from juicefs_csi.csi.identity import IdentityService
from juicefs_csi.csi.node import NodeService
from juicefs_csi.csi.proto import csi_pb2_grpc
from juicefs_csi.csi.server import start_server
from juicefs_csi.juicefs.runner import JuiceFS
from juicefs_csi.metrics import Metrics, serve_metrics
from juicefs_csi.mount.process import ProcessMounter, ProcessMounterConfig
from juicefs_csi.mount.state import make_private_dir

log = logging.getLogger("juicefs_csi.driver")


@dataclass(frozen=True)
class DriverConfig:
    endpoint: str
    node_id: str
    state_dir: Path
    mount_root: Path
    run_node: bool = True
    run_controller: bool = True
    driver_name: str = DRIVER_NAME
    web_host: str = "0.0.0.0"
    web_port: int | None = None
    client_metrics_host: str = "0.0.0.0"
    allowed_target_prefix: str = ""
    juicefs_binary: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Driver:
    def __init__(self, config: DriverConfig) -> None:
        self.config = config
        make_private_dir(config.state_dir)
        self.metrics = Metrics(config.node_id)
        self.juicefs = JuiceFS(config.juicefs_binary)
        self.mounter = ProcessMounter(
            ProcessMounterConfig(
                state_dir=config.state_dir / "node",
                mount_root=config.mount_root,
                metrics_host=config.client_metrics_host,
                allowed_target_prefix=config.allowed_target_prefix,
            ),
            self.juicefs,
            self.metrics,
        )
        self._server: grpc.aio.Server | None = None
        self._web: web.AppRunner | None = None

    async def start(self) -> None:
        await self.mounter.start()
        services: list[tuple[object, object]] = [
            (
                csi_pb2_grpc.add_IdentityServicer_to_server,
                IdentityService(self.juicefs, self.config.run_controller, self.config.driver_name),
            ),
        ]
        if self.config.run_controller:
            files = VolumeFiles(self.mounter, self.juicefs)
            registry = VolumeRegistry(self.config.state_dir / "controller" / "volumes")
            services.append((csi_pb2_grpc.add_ControllerServicer_to_server, ControllerService(files, registry)))
        if self.config.run_node:
            services.append(
                (csi_pb2_grpc.add_NodeServicer_to_server, NodeService(self.config.node_id, self.mounter, self.metrics))
            )
        self._server = await start_server(self.config.endpoint, services, self.metrics)  # type: ignore[arg-type]
        if self.config.web_port is not None:
            self._web = await serve_metrics(self.metrics, self.config.web_host, self.config.web_port)
        log.info(
            "driver started",
            extra={
                "node_id": self.config.node_id,
                "controller": self.config.run_controller,
                "node": self.config.run_node,
                "mode": "process",
            },
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stops serving; mounts and clients stay up for the next driver run."""
        if self._server is not None:
            await self._server.stop(grace)
        if self._web is not None:
            await self._web.cleanup()
        await self.mounter.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
