"""The one seam every Kubernetes request passes: verb classification, list cache, bookmarks, counting."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from prometheus_client import CollectorRegistry

from juicefs_csi.kube.client import ApiTransport, KubeSettings, RequestKind, TokenBucket, classify, request_counter


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/pods", {}, RequestKind("list", "pods")),
        ("GET", "/api/v1/namespaces/ns/pods", {}, RequestKind("list", "pods")),
        ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, RequestKind("watch", "pods")),
        ("GET", "/api/v1/namespaces/ns/pods/p", {}, RequestKind("get", "pods")),
        ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, RequestKind("get", "pods", "log")),
        ("PATCH", "/api/v1/namespaces/ns/pods/p/status", {}, RequestKind("patch", "pods", "status")),
        ("POST", "/api/v1/namespaces/ns/secrets", {}, RequestKind("create", "secrets")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", {}, RequestKind("update", "leases")),
        ("DELETE", "/api/v1/namespaces/ns/pods/p", {}, RequestKind("delete", "pods")),
        ("DELETE", "/api/v1/namespaces/ns/pods", {}, RequestKind("deletecollection", "pods")),
        ("GET", "/api/v1/namespaces/ns", {}, RequestKind("get", "namespaces")),
        ("GET", "/api/v1/namespaces", {}, RequestKind("list", "namespaces")),
        ("GET", "/api/v1/nodes/n1", {}, RequestKind("get", "nodes")),
        ("GET", "/apis/storage.k8s.io/v1/storageclasses", {}, RequestKind("list", "storageclasses")),
    ],
)
def test_classify(method: str, path: str, query: dict[str, str], expected: RequestKind) -> None:
    assert classify(method, path, query) == expected


async def _send(list_from_cache: bool, url: str) -> tuple[list[str], CollectorRegistry]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={})

    registry = CollectorRegistry()
    transport = ApiTransport(
        httpx.MockTransport(handler), TokenBucket(100, 10), request_counter(registry), list_from_cache
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(url)
    return seen, registry


async def test_lists_ask_the_watch_cache_when_enabled() -> None:
    seen, _ = await _send(True, "https://k8s/api/v1/pods?labelSelector=a%3Db")
    assert "resourceVersion=0" in seen[0]


async def test_lists_are_consistent_reads_by_default() -> None:
    seen, _ = await _send(False, "https://k8s/api/v1/pods")
    assert "resourceVersion" not in seen[0]


async def test_an_explicit_resource_version_is_kept() -> None:
    seen, _ = await _send(True, "https://k8s/api/v1/pods?resourceVersion=42")
    assert "resourceVersion=42" in seen[0] and "resourceVersion=0" not in seen[0]


async def test_watches_ask_for_bookmarks() -> None:
    seen, _ = await _send(False, "https://k8s/api/v1/pods?watch=true&resourceVersion=7")
    assert "allowWatchBookmarks=true" in seen[0]


async def test_requests_are_counted() -> None:
    _, registry = await _send(False, "https://k8s/api/v1/namespaces/a/secrets/s")
    value = registry.get_sample_value(
        "juicefs_kube_requests_total", {"verb": "get", "resource": "secrets", "subresource": "", "code": "200"}
    )
    assert value == 1


def test_settings_from_env() -> None:
    settings = KubeSettings.from_env({"KUBE_QPS": "3", "KUBE_BURST": "5", "ENABLE_APISERVER_LIST_CACHE": "true"})
    assert (settings.qps, settings.burst, settings.list_from_cache) == (3.0, 5, True)
    defaults = KubeSettings.from_env({})
    assert (defaults.qps, defaults.burst, defaults.list_from_cache) == (20.0, 30, False)
    with pytest.raises(ValueError):
        KubeSettings.from_env({"KUBE_QPS": "0"})
