"""Subresources: status (spec/status separation) and pod logs."""

from __future__ import annotations

from tests.support.kube import Emulator, KubeAPI

from .helpers import json_body, pod


def test_status_subresource_changes_only_status(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(pod("st", "node-a"), kube_namespace)
    body = {
        **created,
        "spec": {**created["spec"], "activeDeadlineSeconds": 5},
        "status": {"phase": "Running", "podIP": "10.1.2.3"},
    }
    updated = kube_api.update(body, subresource="status")
    assert updated["status"]["phase"] == "Running" and updated["status"]["podIP"] == "10.1.2.3"
    assert "activeDeadlineSeconds" not in updated["spec"]


def test_main_endpoint_ignores_status(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(pod("main", "node-a"), kube_namespace)
    assert created["status"]["phase"] == "Pending"
    body = {**created, "metadata": {**created["metadata"], "labels": {"x": "y"}}, "status": {"phase": "Failed"}}
    updated = kube_api.update(body)
    assert updated["metadata"]["labels"] == {"x": "y"}
    assert updated["status"]["phase"] == "Pending"


def test_status_given_on_create_is_dropped(kube_api: KubeAPI, kube_namespace: str) -> None:
    pvc = kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}},
            },
            "status": {"phase": "Bound"},
        },
        kube_namespace,
    )
    assert pvc["status"]["phase"] == "Pending"
    bound = kube_api.patch(
        "persistentvolumeclaims", "c", {"status": {"phase": "Bound"}}, namespace=kube_namespace, subresource="status"
    )
    assert bound["status"]["phase"] == "Bound"


def test_cluster_scoped_status(kube_api: KubeAPI) -> None:
    node = kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"generateName": "node-"},
            "status": {"capacity": {"cpu": "4"}},
        }
    )
    name = node["metadata"]["name"]
    try:
        assert node["status"]["capacity"] == {"cpu": "4"}  # nodes keep the status they register with
        patched = kube_api.patch(
            "nodes",
            name,
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            patch_type="strategic",
            subresource="status",
        )
        assert patched["status"]["conditions"][0]["type"] == "Ready"
    finally:
        kube_api.delete("nodes", name)


async def test_pod_log(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(pod("logger", "node-a"), kube_namespace)
    kube_emulator.set_pod_log(kube_namespace, "logger", "one\ntwo\nthree\n")
    async with kube_api.session() as s:
        async with s.get(f"/api/v1/namespaces/{kube_namespace}/pods/logger/log") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            assert await resp.text() == "one\ntwo\nthree\n"
        async with s.get(f"/api/v1/namespaces/{kube_namespace}/pods/logger/log", params={"tailLines": "1"}) as resp:
            assert await resp.text() == "three\n"
        async with s.get(f"/api/v1/namespaces/{kube_namespace}/pods/logger/log", params={"container": "nope"}) as resp:
            assert resp.status == 400
        async with s.get(f"/api/v1/namespaces/{kube_namespace}/pods/missing/log") as resp:
            assert resp.status == 404
            assert (await json_body(resp))["reason"] == "NotFound"
