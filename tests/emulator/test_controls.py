"""Authentication, and the emulator's test controls: request counts, injected errors and latency."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.support.kube import REGISTRY, Api, Change, Emulator, KubeAPI, KubeApiError

from .helpers import configmap, json_body, next_event


async def test_wrong_token_is_401(kube_api: KubeAPI) -> None:
    connector = aiohttp.TCPConnector(ssl=kube_api.ssl_context() or False)
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(f"{kube_api.url}/api/v1/namespaces", headers={"Authorization": "Bearer not-the-token"}) as resp,
    ):
        assert resp.status == 401
        body = await json_body(resp)
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401


async def test_any_token_is_accepted_by_default() -> None:
    with Emulator() as emulator:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{emulator.url}/api/v1/namespaces/default", headers={"Authorization": "Bearer whatever"}) as resp,
        ):
            assert resp.status == 200


def test_request_counts(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.reset_counts()
    kube_api.create(configmap("counted"), kube_namespace)
    kube_api.get("configmaps", "counted", kube_namespace)
    kube_api.get("configmaps", "counted", kube_namespace)
    kube_api.list("leases", kube_namespace)
    counts = kube_api.request_counts()
    assert counts is not None
    assert counts[("create", "configmaps")] == 1
    assert counts[("get", "configmaps")] == 2
    assert counts[("list", "leases.coordination.k8s.io")] == 1
    assert kube_emulator.request_count("list", "leases") == 1
    kube_api.reset_counts()
    assert kube_api.request_counts() == {}


def test_request_counts_are_none_on_a_real_server(kube_api: KubeAPI) -> None:
    if not kube_api.is_real:
        pytest.skip("real control plane only")
    assert kube_api.request_counts() is None


def test_injected_errors(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_emulator.inject_error("create", "configmaps", 500, times=2)
    for _ in range(2):
        with pytest.raises(KubeApiError) as err:
            kube_api.create(configmap("flaky"), kube_namespace)
        assert err.value.status == 500 and err.value.reason == "InternalError"
    kube_api.create(configmap("flaky"), kube_namespace)
    kube_emulator.inject_error("get", "configmaps", 429, retry_after=2, name="flaky")
    response = kube_api.request("GET", kube_api.path("configmaps", kube_namespace, "flaky"))
    assert response.status == 429 and response.headers["Retry-After"] == "2"
    assert response.json()["reason"] == "TooManyRequests"
    assert kube_api.get("configmaps", "flaky", kube_namespace)["metadata"]["name"] == "flaky"


def test_injected_errors_forever_until_cleared(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_emulator.inject_error("*", "secrets", 503, times=None)
    for _ in range(3):
        assert kube_api.request("GET", kube_api.path("secrets", kube_namespace)).status == 503
    kube_emulator.clear_faults()
    assert kube_api.request("GET", kube_api.path("secrets", kube_namespace)).status == 200


async def test_injected_410_on_watch_is_an_error_event(
    kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str
) -> None:
    kube_emulator.inject_error("watch", "configmaps", 410)
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true"}) as resp,
    ):
        assert resp.status == 200
        event = await next_event(resp)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_injected_latency(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_emulator.inject_latency("list", "configmaps", 0.3)
    started = time.monotonic()
    kube_api.list("configmaps", kube_namespace)
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    kube_api.list("configmaps", kube_namespace)
    assert time.monotonic() - started < 0.3


def test_reconciler_hook_can_emulate_pvc_binding(
    kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str
) -> None:
    """Extra control loops plug in through add_reconciler; here a toy PV binder."""

    def bind(change: Change, api: Api) -> None:
        pvcs = REGISTRY.resolve("persistentvolumeclaims")
        obj = change.obj.obj
        if change.storage != "persistentvolumeclaims" or change.type != "ADDED":
            return
        stored = api.get(pvcs, obj["metadata"]["namespace"], obj["metadata"]["name"])
        api.apply_update(pvcs, stored, {**stored.obj, "status": {"phase": "Bound"}}, subresource="status")

    remove = kube_emulator.add_reconciler(bind)
    try:
        kube_api.create(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "claim"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            kube_namespace,
        )
        kube_api.wait_for(
            lambda: kube_api.get("persistentvolumeclaims", "claim", kube_namespace)["status"].get("phase") == "Bound",
            what="the claim to be bound",
        )
    finally:
        remove()
