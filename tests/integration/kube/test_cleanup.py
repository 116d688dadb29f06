"""Controller-side cleanup against the session's Kubernetes API (emulator, or a real API server).

Pods and Jobs are plain API objects here (no kubelet runs them); `kube_api.set_kubelet` confirms the
deletion of pods on a node whose kubelet is still alive. Grace periods are short; waits poll the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from juicefs_csi.controller.cleaner import Cleaner
from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from tests.support.kube import KubeAPI
from tests.support.podrunner import eventually

Obj = dict[str, Any]
FINALIZER = "juicefs.com/finalizer"
GRACE = 1.5
TIMEOUT = 30.0


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Objects:
    def __init__(self, kube_api: KubeAPI, namespace: str) -> None:
        self.kube_api = kube_api
        self.namespace = namespace
        suffix = secrets.token_hex(3)
        self.node_a, self.node_b = f"node-a-{suffix}", f"node-b-{suffix}"

    def pod(
        self,
        name: str,
        node: str | None,
        labels: dict[str, str],
        finalizers: list[str] | None = None,
        owner: Obj | None = None,
    ) -> Obj:
        meta: Obj = {"name": name, "namespace": self.namespace, "labels": labels}
        if finalizers:
            meta["finalizers"] = finalizers
        if owner is not None:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ]
        spec: Obj = {"containers": [{"name": "main", "image": "busybox"}]}
        if node:
            spec["nodeName"] = node
        return self.kube_api.create({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})

    def plugin(self, node: str) -> Obj:
        return self.pod(
            f"juicefs-csi-node-{secrets.token_hex(3)}",
            node,
            {"app": "juicefs-csi-node", "app.kubernetes.io/name": "juicefs-csi-driver"},
        )

    def mount_pod(self, name: str, node: str, finalizers: tuple[str, ...] = (FINALIZER,)) -> Obj:
        return self.pod(name, node, {"app.kubernetes.io/name": "juicefs-mount", "volume-id": "pv-x"}, list(finalizers))

    def job(
        self,
        name: str,
        *,
        node: str | None = None,
        finished: str | None = None,
        ttl: int | None = None,
        completed_ago: float = 0.0,
        label: str = "juicefs-job",
    ) -> Obj:
        template: Obj = {
            "metadata": {"labels": {"job": name}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}], "restartPolicy": "Never"},
        }
        if node:
            template["spec"]["nodeName"] = node
        spec: Obj = {"template": template, "backoffLimit": 0}
        if ttl is not None:
            spec["ttlSecondsAfterFinished"] = ttl
        created = self.kube_api.create(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": self.namespace, "labels": {"app.kubernetes.io/name": label}},
                "spec": spec,
            }
        )
        if finished is None:
            return created
        now = datetime.now(UTC)
        start = now - timedelta(seconds=completed_ago + 5)
        status: Obj = {"startTime": _stamp(start)}
        if finished == "Complete":
            done = now - timedelta(seconds=completed_ago)
            status |= {
                "succeeded": 1,
                "completionTime": _stamp(done),
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": _stamp(done)},
                    {"type": "Complete", "status": "True", "lastTransitionTime": _stamp(done)},
                ],
            }
        else:
            status |= {
                "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "lastTransitionTime": _stamp(now)},
                    {"type": "Failed", "status": "True", "lastTransitionTime": _stamp(now)},
                ],
            }
        created["status"] = status
        return self.kube_api.update(created, subresource="status")

    def get(self, resource: str, name: str) -> Obj | None:
        return self.kube_api.get_or_none(resource, name, self.namespace)

    def version(self, resource: str, name: str) -> str:
        found = self.get(resource, name)
        assert found is not None, f"{resource} {name} is gone"
        return str(found["metadata"]["resourceVersion"])


@pytest.fixture
async def objects(kube_api: KubeAPI, kube_namespace: str) -> AsyncIterator[Objects]:
    made = Objects(kube_api, kube_namespace)
    try:
        yield made
    finally:
        kube_api.set_kubelet(made.node_b, running=False)
        for pod in kube_api.list("pods", kube_namespace)["items"]:  # let the namespace go
            if pod["metadata"].get("finalizers"):
                with contextlib.suppress(Exception):
                    kube_api.patch(
                        "pods", pod["metadata"]["name"], {"metadata": {"finalizers": None}}, namespace=kube_namespace
                    )


@contextlib.asynccontextmanager
async def running_cleaner(kube_api: KubeAPI, namespace: str, grace: float = GRACE) -> AsyncIterator[Cleaner]:
    client = make_client(KubeSettings(kubeconfig=str(kube_api.kubeconfig_path)), request_counter(CollectorRegistry()))
    cleaner = Cleaner(client, namespace, grace=grace)
    task = asyncio.create_task(cleaner.run())
    try:
        await asyncio.wait_for(cleaner.ready.wait(), TIMEOUT)
        yield cleaner
    finally:
        await cleaner.stop()
        await asyncio.wait_for(task, TIMEOUT)
        await client.close()


async def test_mount_pods_on_a_node_without_node_plugin_are_finalised_after_the_grace_period(
    kube_api: KubeAPI, objects: Objects
) -> None:
    o = objects
    o.plugin(o.node_a)
    o.mount_pod("mp-kept", o.node_a)
    o.mount_pod("mp-orphan", o.node_b, finalizers=(FINALIZER, "example.com/keep"))
    o.mount_pod("mp-deleting", o.node_b)
    kube_api.delete("pods", "mp-deleting", o.namespace)  # terminating, held by our finalizer
    deleting = o.get("pods", "mp-deleting")
    assert deleting is not None and deleting["metadata"]["deletionTimestamp"]
    kept_version = o.version("pods", "mp-kept")

    started = time.monotonic()
    async with running_cleaner(kube_api, o.namespace):

        def finalised() -> Obj | None:
            pod = o.get("pods", "mp-orphan")
            meta = pod["metadata"] if pod is not None else {}
            return pod if meta.get("deletionTimestamp") and FINALIZER not in meta.get("finalizers", []) else None

        orphan = await eventually(finalised, TIMEOUT, what="mp-orphan to be finalised")
        elapsed = time.monotonic() - started
        # Terminating already: only our finalizer is removed (without a kubelet it stays terminating).
        await eventually(
            lambda: (
                FINALIZER
                not in ((o.get("pods", "mp-deleting") or {"metadata": {}})["metadata"].get("finalizers") or [])
            ),
            TIMEOUT,
            what="mp-deleting's finalizer",
        )

    assert elapsed >= GRACE, f"finalised {elapsed:.2f}s after the cleaner started, within the grace period"
    assert orphan["metadata"]["finalizers"] == ["example.com/keep"], "only our finalizer is removed"
    assert o.version("pods", "mp-kept") == kept_version, "a mount pod on a node with its plugin is never touched"


async def test_finalised_mount_pod_goes_away_where_a_kubelet_confirms(kube_api: KubeAPI, objects: Objects) -> None:
    """A node that still runs (its kubelet confirms deletions) but lost the plugin: the pod disappears."""
    o = objects
    o.plugin(o.node_a)
    o.mount_pod("mp-orphan", o.node_b)
    kube_api.set_kubelet(o.node_b)
    async with running_cleaner(kube_api, o.namespace):
        await eventually(lambda: o.get("pods", "mp-orphan") is None, TIMEOUT, what="mp-orphan to be deleted")


async def test_a_node_plugin_that_returns_within_the_grace_period_keeps_its_mount_pods(
    kube_api: KubeAPI, objects: Objects
) -> None:
    o = objects
    o.plugin(o.node_a)
    o.mount_pod("mp-b", o.node_b)
    version = o.version("pods", "mp-b")
    async with running_cleaner(kube_api, o.namespace, grace=2.0) as cleaner:
        assert o.node_b in cleaner.absent_since, "the grace period runs"
        deadline = cleaner.absent_since[o.node_b] + cleaner.grace
        o.plugin(o.node_b)  # e.g. the DaemonSet's replacement pod of a rolling update
        await eventually(lambda: o.node_b not in cleaner.absent_since, TIMEOUT, what="the plugin to be seen")
        await asyncio.sleep(max(0.0, deadline - time.monotonic()) + 0.1)  # past the original grace period
        await cleaner.run_pass()
    assert o.version("pods", "mp-b") == version


async def test_without_any_node_plugin_pod_nothing_is_cleaned(kube_api: KubeAPI, objects: Objects) -> None:
    """The safety valve: no plugin pod at all is far more likely a wrong namespace or label than a cluster
    whose every node lost its plugin."""
    o = objects
    o.mount_pod("mp-b", o.node_b)
    o.job("job-b", node=o.node_b)
    versions = (o.version("pods", "mp-b"), o.version("jobs", "job-b"))
    async with running_cleaner(kube_api, o.namespace, grace=0.2) as cleaner:
        await asyncio.sleep(0.3)  # past the grace period
        await cleaner.run_pass()
    assert (o.version("pods", "mp-b"), o.version("jobs", "job-b")) == versions


async def test_finished_helper_jobs_are_deleted_with_their_pods(kube_api: KubeAPI, objects: Objects) -> None:
    o = objects
    o.plugin(o.node_a)
    done = o.job("juicefs-1-delvol", finished="Complete")
    worker = o.pod("juicefs-1-delvol-abcde", None, {"job": "juicefs-1-delvol"}, owner=done)
    o.job("juicefs-2-createvol", finished="Failed")
    o.job("juicefs-3-cleancache", finished="Complete", ttl=1, completed_ago=3600)
    o.job("juicefs-4-orphan", node=o.node_b)  # still running, but its node lost the plugin
    kept = {
        "juicefs-5-running": o.job("juicefs-5-running", node=o.node_a),
        "juicefs-6-ttl": o.job("juicefs-6-ttl", finished="Complete", ttl=3600),
        "other-finished": o.job("other-finished", finished="Complete", label="something-else"),
    }
    versions = {name: o.version("jobs", name) for name in kept}
    gone = ("juicefs-1-delvol", "juicefs-2-createvol", "juicefs-3-cleancache", "juicefs-4-orphan")

    async with running_cleaner(kube_api, o.namespace):
        await eventually(
            lambda: all(o.get("jobs", name) is None for name in gone),
            TIMEOUT,
            what="finished and orphaned jobs to be deleted",
        )
        if kube_api.has_controllers:  # garbage collection: propagation Background takes the Job's pods
            await eventually(
                lambda: o.get("pods", worker["metadata"]["name"]) is None,
                TIMEOUT,
                what="the deleted Job's pod to be collected",
            )
    assert {name: o.version("jobs", name) for name in kept} == versions
