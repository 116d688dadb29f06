"""List semantics: label and field selectors, pagination and resourceVersion handling."""

from __future__ import annotations

import pytest

from tests.support.kube import KubeAPI

from .helpers import configmap, json_body, pod


def _names(listing: dict[str, object]) -> list[str]:
    items = listing["items"]
    assert isinstance(items, list)
    return [i["metadata"]["name"] for i in items]


@pytest.fixture
def labelled(kube_api: KubeAPI, kube_namespace: str) -> str:
    for name, labels in (
        ("a", {"app": "x", "tier": "web"}),
        ("b", {"app": "y", "tier": "db"}),
        ("c", {"app": "x"}),
        ("d", {}),
    ):
        kube_api.create(configmap(name, labels), kube_namespace)
    return kube_namespace


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=x", ["a", "c"]),
        ("app==x", ["a", "c"]),
        ("app!=x", ["b", "d"]),
        ("app in (x,y)", ["a", "b", "c"]),
        ("app notin (x)", ["b", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=x,tier=web", ["a"]),
        ("app=x, !tier", ["c"]),
    ],
)
def test_label_selectors(kube_api: KubeAPI, labelled: str, selector: str, expected: list[str]) -> None:
    assert _names(kube_api.list("configmaps", labelled, label_selector=selector)) == expected


async def test_bad_label_selector_is_400(kube_api: KubeAPI, labelled: str) -> None:
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{labelled}/configmaps", params={"labelSelector": "app in x"}) as resp,
    ):
        assert resp.status == 400
        assert (await json_body(resp))["reason"] == "BadRequest"


def test_field_selectors(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(pod("on-n1", "n1"), kube_namespace)
    kube_api.create(pod("on-n2", "n2"), kube_namespace)
    kube_api.create(pod("nowhere"), kube_namespace)
    assert _names(kube_api.list("pods", kube_namespace, field_selector="spec.nodeName=n1")) == ["on-n1"]
    assert _names(kube_api.list("pods", kube_namespace, field_selector="spec.nodeName!=n1")) == ["nowhere", "on-n2"]
    assert _names(kube_api.list("pods", kube_namespace, field_selector="spec.nodeName=")) == ["nowhere"]
    assert _names(kube_api.list("pods", kube_namespace, field_selector="metadata.name=on-n2")) == ["on-n2"]
    assert _names(kube_api.list("pods", kube_namespace, field_selector="status.phase=Pending")) == [
        "nowhere",
        "on-n1",
        "on-n2",
    ]
    cluster_wide = kube_api.list("pods", field_selector=f"metadata.namespace={kube_namespace},spec.nodeName=n2")
    assert _names(cluster_wide) == ["on-n2"]


def test_secret_type_field_selector(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "example.com/x"}, kube_namespace
    )
    kube_api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}}, kube_namespace)
    assert _names(kube_api.list("secrets", kube_namespace, field_selector="type=example.com/x")) == ["tls"]


async def test_unsupported_field_selector_is_400(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with kube_api.session() as s:
        async with s.get(f"/api/v1/namespaces/{kube_namespace}/pods", params={"fieldSelector": "spec.foo=x"}) as resp:
            assert resp.status == 400
            assert (await json_body(resp))["message"] == "field label not supported: spec.foo"
        async with s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"fieldSelector": "data.k=v"}
        ) as resp:
            assert resp.status == 400


def test_pagination_with_continue(kube_api: KubeAPI, kube_namespace: str) -> None:
    names = [f"cm-{i:02d}" for i in range(7)]
    for name in names:
        kube_api.create(configmap(name), kube_namespace)
    seen: list[str] = []
    first = kube_api.list("configmaps", kube_namespace, limit=3)
    snapshot_rv = first["metadata"]["resourceVersion"]
    assert first["metadata"]["remainingItemCount"] == 4
    kube_api.create(configmap("cm-99"), kube_namespace)  # after the snapshot: not in later pages
    page = first
    while True:
        seen += _names(page)
        token = page["metadata"].get("continue")
        if not token:
            break
        page = kube_api.list("configmaps", kube_namespace, limit=3, **{"continue": token})
        assert page["metadata"]["resourceVersion"] == snapshot_rv
    assert seen == names


async def test_bad_continue_token_is_400(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"limit": "1", "continue": "garbage!"}) as resp,
    ):
        assert resp.status == 400


def test_list_resource_versions(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("one"), kube_namespace)
    listing = kube_api.list("configmaps", kube_namespace)
    rv = listing["metadata"]["resourceVersion"]
    assert int(rv) >= int(listing["items"][0]["metadata"]["resourceVersion"])
    kube_api.create(configmap("two"), kube_namespace)
    assert _names(kube_api.list("configmaps", kube_namespace, resourceVersion="0")) == ["one", "two"]
    assert _names(
        kube_api.list("configmaps", kube_namespace, resourceVersion=rv, resourceVersionMatch="NotOlderThan")
    ) == ["one", "two"]
    exact = kube_api.list("configmaps", kube_namespace, resourceVersion=rv, resourceVersionMatch="Exact")
    assert _names(exact) == ["one"]
    assert exact["metadata"]["resourceVersion"] == rv


async def test_resource_version_match_needs_resource_version(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"resourceVersionMatch": "Exact"}) as resp,
    ):
        assert resp.status in (400, 422)


def test_limit_is_ignored_for_resource_version_zero(kube_api: KubeAPI, kube_namespace: str) -> None:
    if kube_api.is_real:
        pytest.skip("whether the watch cache paginates depends on the server version")
    for i in range(4):
        kube_api.create(configmap(f"z{i}"), kube_namespace)
    listing = kube_api.list("configmaps", kube_namespace, limit=2, resourceVersion="0")
    assert len(listing["items"]) == 4 and not listing["metadata"].get("continue")


def test_cluster_scoped_and_cluster_wide_lists(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("here"), kube_namespace)
    everywhere = kube_api.list("configmaps")
    assert any(i["metadata"]["namespace"] == kube_namespace for i in everywhere["items"])
    assert kube_namespace in _names(kube_api.list("namespaces"))
