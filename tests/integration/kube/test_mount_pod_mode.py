"""Mount pod mode end to end: real juicefs mounts through mount pods run by the test pod runner."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
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
from tests.support.driver import cleanup, mounts_under
from tests.support.kube import KubeAPI
from tests.support.podrunner import PodRunner

pytestmark = pytest.mark.mounts
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


async def test_publish_shares_one_mount_pod_and_unpublish_removes_it(node: Node) -> None:
    a, b = node.target("11111111-1111-1111-1111-111111111111"), node.target("22222222-2222-2222-2222-222222222222")
    await node.mounter.publish(node.request(a, context={"subPath": "pv-a"}))
    await node.mounter.publish(node.request(b, context={"subPath": "pv-a"}))
    Path(a, "hello").write_text("shared")
    assert Path(b, "hello").read_text() == "shared"
    pods = node.mount_pods()
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "juicefs-mount"
    assert pod["spec"]["priorityClassName"] == PRIORITY_CLASS
    assert pod["spec"]["preemptionPolicy"] == "Never"
    ports = pod["spec"]["containers"][0]["ports"]
    assert ports == [{"name": "metrics", "containerPort": 9567, "protocol": "TCP"}] or ports[0]["name"] == "metrics"
    await node.mounter.unpublish(a)
    assert len(node.mount_pods()) == 1
    await node.mounter.unpublish(b)
    await eventually(lambda: not node.mount_pods(), 30, "mount pod deletion")
    await eventually(lambda: not mounts_under(node.root), 10, "unmounts")


async def test_client_crash_is_recovered_and_targets_serve_again(node: Node) -> None:
    target = node.target("33333333-3333-3333-3333-333333333333")
    await node.mounter.publish(node.request(target))
    Path(target, "before").write_text("kept")
    pod = node.mount_pods()[0]
    node.runner.kill_container(node.namespace, pod["metadata"]["name"], "jfs-mount", signal.SIGKILL)

    def serves() -> bool:
        return Path(target, "before").read_text() == "kept" and os.path.ismount(target)

    await eventually(serves, 30, "target to serve again after the client crash")
    Path(target, "after").write_text("new")
    assert Path(target, "after").read_text() == "new"
    await node.mounter.unpublish(target)


async def test_concurrent_first_publishes_create_one_mount_pod(node: Node) -> None:
    targets = [node.target(f"44444444-4444-4444-4444-{i:012d}") for i in range(20)]
    await asyncio.gather(*(node.mounter.publish(node.request(t)) for t in targets))
    assert len(node.mount_pods()) == 1
    assert all(os.path.ismount(t) for t in targets)
    await asyncio.gather(*(node.mounter.unpublish(t) for t in targets))
    await eventually(lambda: not node.mount_pods(), 30, "mount pod deletion")
