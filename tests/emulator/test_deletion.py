"""Deletion: finalizers, graceful pod deletion, preconditions, garbage collection, namespaces."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.support.kube import KubeAPI, KubeApiError

from .helpers import configmap, json_body, next_event, pod


def _needs_controllers(kube_api: KubeAPI) -> None:
    if not kube_api.has_controllers:
        pytest.skip("needs kube-controller-manager (garbage collector / namespace controller)")


async def test_finalizers_hold_deletion_until_removed(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("fin", finalizers=["example.com/hold"]), kube_namespace)
    async with (
        kube_api.session() as s,
        s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            params={"watch": "true", "fieldSelector": "metadata.name=fin"},
        ) as w,
    ):
        assert (await next_event(w))["type"] == "ADDED"
        async with s.delete(f"/api/v1/namespaces/{kube_namespace}/configmaps/fin") as resp:
            assert resp.status == 200
            body = await json_body(resp)
        assert body["metadata"]["deletionTimestamp"] and body["metadata"]["deletionGracePeriodSeconds"] == 0
        modified = await next_event(w)
        assert modified["type"] == "MODIFIED" and modified["object"]["metadata"]["deletionTimestamp"]
        assert kube_api.get("configmaps", "fin", kube_namespace)["metadata"]["finalizers"] == ["example.com/hold"]
        async with s.patch(
            f"/api/v1/namespaces/{kube_namespace}/configmaps/fin",
            json={"metadata": {"finalizers": ["example.com/more"]}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            assert resp.status == 422  # no new finalizers on a terminating object
        kube_api.patch("configmaps", "fin", {"metadata": {"finalizers": None}}, namespace=kube_namespace)
        assert (await next_event(w))["type"] == "DELETED"
    assert kube_api.get_or_none("configmaps", "fin", kube_namespace) is None


async def test_immediate_delete_answers_status_or_object(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("gone"), kube_namespace)
    status = kube_api.delete("configmaps", "gone", kube_namespace)
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"]["name"] == "gone" and status["details"]["kind"] == "configmaps"
    kube_api.create(pod("unscheduled"), kube_namespace)
    deleted = kube_api.delete("pods", "unscheduled", kube_namespace)
    assert deleted["kind"] == "Pod"
    assert kube_api.get_or_none("pods", "unscheduled", kube_namespace) is None  # no node: gone at once


async def test_delete_preconditions(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(configmap("pre"), kube_namespace)
    with pytest.raises(KubeApiError) as err:
        kube_api.delete("configmaps", "pre", kube_namespace, preconditions={"uid": "not-the-uid"})
    assert err.value.status == 409 and err.value.reason == "Conflict"
    with pytest.raises(KubeApiError) as err:
        kube_api.delete("configmaps", "pre", kube_namespace, preconditions={"resourceVersion": "1"})
    assert err.value.status == 409
    kube_api.delete(
        "configmaps",
        "pre",
        kube_namespace,
        preconditions={"uid": created["metadata"]["uid"], "resourceVersion": created["metadata"]["resourceVersion"]},
    )


async def test_scheduled_pod_terminates_until_kubelet_confirms(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(pod("bound", "node-a"), kube_namespace)
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{kube_namespace}/pods", params={"watch": "true"}) as w,
    ):
        assert (await next_event(w))["type"] == "ADDED"
        terminating = kube_api.delete("pods", "bound", kube_namespace)
        meta = terminating["metadata"]
        assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 30
        assert (await next_event(w))["type"] == "MODIFIED"
        again = kube_api.delete("pods", "bound", kube_namespace)  # still pending: nothing changes
        assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
        assert kube_api.get("pods", "bound", kube_namespace)["metadata"]["deletionTimestamp"]
        kube_api.confirm_pod_deletion("bound", kube_namespace)
        events = [await next_event(w), await next_event(w)]
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["metadata"]["deletionGracePeriodSeconds"] == 0


async def test_kubelet_emulation_confirms_deletions(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.set_kubelet("node-k", running=True)
    try:
        kube_api.create(pod("k", "node-k"), kube_namespace)
        kube_api.create(pod("stuck", "node-without-kubelet"), kube_namespace)
        kube_api.delete("pods", "k", kube_namespace)
        kube_api.delete("pods", "stuck", kube_namespace)
        kube_api.wait_gone("pods", "k", kube_namespace)
        assert kube_api.get("pods", "stuck", kube_namespace)["metadata"]["deletionTimestamp"]
    finally:
        kube_api.reset_kubelets()


async def test_finished_pod_is_deleted_at_once(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(pod("done", "node-a"), kube_namespace)
    current = kube_api.get("pods", "done", kube_namespace)
    kube_api.update({**current, "status": {"phase": "Succeeded"}}, subresource="status")
    kube_api.delete("pods", "done", kube_namespace)
    assert kube_api.get_or_none("pods", "done", kube_namespace) is None


async def test_grace_period_zero_deletes_bound_pod(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(pod("force", "node-a"), kube_namespace)
    kube_api.delete("pods", "force", kube_namespace, grace_period_seconds=0)
    assert kube_api.get_or_none("pods", "force", kube_namespace) is None


def _owned_configmap(name: str, owner: Mapping[str, object], block: bool = False) -> dict[str, object]:
    meta = owner["metadata"]
    assert isinstance(meta, dict)
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"]}
    if block:
        ref["blockOwnerDeletion"] = True
    return configmap(name, ownerReferences=[ref])


async def test_background_gc_deletes_dependents(kube_api: KubeAPI, kube_namespace: str) -> None:
    _needs_controllers(kube_api)
    owner = kube_api.create(configmap("owner"), kube_namespace)
    kube_api.create(_owned_configmap("dep-1", owner), kube_namespace)
    kube_api.create(_owned_configmap("dep-2", owner), kube_namespace)
    kube_api.delete("configmaps", "owner", kube_namespace)
    kube_api.wait_gone("configmaps", "dep-1", kube_namespace, timeout=30)
    kube_api.wait_gone("configmaps", "dep-2", kube_namespace, timeout=30)


async def test_orphan_propagation_keeps_dependents(kube_api: KubeAPI, kube_namespace: str) -> None:
    _needs_controllers(kube_api)
    owner = kube_api.create(configmap("o-owner"), kube_namespace)
    kube_api.create(_owned_configmap("o-dep", owner), kube_namespace)
    kube_api.delete("configmaps", "o-owner", kube_namespace, propagation_policy="Orphan")
    kube_api.wait_gone("configmaps", "o-owner", kube_namespace, timeout=30)
    assert not kube_api.get("configmaps", "o-dep", kube_namespace)["metadata"].get("ownerReferences")


async def test_foreground_propagation_deletes_dependents_first(kube_api: KubeAPI, kube_namespace: str) -> None:
    _needs_controllers(kube_api)
    owner = kube_api.create(configmap("f-owner"), kube_namespace)
    kube_api.create(_owned_configmap("f-dep", owner, block=True), kube_namespace)
    deleting = kube_api.delete("configmaps", "f-owner", kube_namespace, propagation_policy="Foreground")
    assert "foregroundDeletion" in deleting["metadata"]["finalizers"]
    kube_api.wait_gone("configmaps", "f-owner", kube_namespace, timeout=30)
    assert kube_api.get_or_none("configmaps", "f-dep", kube_namespace) is None


async def test_dangling_owner_reference_is_collected(kube_api: KubeAPI, kube_namespace: str) -> None:
    _needs_controllers(kube_api)
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"},
    }
    kube_api.create(_owned_configmap("orphaned", ghost), kube_namespace)
    kube_api.wait_gone("configmaps", "orphaned", kube_namespace, timeout=30)


async def test_namespace_deletion_removes_content(kube_api: KubeAPI) -> None:
    _needs_controllers(kube_api)
    ns = kube_api.create_namespace("doomed-")
    kube_api.create(configmap("inside"), ns)
    kube_api.create(configmap("held", finalizers=["example.com/hold"]), ns)
    deleting = kube_api.delete("namespaces", ns)
    assert deleting["status"]["phase"] == "Terminating"
    with pytest.raises(KubeApiError) as err:
        kube_api.create(configmap("late"), ns)
    assert err.value.status == 403
    assert "because it is being terminated" in str(err.value)
    kube_api.wait_gone("configmaps", "inside", ns, timeout=30)
    kube_api.wait_for(lambda: kube_api.get("configmaps", "held", ns)["metadata"].get("deletionTimestamp"), 30)
    assert kube_api.get("namespaces", ns)["status"]["phase"] == "Terminating"
    kube_api.patch("configmaps", "held", {"metadata": {"finalizers": None}}, namespace=ns)
    kube_api.wait_gone("namespaces", ns, timeout=60)


async def test_system_namespace_cannot_be_deleted(kube_api: KubeAPI) -> None:
    with pytest.raises(KubeApiError) as err:
        kube_api.delete("namespaces", "kube-system")
    assert err.value.status == 403


async def test_deletecollection_with_selector(kube_api: KubeAPI, kube_namespace: str) -> None:
    for name, team in (("x1", "a"), ("x2", "a"), ("x3", "b")):
        kube_api.create(configmap(name, {"team": team}), kube_namespace)
    async with (
        kube_api.session() as s,
        s.delete(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"labelSelector": "team=a"}) as resp,
    ):
        assert resp.status == 200
    remaining = kube_api.list("configmaps", kube_namespace)["items"]
    assert [i["metadata"]["name"] for i in remaining] == ["x3"]


async def test_job_deletion_orphans_by_default(kube_api: KubeAPI, kube_namespace: str) -> None:
    """batch/v1 jobs default to OrphanDependents: a bare delete adds the orphan finalizer."""
    kube_api.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}}
            },
        },
        kube_namespace,
    )
    deleting = kube_api.delete("jobs.batch", "j", kube_namespace)
    assert deleting["metadata"].get("finalizers") == ["orphan"]
    if kube_api.has_controllers:
        kube_api.wait_gone("jobs.batch", "j", kube_namespace, timeout=30)
