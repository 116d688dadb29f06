"""Mount pod mode end to end: real juicefs mounts through mount pods run by the test pod runner."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.support.driver import mounts_under
from tests.support.mount_node import PRIORITY_CLASS, Node, eventually

pytestmark = pytest.mark.mounts


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
    targets = [node.target(f"44444444-4444-4444-4444-{i:012d}") for i in range(50)]
    await asyncio.gather(*(node.mounter.publish(node.request(t)) for t in targets))
    assert len(node.mount_pods()) == 1
    assert all(os.path.ismount(t) for t in targets)
    await asyncio.gather(*(node.mounter.unpublish(t) for t in targets))
    await eventually(lambda: not node.mount_pods(), 30, "mount pod deletion")
