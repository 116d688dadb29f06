"""Watch semantics: initial state, replay from a resourceVersion, 410 Expired, bookmarks, timeouts."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.support.kube import Emulator, KubeAPI

from .helpers import configmap, next_event, read_until_closed


async def test_watch_without_resource_version_starts_with_existing_objects(
    kube_api: KubeAPI, kube_namespace: str
) -> None:
    kube_api.create(configmap("old"), kube_namespace)
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true"}) as resp,
    ):
        assert resp.status == 200
        first = await next_event(resp)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "old")
        kube_api.create(configmap("new"), kube_namespace)
        kube_api.patch("configmaps", "new", {"data": {"k": "2"}}, namespace=kube_namespace)
        kube_api.delete("configmaps", "new", kube_namespace)
        events = [await next_event(resp) for _ in range(3)]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["data"] == {"k": "2"}
    deleted_rv = int(events[2]["object"]["metadata"]["resourceVersion"])
    assert deleted_rv > int(events[1]["object"]["metadata"]["resourceVersion"])  # DELETED carries the delete's RV


async def test_watch_from_resource_version_replays_changes(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(configmap("r"), kube_namespace)
    start = created["metadata"]["resourceVersion"]
    kube_api.patch("configmaps", "r", {"data": {"k": "2"}}, namespace=kube_namespace)
    kube_api.create(configmap("s"), kube_namespace)
    async with (
        kube_api.session() as s,
        s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "1", "resourceVersion": start}
        ) as resp,
    ):
        events = [await next_event(resp) for _ in range(2)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "r"), ("ADDED", "s")]


async def test_watch_from_expired_resource_version_is_410_event(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("x"), kube_namespace)
    async with (
        kube_api.session() as s,
        s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true", "resourceVersion": "1"}
        ) as resp,
    ):
        assert resp.status == 200
        event = await next_event(resp)
    assert event["type"] == "ERROR"
    status = event["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith("too old resource version: 1")


async def test_selector_transitions_become_added_and_deleted(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("t", {"app": "no"}), kube_namespace)
    async with (
        kube_api.session() as s,
        s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true", "labelSelector": "app=yes"}
        ) as resp,
    ):
        kube_api.patch("configmaps", "t", {"metadata": {"labels": {"app": "yes"}}}, namespace=kube_namespace)
        kube_api.patch("configmaps", "t", {"data": {"k": "2"}}, namespace=kube_namespace)
        kube_api.patch("configmaps", "t", {"metadata": {"labels": {"app": "no"}}}, namespace=kube_namespace)
        events = [await next_event(resp) for _ in range(3)]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_field_selector_watch(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            params={"watch": "true", "fieldSelector": "metadata.name=b"},
        ) as resp,
    ):
        kube_api.create(configmap("a"), kube_namespace)
        kube_api.create(configmap("b"), kube_namespace)
        event = await next_event(resp)
    assert event["object"]["metadata"]["name"] == "b"


async def test_timeout_ends_stream_and_bookmark_precedes_it(kube_api: KubeAPI, kube_namespace: str) -> None:
    """Real servers send a bookmark ~2 s before a watch's deadline; so does the emulator."""
    kube_api.create(configmap("bm"), kube_namespace)
    params = {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "4",
        "resourceVersion": kube_api.list("configmaps", kube_namespace)["metadata"]["resourceVersion"],
    }
    started = time.monotonic()
    async with kube_api.session() as s, s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params=params) as resp:
        events = await read_until_closed(resp)
    assert 3 <= time.monotonic() - started < 10
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    obj = bookmarks[-1]["object"]
    assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
    assert int(obj["metadata"]["resourceVersion"]) >= int(params["resourceVersion"])


async def test_periodic_bookmarks(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    interval, kube_emulator.bookmark_interval = kube_emulator.bookmark_interval, 0.2
    try:
        async with (
            kube_api.session() as s,
            s.get(
                f"/api/v1/namespaces/{kube_namespace}/configmaps",
                params={"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": "0"},
            ) as resp,
        ):
            events = [await next_event(resp, timeout=3) for _ in range(2)]
    finally:
        kube_emulator.bookmark_interval = interval
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert set(events[0]["object"]["metadata"]) <= {"resourceVersion", "creationTimestamp"}


async def test_compaction_expires_old_resource_versions(
    kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str
) -> None:
    rv = kube_api.create(configmap("c"), kube_namespace)["metadata"]["resourceVersion"]
    kube_api.patch("configmaps", "c", {"data": {"k": "2"}}, namespace=kube_namespace)
    kube_emulator.compact()
    async with kube_api.session() as s:
        async with s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true", "resourceVersion": rv}
        ) as resp:
            event = await next_event(resp)
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
        async with s.get(
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            params={"resourceVersion": rv, "resourceVersionMatch": "Exact"},
        ) as resp:
            assert resp.status == 410


async def test_history_window_is_bounded() -> None:
    with Emulator(history_size=5) as emulator:
        kube = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(base_url=emulator.url, headers=kube) as s:
            async with s.post("/api/v1/namespaces/default/configmaps", json=configmap("w")) as resp:
                first_rv = (await resp.json())["metadata"]["resourceVersion"]
            for i in range(20):
                async with s.patch(
                    "/api/v1/namespaces/default/configmaps/w",
                    json={"data": {"i": str(i)}},
                    headers={"Content-Type": "application/merge-patch+json"},
                ) as resp:
                    assert resp.status == 200
            async with s.get(
                "/api/v1/namespaces/default/configmaps", params={"watch": "true", "resourceVersion": first_rv}
            ) as resp:
                assert (await next_event(resp))["object"]["reason"] == "Expired"


async def test_close_watches_ends_streams(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true"}) as resp,
    ):
        await asyncio.sleep(0.1)
        await asyncio.to_thread(kube_emulator.close_watches)
        assert await read_until_closed(resp, timeout=5) == []


async def test_many_concurrent_watches_all_see_a_change(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with kube_api.session() as s:
        responses = [
            await s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"watch": "true"}) for _ in range(50)
        ]
        try:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(kube_api.create, configmap("fan"), kube_namespace)
            events = await asyncio.gather(*(next_event(r) for r in responses))
        finally:
            for r in responses:
                r.close()
    assert {e["object"]["metadata"]["name"] for e in events} == {"fan"}


async def test_send_initial_events(kube_emulator: Emulator, kube_api: KubeAPI, kube_namespace: str) -> None:
    """The streaming-list form of watch (gated on 1.31 servers, so emulator-only here)."""
    kube_api.create(configmap("init"), kube_namespace)
    params = {
        "watch": "true",
        "sendInitialEvents": "true",
        "allowWatchBookmarks": "true",
        "resourceVersionMatch": "NotOlderThan",
        "resourceVersion": "",
    }
    async with kube_api.session() as s, s.get(f"/api/v1/namespaces/{kube_namespace}/configmaps", params=params) as resp:
        events = [await next_event(resp), await next_event(resp)]
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
