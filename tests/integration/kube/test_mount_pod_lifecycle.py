"""The mount pod lifecycle of the node reconciler, with real juicefs mounts run by the test pod runner.

Delayed deletion and reuse, replacement of a deleted pod, a pod stuck terminating, resource
failures, stale references, and that nothing (mount, bind, pod, Secret, directory) outlives
the last unpublish.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from juicefs_csi.errors import DriverError
from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import by_mount_point, read_mounts
from juicefs_csi.mountpod.names import (
    ANN_DELETE_AT,
    ANN_DELETE_DELAY,
    CONFIG_MAP_KEY,
    CONFIG_MAP_NAME,
    FINALIZER,
    LABEL_SECRET,
    MOUNT_CONTAINER,
    POD_MOUNT_BASE,
    is_reference_key,
    reference_key,
)
from tests.support.driver import mounts_under
from tests.support.kube import KubeAPI
from tests.support.mount_node import Node, eventually, mount_node

pytestmark = pytest.mark.mounts

Obj = dict[str, Any]
STUCK_AFTER = 1.0


@pytest.fixture
async def node(kube_api: KubeAPI, kube_namespace: str) -> AsyncIterator[Node]:
    """A node whose reconciler calls a terminating mount pod stuck 1 s after its grace period."""
    async with mount_node(kube_api, kube_namespace, stuck_after=STUCK_AFTER) as built:
        yield built


def new_target(node: Node) -> str:
    return node.target(str(uuid.uuid4()))


def only_mount_pod(node: Node) -> Obj:
    pods = node.mount_pods()
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def refs(pod: Obj) -> dict[str, str]:
    return {k: v for k, v in (pod["metadata"].get("annotations") or {}).items() if is_reference_key(k)}


def host_path(node: Node, pod: Obj) -> str:
    """The pod's mount point on the node, from its mount command (as the driver reads it)."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == MOUNT_CONTAINER)
    arg = next(a for a in container["command"] if a.startswith(POD_MOUNT_BASE + "/"))
    return str(node.root / "volume" / arg[len(POD_MOUNT_BASE) + 1 :])


def top_device(path: str) -> str | None:
    """The device of the juicefs mount on top of `path`, from the mount table (never stats the path)."""
    stacked = by_mount_point(read_mounts()).get(path) or []
    return stacked[-1].device if stacked and stacked[-1].is_juicefs else None


def secrets(node: Node) -> list[Obj]:
    return list(node.kube_api.list("secrets", node.namespace, label_selector=f"{LABEL_SECRET}=true")["items"])


def owner_uids(secret: Obj) -> set[str]:
    return {ref["uid"] for ref in secret["metadata"].get("ownerReferences") or []}


async def assert_nothing_left(node: Node) -> None:
    """After the last unpublish: no mount pod, mount, bind, mount directory or per-mount Secret."""
    await eventually(lambda: not node.mount_pods(), 20, "mount pods to go")
    await eventually(lambda: not mounts_under(node.root), 10, "mounts and binds to go")
    volume = node.root / "volume"
    await eventually(lambda: not volume.exists() or not any(volume.iterdir()), 10, "mount directories to go")
    if node.kube_api.has_controllers:  # the garbage collector deletes the Secret with its last owner
        await eventually(lambda: not secrets(node), 10, "the per-mount Secret to be collected")
    else:  # no garbage collector (envtest without kube-controller-manager): every owner is gone
        for secret in secrets(node):
            assert owner_uids(secret) and all(
                not any(p["metadata"]["uid"] == uid for p in node.kube_api.list("pods", node.namespace)["items"])
                for uid in owner_uids(secret)
            )


async def set_delay_patch(node: Node, delay: str) -> None:
    """The Go driver's other form: the `juicefs-delete-delay` annotation from the global ConfigMap."""
    config = {"mountPodPatch": [{"annotations": {ANN_DELETE_DELAY: delay}}]}
    node.kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP_NAME, "namespace": node.namespace},
            "data": {CONFIG_MAP_KEY: json.dumps(config)},
        }
    )
    assert node.watcher is not None
    watcher = node.watcher
    await eventually(lambda: watcher.current.mount_pod_patch, 10, "the ConfigMap to load")


# --- delayed deletion -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["volume attribute", "ConfigMap annotation"])
async def test_delayed_deletion_keeps_the_pod_and_a_publish_in_time_reuses_it(node: Node, form: str) -> None:
    context = {"juicefs/mount-delete-delay": "2s"} if form == "volume attribute" else {}
    if form == "ConfigMap annotation":
        await set_delay_patch(node, "2s")
    first, second = new_target(node), new_target(node)
    await node.mounter.publish(node.request(first, context=context))
    Path(first, "kept").write_text("across the delay")
    pod = only_mount_pod(node)
    name = pod["metadata"]["name"]
    assert pod["metadata"]["annotations"][ANN_DELETE_DELAY] == "2s"

    before = datetime.now(UTC)
    await node.mounter.unpublish(first)

    def marked() -> Obj | None:
        current = node.kube_api.get_or_none("pods", name, node.namespace)
        return current if current and ANN_DELETE_AT in current["metadata"]["annotations"] else None

    kept = await eventually(marked, 5, "the delete-at annotation")
    deadline = datetime.fromisoformat(kept["metadata"]["annotations"][ANN_DELETE_AT].replace("Z", "+00:00"))
    assert 1.0 <= (deadline - before).total_seconds() <= 4.0
    assert not refs(kept) and not kept["metadata"].get("deletionTimestamp")

    await node.mounter.publish(node.request(second, context=context))  # within the delay
    reused = only_mount_pod(node)
    assert reused["metadata"]["name"] == name
    assert ANN_DELETE_AT not in reused["metadata"]["annotations"]
    assert Path(second, "kept").read_text() == "across the delay"
    await asyncio.sleep(2.5)  # past the first deadline: the reused pod must stay
    assert only_mount_pod(node)["metadata"]["name"] == name

    await node.mounter.unpublish(second)
    started = time.monotonic()
    await eventually(marked, 5, "the delete-at annotation again")
    await eventually(lambda: not node.mount_pods(), 10, "the deletion after the delay")
    assert time.monotonic() - started >= 1.5  # not before the delay ran out
    await assert_nothing_left(node)


# --- a deleted mount pod --------------------------------------------------------------------


async def test_a_deleted_mount_pod_is_replaced_and_every_target_rebound(node: Node) -> None:
    targets = [new_target(node), new_target(node)]
    for target in targets:
        await node.mounter.publish(node.request(target))
    Path(targets[0], "before").write_text("intact")
    old = only_mount_pod(node)
    old_name, old_path = old["metadata"]["name"], host_path(node, old)
    [secret] = secrets(node)
    assert owner_uids(secret) == {old["metadata"]["uid"]}

    node.kube_api.delete("pods", old_name, node.namespace)

    def replacement() -> Obj | None:
        pods = [p for p in node.mount_pods() if p["metadata"]["name"] != old_name]
        return pods[0] if pods and (pods[0].get("status") or {}).get("phase") == "Running" else None

    new = await eventually(replacement, 20, "a running replacement")
    new_path = host_path(node, new)
    assert new_path != old_path
    assert set(refs(new).values()) == set(targets)

    def rebound() -> bool:
        device = top_device(new_path)
        return device is not None and all(top_device(t) == device for t in targets)

    # The old pod's finalizer goes only once its client stopped and its mount point is cleaned.
    saw_waiting = False
    deadline = time.monotonic() + 30
    while (current := node.kube_api.get_or_none("pods", old_name, node.namespace)) is not None:
        ours = FINALIZER in (current["metadata"].get("finalizers") or [])
        saw_waiting = saw_waiting or ours
        if not ours:
            assert top_device(old_path) is None and not os.path.exists(old_path)
        assert time.monotonic() < deadline, "the old mount pod is still there"
        await asyncio.sleep(0.02)
    assert saw_waiting

    await eventually(rebound, 20, "every target re-bound to the replacement")
    for target in targets:
        assert Path(target, "before").read_text() == "intact"
        Path(target, f"after-{os.path.basename(os.path.dirname(os.path.dirname(target)))}").write_text("new")
    await asyncio.sleep(1.5)  # more reconcile passes: still exactly one replacement
    assert only_mount_pod(node)["metadata"]["name"] == new["metadata"]["name"]
    [secret] = secrets(node)
    assert new["metadata"]["uid"] in owner_uids(secret)

    for target in targets:
        await node.mounter.unpublish(target)
    await assert_nothing_left(node)


# --- a mount pod stuck terminating ----------------------------------------------------------


async def test_a_mount_pod_stuck_terminating_is_aborted_finalized_and_replaced(node: Node) -> None:
    target = new_target(node)
    await node.mounter.publish(node.request(target))
    Path(target, "before").write_text("intact")
    old = only_mount_pod(node)
    old_name, old_path = old["metadata"]["name"], host_path(node, old)
    old_device = top_device(old_path)
    assert old_device is not None

    node.runner.wedge_container(node.namespace, old_name, MOUNT_CONTAINER)
    # A lookup the stopped client never answers: only an abort of its FUSE connection ends it.
    outcome: list[BaseException | None] = []

    def hung_lookup() -> None:
        try:
            os.stat(os.path.join(old_path, f"probe-{uuid.uuid4().hex}"))
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    threading.Thread(target=hung_lookup, daemon=True).start()
    await asyncio.sleep(0.3)
    assert not outcome, "the client should not answer while it is stopped"

    node.kube_api.delete("pods", old_name, node.namespace, grace_period_seconds=1)

    def aborted() -> bool:
        return bool(outcome)

    await eventually(aborted, 15, "the FUSE connection to be aborted")
    assert isinstance(outcome[0], OSError) and outcome[0].errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO)

    stuck = node.kube_api.get("pods", old_name, node.namespace)  # the kubelet still cannot stop it
    assert stuck["metadata"]["deletionTimestamp"] and stuck["metadata"].get("deletionGracePeriodSeconds")
    await eventually(
        lambda: (
            FINALIZER not in (node.kube_api.get("pods", old_name, node.namespace)["metadata"].get("finalizers") or [])
        ),
        10,
        "the finalizer to go",
    )
    assert top_device(old_path) is None and not os.path.exists(old_path)

    new = await eventually(
        lambda: next((p for p in node.mount_pods() if p["metadata"]["name"] != old_name), None), 10, "a replacement"
    )
    new_path = host_path(node, new)
    await eventually(lambda: top_device(new_path) not in (None, old_device), 20, "the replacement's mount")
    await eventually(lambda: top_device(target) == top_device(new_path), 20, "the target re-bound")
    assert Path(target, "before").read_text() == "intact"
    Path(target, "after").write_text("served by the replacement")

    # The references moved: an unpublish while the old pod still hangs around is final (none comes back).
    assert not refs(node.kube_api.get("pods", old_name, node.namespace))
    await node.mounter.unpublish(target)
    await eventually(lambda: not any(p["metadata"]["name"] != old_name for p in node.mount_pods()), 15, "the new pod")
    assert node.kube_api.get_or_none("pods", old_name, node.namespace) is not None  # still stuck for the kubelet

    node.runner.release_container(node.namespace, old_name, MOUNT_CONTAINER)  # the hung client dies at last
    await assert_nothing_left(node)


# --- resource failures ----------------------------------------------------------------------


def requests_resources(pod: Obj) -> bool:
    containers = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
    return any(
        str(value) not in ("0", "0m")
        for c in containers
        for value in ((c.get("resources") or {}).get("requests") or {}).values()
    )


async def publish_as_kubelet(node: Node, target: str, attempt_timeout: float = 2.0, timeout: float = 40.0) -> None:
    """NodePublishVolume as the kubelet calls it: with a deadline per call, again until it works."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.wait_for(node.mounter.publish(node.request(target)), attempt_timeout)
            return
        except (DriverError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    "status",
    [
        {  # the kubelet's admission refused it (nodeName placement)
            "phase": "Failed",
            "reason": "OutOfcpu",
            "message": "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000, used: 0, capacity: 0",
        },
        {  # the scheduler cannot place it (nodeSelector placement)
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient memory.",
                }
            ],
        },
    ],
    ids=["failed OutOfcpu", "unschedulable Insufficient memory"],
)
async def test_a_mount_pod_failing_for_lack_of_resources_is_recreated_without_requests(node: Node, status: Obj) -> None:
    node.runner.admit = lambda pod: pod["metadata"]["name"] == "app" or not requests_resources(pod)  # no room
    target = node.target(node.app_pod("app"))  # a live app pod: its reference stays while the publish retries
    publish = asyncio.create_task(publish_as_kubelet(node, target))
    [old] = await eventually(node.mount_pods, 10, "the mount pod")
    old_name = old["metadata"]["name"]
    assert requests_resources(old)
    node.kube_api.patch("pods", old_name, {"status": status}, namespace=node.namespace, subresource="status")

    await asyncio.wait_for(publish, 45)
    new = only_mount_pod(node)
    assert new["metadata"]["name"] != old_name
    assert not requests_resources(new)
    for container in new["spec"]["containers"]:  # limits stay; requests are zero, not absent
        resources = container.get("resources") or {}
        if resources.get("limits"):
            assert set(resources["requests"]) == set(resources["limits"])
    assert set(refs(new).values()) == {target}
    Path(target, "file").write_text("served")
    await node.mounter.unpublish(target)
    await assert_nothing_left(node)


async def test_a_publish_waiting_on_a_mount_pod_completes_on_its_replacement(node: Node) -> None:
    """One NodePublishVolume call, no retry: it follows the target's reference to the replacement."""
    node.runner.admit = lambda pod: pod["metadata"]["name"] == "app" or not requests_resources(pod)
    target = node.target(node.app_pod("app"))
    publish = asyncio.create_task(node.mounter.publish(node.request(target)))
    [old] = await eventually(node.mount_pods, 10, "the mount pod")
    unschedulable = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory.",
            }
        ],
    }
    node.kube_api.patch(
        "pods", old["metadata"]["name"], {"status": unschedulable}, namespace=node.namespace, subresource="status"
    )

    await asyncio.wait_for(publish, 30)
    assert only_mount_pod(node)["metadata"]["name"] != old["metadata"]["name"]
    Path(target, "file").write_text("served")
    await node.mounter.unpublish(target)
    await assert_nothing_left(node)


# --- stale references -----------------------------------------------------------------------


async def test_references_of_gone_app_pods_are_dropped_then_the_pod_deleted(node: Node) -> None:
    uid_a, uid_b = node.app_pod("app-a"), node.app_pod("app-b")
    a, b = node.target(uid_a), node.target(uid_b)
    await node.mounter.publish(node.request(a))
    await node.mounter.publish(node.request(b))
    name = only_mount_pod(node)["metadata"]["name"]

    def current_refs() -> dict[str, str]:
        return refs(node.kube_api.get("pods", name, node.namespace))

    # B's pod goes while its target is still bound: a lagging cache or a pending unpublish, never a stale ref.
    node.kube_api.delete("pods", "app-b", node.namespace)
    assert node.pods is not None
    pods = node.pods
    await eventually(lambda: pods.find_by_uid(uid_b) is None, 10, "app-b to leave the node's pods")
    await asyncio.sleep(1.5)  # more than one reconcile pass
    assert reference_key(b) in current_refs()

    # A's target is unmounted behind the driver's back, then its pod goes: that reference is stale.
    syscalls.unmount(a, lazy=True)
    node.kube_api.delete("pods", "app-a", node.namespace)
    await eventually(lambda: reference_key(a) not in current_refs(), 10, "a's reference to be dropped")
    assert set(current_refs().values()) == {b}
    assert Path(b).is_mount()

    syscalls.unmount(b, lazy=True)  # the last one: the pod goes too
    await eventually(lambda: not node.mount_pods(), 15, "the mount pod to be deleted")
    for target in (a, b):  # what a kubelet's later NodeUnpublishVolume finds: nothing to do
        await node.mounter.unpublish(target)
    await assert_nothing_left(node)
