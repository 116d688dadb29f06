"""A node in mount pod mode for tests: the PodMounter, its reconciler and the test pod runner on one real volume."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
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

    def target(self, pod_uid: str, volume: str = "pv-a") -> str:
        return str(self.root / "kubelet/pods" / pod_uid / "volumes/kubernetes.io~csi" / volume / "mount")

    def request(self, target: str, volume_id: str = "pv-a", context: dict[str, str] | None = None) -> PublishRequest:
        context = context or {}
        settings = parse_volume_settings(volume_id, self.secret, context, [])
        return PublishRequest(settings, target, False, PublishInputs(volume_id, self.secret, context, []))

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


@pytest.fixture
async def node(kube_api: KubeAPI, kube_namespace: str) -> AsyncIterator[Node]:
    root = Path(tempfile.mkdtemp(prefix="jfs-mp-"))
    meta, bucket = root / "meta.db", root / "bucket"
    await asyncio.to_thread(
        subprocess.run,
        [JUICEFS, "format", f"sqlite3://{meta}", "podvol", "--storage=file", f"--bucket={bucket}/"],
        check=True,
        capture_output=True,
    )
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
    client = make_client(KubeSettings(kubeconfig=str(kube_api.kubeconfig_path)), request_counter(CollectorRegistry()))
    pods = NodePods(NODE, client, CollectorRegistry())
    environment = MountPodEnvironment(
        namespace=kube_namespace,
        mount_root=str(root / "volume"),
        priority_class=PRIORITY_CLASS,
        preemption_policy="Never",
    )
    watcher = GlobalConfigWatcher(client, kube_namespace)
    await watcher.start()
    mounter = PodMounter(client, pods, PodMounterConfig(NODE, environment, ready_timeout=30), watcher, Metrics(NODE))
    reconciler = Reconciler(mounter, interval=1.0)
    runner = PodRunner(kube_api, NODE, root)
    await runner.start()
    await mounter.start()
    reconciler.start()
    secret = {"name": "podvol", "metaurl": f"sqlite3://{meta}"}
    try:
        yield Node(mounter, runner, root, secret, kube_namespace, kube_api)
    finally:
        await reconciler.stop()
        await mounter.close()
        await watcher.stop()
        await runner.stop()
        cleanup(root)
        shutil.rmtree(root, ignore_errors=True)
