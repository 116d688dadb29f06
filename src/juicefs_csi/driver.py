"""Assembles a driver process from its configuration: services, mounters, Kubernetes parts, metrics.

Process mode runs clients as the driver's own processes; mount pod mode (when
Kubernetes is configured and `--by-process` is not set) runs them in mount pods.
The controller's file operations always use a process mount of the volume root. With Kubernetes the
controller also runs the leader work (the in-process provisioner with `--provisioner`, and the cleanup of
mount pods and helper Jobs in mount pod mode), behind a Lease election with `--leader-election`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from lightkube import AsyncClient
from prometheus_client import Counter

from juicefs_csi import DRIVER_NAME
from juicefs_csi.controller.cleanup import DEFAULT_GRACE_SECONDS
from juicefs_csi.controller.leader import LeaderWork, LeaderWorkConfig
from juicefs_csi.controller.provisioner import DEFAULT_WORKERS
from juicefs_csi.controller.registry import VolumeRegistry
from juicefs_csi.controller.volumes import VolumeFiles
from juicefs_csi.csi.controller import ControllerService
from juicefs_csi.csi.identity import IdentityService
from juicefs_csi.csi.node import NodeService
from juicefs_csi.csi.proto import csi_pb2_grpc
from juicefs_csi.csi.server import start_server
from juicefs_csi.juicefs.runner import JuiceFS
from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from juicefs_csi.kube.election import DEFAULT_LEASE_DURATION, LeaderElector, default_identity
from juicefs_csi.kube.node_pods import NodePods
from juicefs_csi.metrics import Metrics, serve_metrics
from juicefs_csi.mount.base import Mounter
from juicefs_csi.mount.pod import PodMounter, PodMounterConfig
from juicefs_csi.mount.process import ProcessMounter, ProcessMounterConfig
from juicefs_csi.mount.state import make_private_dir
from juicefs_csi.mountpod.spec import parse_environment
from juicefs_csi.node.global_config import GlobalConfigWatcher
from juicefs_csi.node.reconciler import Reconciler

log = logging.getLogger("juicefs_csi.driver")


@dataclass(frozen=True)
class DriverConfig:
    endpoint: str
    node_id: str
    state_dir: Path
    mount_root: Path
    run_node: bool = True
    run_controller: bool = True
    by_process: bool = True
    kube: KubeSettings | None = None
    driver_name: str = DRIVER_NAME
    web_host: str = "0.0.0.0"
    web_port: int | None = None
    client_metrics_host: str = "0.0.0.0"
    allowed_target_prefix: str = ""
    juicefs_binary: str | None = None
    # Controller work (needs `kube`): the in-process provisioner, and whether a Lease election gates it.
    provisioner: bool = False
    provisioner_workers: int = DEFAULT_WORKERS
    leader_election: bool = False
    leader_election_namespace: str | None = None
    leader_election_lease_duration: float = DEFAULT_LEASE_DURATION
    cleanup_grace: float = DEFAULT_GRACE_SECONDS


class Driver:
    def __init__(self, config: DriverConfig) -> None:
        self.config = config
        make_private_dir(config.state_dir)
        self.metrics = Metrics(config.node_id)
        self.juicefs = JuiceFS(config.juicefs_binary)
        self.processes = ProcessMounter(
            ProcessMounterConfig(
                state_dir=config.state_dir / "node",
                mount_root=config.mount_root,
                metrics_host=config.client_metrics_host,
                allowed_target_prefix=config.allowed_target_prefix,
            ),
            self.juicefs,
            self.metrics,
        )
        self.mounter: Mounter = self.processes
        self._server: grpc.aio.Server | None = None
        self._web: web.AppRunner | None = None
        self._stack = contextlib.AsyncExitStack()
        self._requests: Counter | None = None
        self._clients: list[AsyncClient] = []
        self.leader_work: LeaderWork | None = None
        self.elector: LeaderElector | None = None
        self._unelected: asyncio.Task[None] | None = None

    @property
    def mode(self) -> str:
        return "process" if self.config.by_process or self.config.kube is None else "mountpod"

    async def start(self) -> None:
        await self.processes.start()
        if self.config.run_node and self.mode == "mountpod":
            self.mounter = await self._stack.enter_async_context(self._mount_pod_mode())
        services: list[tuple[Any, Any]] = [
            (
                csi_pb2_grpc.add_IdentityServicer_to_server,
                IdentityService(self.juicefs, self.config.run_controller, self.config.driver_name),
            ),
        ]
        files: VolumeFiles | None = None
        if self.config.run_controller:
            files = VolumeFiles(self.processes, self.juicefs)
            registry = VolumeRegistry(self.config.state_dir / "controller" / "volumes")
            services.append((csi_pb2_grpc.add_ControllerServicer_to_server, ControllerService(files, registry)))
        if self.config.run_node:
            node = NodeService(self.config.node_id, self.mounter, self.metrics)
            services.append((csi_pb2_grpc.add_NodeServicer_to_server, node))
        self._server = await start_server(self.config.endpoint, services, self.metrics)
        if self.config.web_port is not None:
            self._web = await serve_metrics(self.metrics, self.config.web_host, self.config.web_port)
        if files is not None:
            self._start_leader_work(files)
        log.info(
            "driver started",
            extra={
                "node_id": self.config.node_id,
                "controller": self.config.run_controller,
                "node": self.config.run_node,
                "mode": self.mode,
                "provisioner": self.leader_work is not None and self.leader_work.config.provisioner,
                "leader_election": self.elector is not None,
            },
        )

    def _client(self) -> AsyncClient:
        """A client with its own token bucket; all share one request counter (one per registry is allowed)."""
        assert self.config.kube is not None
        if self._requests is None:
            self._requests = request_counter(self.metrics.registry)
        client = make_client(self.config.kube, self._requests)
        self._clients.append(client)
        return client

    def _start_leader_work(self, files: VolumeFiles) -> None:
        """The provisioner and the cleanup run once per cluster: on the leader, or here when not electing."""
        config = self.config
        if config.kube is None:
            return
        work_config = LeaderWorkConfig(
            driver_name=config.driver_name,
            provisioner=config.provisioner,
            workers=config.provisioner_workers,
            # Mount pods and the Go driver's helper Jobs exist only outside process mode (Go: the same).
            cleanup_namespace=parse_environment(os.environ).namespace if self.mode == "mountpod" else None,
            cleanup_grace=config.cleanup_grace,
        )
        if not (config.leader_election or config.provisioner or work_config.cleanup_namespace is not None):
            return
        work = LeaderWork(self._client(), files, work_config, events_client=self._client())
        self.leader_work = work
        if config.leader_election:
            if not config.leader_election_namespace:
                raise ValueError("leader election needs the namespace of its Lease")
            # Its own client (own token bucket): a burst of provisioning must not delay the renewals.
            self.elector = LeaderElector(
                self._client(),
                namespace=config.leader_election_namespace,
                identity=default_identity(),
                lease_duration=config.leader_election_lease_duration,
                registry=self.metrics.registry,
                on_started_leading=work.run,
                on_stopped_leading=lambda: None,
            )
            work.fence = self.elector.check
            self.elector.start()
        elif work.enabled:
            self._unelected = asyncio.create_task(work.run_unelected(), name="controller-work")

    @contextlib.asynccontextmanager
    async def _mount_pod_mode(self) -> AsyncIterator[PodMounter]:
        """The node's pod cache, the global ConfigMap, the mount pod mounter and its reconciler."""
        client = self._client()
        environment = parse_environment(os.environ)
        pods = NodePods.from_env(self.config.node_id, client, self.metrics.registry)
        # The last good ConfigMap is kept on disk: a restart while it is broken still has it.
        watcher = GlobalConfigWatcher(client, environment.namespace, state_file=self.config.state_dir / "global-config")
        await watcher.start()
        mounter = PodMounter(
            client,
            pods,
            PodMounterConfig(
                self.config.node_id,
                environment,
                allowed_target_prefix=self.config.allowed_target_prefix,
                driver_name=self.config.driver_name,
            ),
            watcher,
            self.metrics,
        )
        await mounter.start()
        reconciler = Reconciler(mounter)
        reconciler.start()
        try:
            yield mounter
        finally:
            await reconciler.stop()
            await mounter.close()
            await watcher.stop()

    async def stop(self, grace: float = 5.0) -> None:
        """Stops serving; mounts, clients and mount pods stay up for the next driver run.

        Leader work stops first (in-flight provisioning gets `grace`), then the elector (which releases
        the lease, so another replica takes over at once), then the Kubernetes clients.
        """
        if self._server is not None:
            await self._server.stop(grace)
        if self.leader_work is not None:
            await self.leader_work.stop(grace)
        if self.elector is not None:
            await self.elector.stop()
        if self._unelected is not None:
            self._unelected.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._unelected
        if self._web is not None:
            await self._web.cleanup()
        await self._stack.aclose()
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.close()
        await self.processes.close()
