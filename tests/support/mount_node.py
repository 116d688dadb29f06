"""A node in mount pod mode for tests: the PodMounter, its reconciler and the test pod runner on one real volume."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from juicefs_csi.kube.node_pods import NodePods
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount.base import PublishRequest
from juicefs_csi.mount.pod import PodMounter, PodMounterConfig
from juicefs_csi.mount.state import PublishInputs
from juicefs_csi.mountpod.spec import MountPodEnvironment
from juicefs_csi.node.app_pod import POD_NAME, POD_NAMESPACE, POD_UID
from juicefs_csi.node.decisions import STUCK_AFTER_SECONDS, pod_uid_of_target
from juicefs_csi.node.global_config import GlobalConfigWatcher
from juicefs_csi.node.reconciler import Reconciler
from juicefs_csi.volume.settings import parse_volume_settings
from tests.support.driver import cleanup
from tests.support.kube import KubeAPI
from tests.support.podrunner import PodRunner

JUICEFS = str(Path(sys.executable).with_name("juicefs"))
NODE = "node-a"
PRIORITY_CLASS = "juicefs-mount-priority-nonpreempting"


@dataclass
class Node:
    mounter: PodMounter
    runner: PodRunner
    root: Path
    secret: dict[str, str]
    namespace: str
    kube_api: KubeAPI
    pods: NodePods | None = None
    registry: CollectorRegistry | None = None
    """The registry of `pods` (kubelet fallback gauge and error counter)."""
    watcher: GlobalConfigWatcher | None = None
    name: str = NODE

    def target(self, pod_uid: str, volume: str = "pv-a") -> str:
        return str(self.root / "kubelet/pods" / pod_uid / "volumes/kubernetes.io~csi" / volume / "mount")

    def request(
        self,
        target: str,
        volume_id: str = "pv-a",
        context: dict[str, str] | None = None,
        *,
        pod_info: bool = True,
    ) -> PublishRequest:
        """As the kubelet sends it; `pod_info` adds the podInfoOnMount keys (the target's uid, a made-up name)."""
        context = dict(context or {})
        uid = pod_uid_of_target(target)
        if pod_info and uid is not None:
            context = {POD_NAME: f"app-{uid[:8]}", POD_NAMESPACE: self.namespace, POD_UID: uid, **context}
        settings = parse_volume_settings(volume_id, self.secret, context, [])
        return PublishRequest(settings, target, False, PublishInputs(volume_id, self.secret, context, []))

    def app_pod(self, name: str, namespace: str | None = None) -> str:
        """An app pod bound to this node (the runner runs it: `sleep`); returns its uid."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace or self.namespace},
            "spec": {
                "nodeName": self.name,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}],
            },
        }
        return str(self.kube_api.create(body)["metadata"]["uid"])

    def mount_pods(self) -> list[dict[str, Any]]:
        listed = self.kube_api.list("pods", self.namespace, label_selector="app.kubernetes.io/name=juicefs-mount")
        return list(listed["items"])


async def eventually(probe: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await asyncio.to_thread(probe)
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def format_volume(root: Path) -> dict[str, str]:
    """A fresh file system under `root` (SQLite + file storage); returns its node-publish Secret."""
    meta, bucket = root / "meta.db", root / "bucket"
    await asyncio.to_thread(
        subprocess.run,
        [JUICEFS, "format", f"sqlite3://{meta}", "podvol", "--storage=file", f"--bucket={bucket}/"],
        check=True,
        capture_output=True,
    )
    return {"name": "podvol", "metaurl": f"sqlite3://{meta}"}


def ensure_priority_class(kube_api: KubeAPI) -> None:
    if kube_api.get_or_none("priorityclasses.scheduling.k8s.io", PRIORITY_CLASS) is None:
        kube_api.create(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": PRIORITY_CLASS},
                "value": 1000000000,
                "preemptionPolicy": "Never",
            }
        )


@contextlib.asynccontextmanager
async def mount_node(
    kube_api: KubeAPI,
    namespace: str,
    *,
    node_name: str = NODE,
    kubelet_env: Mapping[str, str] | None = None,
    token_file: Path | None = None,
    pods_options: Mapping[str, float] | None = None,
    app_pod_timeout: float = 5.0,
    config_state_file: Path | None = None,
    stuck_after: float = STUCK_AFTER_SECONDS,
) -> AsyncIterator[Node]:
    """A node in mount pod mode; `kubelet_env` (HOST_IP, KUBELET_PORT, ...) makes it poll a kubelet first."""
    root = Path(tempfile.mkdtemp(prefix="jfs-mp-"))
    secret = await format_volume(root)
    ensure_priority_class(kube_api)
    client = make_client(KubeSettings(kubeconfig=str(kube_api.kubeconfig_path)), request_counter(CollectorRegistry()))
    registry = CollectorRegistry()
    if kubelet_env is None:
        pods = NodePods(node_name, client, registry)
    else:
        pods = NodePods.from_env(
            node_name,
            client,
            registry,
            dict(kubelet_env),
            token_file=token_file or Path("/nonexistent/token"),
            **dict(pods_options or {}),
        )
    environment = MountPodEnvironment(
        namespace=namespace,
        mount_root=str(root / "volume"),
        priority_class=PRIORITY_CLASS,
        preemption_policy="Never",
    )
    watcher = GlobalConfigWatcher(client, namespace, state_file=config_state_file)
    await watcher.start()
    config = PodMounterConfig(
        node_name, environment, ready_timeout=30, app_pod_timeout=app_pod_timeout, stuck_after=stuck_after
    )
    mounter = PodMounter(client, pods, config, watcher, Metrics(node_name))
    reconciler = Reconciler(mounter, interval=1.0)
    runner = PodRunner(kube_api, node_name, root)
    await runner.start()
    await mounter.start()
    reconciler.start()
    try:
        yield Node(mounter, runner, root, secret, namespace, kube_api, pods, registry, watcher, node_name)
    finally:
        await reconciler.stop()
        await mounter.close()
        await watcher.stop()
        await runner.stop()
        await client.close()
        cleanup(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def node(kube_api: KubeAPI, kube_namespace: str) -> AsyncIterator[Node]:
    async with mount_node(kube_api, kube_namespace) as built:
        yield built
