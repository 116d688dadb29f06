"""The PATCH formats: JSON merge, JSON patch and strategic merge (merge keys, directives)."""

from __future__ import annotations

import pytest

from tests.support.kube import KubeAPI, KubeApiError, Obj
from tests.support.kube.patch import strategic_merge_patch

from .helpers import configmap, json_body, pod


def test_merge_patch_merges_maps_and_null_deletes(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("m", {"a": "1", "b": "2"}), kube_namespace)
    patched = kube_api.patch(
        "configmaps", "m", {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"x": "y"}}, namespace=kube_namespace
    )
    assert patched["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert patched["data"] == {"k": "v", "x": "y"}


def test_json_patch(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("j"), kube_namespace)
    patched = kube_api.patch(
        "configmaps",
        "j",
        [
            {"op": "add", "path": "/metadata/labels", "value": {"example.com/team": "a"}},
            {"op": "replace", "path": "/metadata/labels/example.com~1team", "value": "b"},
            {"op": "replace", "path": "/data/k", "value": "2"},
            {"op": "test", "path": "/data/k", "value": "2"},
        ],
        namespace=kube_namespace,
        patch_type="json",
    )
    assert patched["data"] == {"k": "2"}
    assert patched["metadata"]["labels"] == {"example.com/team": "b"}
    with pytest.raises(KubeApiError) as err:
        kube_api.patch(
            "configmaps",
            "j",
            [{"op": "test", "path": "/data/k", "value": "nope"}],
            namespace=kube_namespace,
            patch_type="json",
        )
    assert err.value.status == 422


def test_strategic_merge_merges_containers_by_name(kube_api: KubeAPI, kube_namespace: str) -> None:
    """Only images may change on a pod: a replaced list would drop container "a" and be rejected."""
    kube_api.create(
        pod(
            "s",
            containers=[
                {"name": "a", "image": "busybox:1.36", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "busybox:1.36"},
            ],
        ),
        kube_namespace,
    )
    patched = kube_api.patch(
        "pods",
        "s",
        {"spec": {"containers": [{"name": "b", "image": "busybox:1.37"}]}},
        namespace=kube_namespace,
        patch_type="strategic",
    )
    containers = patched["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("a", "busybox:1.36"), ("b", "busybox:1.37")]
    assert containers[0]["env"] == [{"name": "X", "value": "1"}]


def test_strategic_merge_keys_of_nested_lists() -> None:
    """env by name, ports by containerPort, volumeMounts by mountPath (pure function: pod specs are immutable)."""
    target: Obj = {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                    "ports": [{"containerPort": 80}],
                    "volumeMounts": [{"name": "v", "mountPath": "/a"}],
                    "args": ["one", "two"],
                }
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }
    }
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}],
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "volumeMounts": [{"name": "w", "mountPath": "/a"}],
                    "args": ["three"],
                }
            ],
            "volumes": [{"name": "v", "$patch": "delete"}],
        }
    }
    merged = strategic_merge_patch(target, patch)
    container = merged["spec"]["containers"][0]
    assert container["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]
    assert container["ports"] == [{"containerPort": 80, "name": "http"}]
    assert container["volumeMounts"] == [{"name": "w", "mountPath": "/a"}]
    assert container["args"] == ["three"]
    assert merged["spec"]["volumes"] == []
    assert target["spec"]["containers"][0]["env"][1]["value"] == "2"  # inputs are not mutated


def test_strategic_merge_directives_and_replaced_lists(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc", "finalizers": ["a.io/x"]},
            "spec": {
                "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
                "selector": {"app": "x", "tier": "web"},
            },
        },
        kube_namespace,
    )
    patched = kube_api.patch(
        "services",
        "svc",
        {
            "metadata": {"finalizers": ["b.io/y"]},
            "spec": {"ports": [{"port": 443, "$patch": "delete"}], "selector": {"tier": None}},
        },
        namespace=kube_namespace,
        patch_type="strategic",
    )
    assert patched["metadata"]["finalizers"] == ["a.io/x", "b.io/y"]  # finalizers merge as a set
    assert [p["port"] for p in patched["spec"]["ports"]] == [80]
    assert patched["spec"]["selector"] == {"app": "x"}
    kube_api.patch("services", "svc", {"metadata": {"finalizers": None}}, namespace=kube_namespace)


def test_strategic_merge_replaces_lists_without_merge_key(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(
        pod("args", containers=[{"name": "a", "image": "busybox:1.36", "args": ["one", "two"]}]), kube_namespace
    )
    patched = kube_api.patch(
        "pods", "args", {"metadata": {"annotations": {"k": "v"}}}, namespace=kube_namespace, patch_type="strategic"
    )
    assert patched["spec"]["containers"][0]["args"] == ["one", "two"]
    assert patched["metadata"]["annotations"] == {"k": "v"}


async def test_patch_of_missing_object_is_404(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.patch(
            f"/api/v1/namespaces/{kube_namespace}/configmaps/none",
            json={"data": {}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp,
    ):
        assert resp.status == 404


async def test_unknown_patch_type_is_415(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("ct"), kube_namespace)
    async with (
        kube_api.session() as s,
        s.patch(
            f"/api/v1/namespaces/{kube_namespace}/configmaps/ct", data=b"{}", headers={"Content-Type": "text/plain"}
        ) as resp,
    ):
        assert resp.status == 415
        assert (await json_body(resp))["reason"] == "UnsupportedMediaType"
