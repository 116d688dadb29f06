"""The shared Event recorder against a fake client: aggregation, concurrency, never raising."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx2 as httpx
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event

from juicefs_csi.kube.events import EVENT_MESSAGE_LIMIT, WARNING, BackgroundRecorder, EventRecorder, pod_reference

POD = pod_reference("shop", "web-0", "0d5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")


class FakeClient:
    def __init__(self, fail: bool = False) -> None:
        self.created: list[Event] = []
        self.patched: list[tuple[str, str | None, dict[str, Any]]] = []
        self.fail = fail

    async def create(self, event: Event) -> Event:
        await asyncio.sleep(0.01)  # a round trip: concurrent callers overlap here
        if self.fail:
            raise httpx.ConnectError("refused")
        self.created.append(event)
        return event

    async def patch(self, kind: type, name: str, patch: dict[str, Any], *, namespace: str | None, **_: Any) -> None:
        self.patched.append((name, namespace, patch))


def recorder(client: FakeClient) -> EventRecorder:
    return EventRecorder(cast(AsyncClient, client), "juicefs-csi-node", host="node-a")


async def test_a_repeat_bumps_the_count_of_the_same_event() -> None:
    client = FakeClient()
    record = recorder(client)
    await record(POD, WARNING, "InvalidMountPodSettings", "volume pv-a: bad")
    await record(POD, WARNING, "InvalidMountPodSettings", "volume pv-a: bad")
    await record(POD, WARNING, "InvalidMountPodSettings", "volume pv-b: bad")  # another message: another Event
    assert len(client.created) == 2
    ((name, namespace, patch),) = client.patched
    assert client.created[0].metadata is not None and name == client.created[0].metadata.name
    assert namespace == "shop" and patch["count"] == 2
    event = client.created[0]
    assert event.source is not None and (event.source.component, event.source.host) == ("juicefs-csi-node", "node-a")
    assert event.involvedObject.kind == "Pod" and event.involvedObject.uid == POD.uid


async def test_concurrent_identical_events_make_one_object() -> None:
    client = FakeClient()
    record = recorder(client)
    await asyncio.gather(*(record(POD, WARNING, "InvalidGlobalConfig", "same") for _ in range(5)))
    assert len(client.created) == 1
    assert [patch["count"] for _, _, patch in client.patched] == [2, 3, 4, 5]


async def test_recording_never_raises_and_long_messages_are_cut() -> None:
    await recorder(FakeClient(fail=True))(POD, WARNING, "X", "y")  # logged, not raised
    client = FakeClient()
    await recorder(client)(POD, WARNING, "X", "m" * 5000)
    assert len(client.created[0].message or "") == EVENT_MESSAGE_LIMIT


async def test_background_recording_does_not_wait_and_flush_lands_everything() -> None:
    client = FakeClient()
    record = BackgroundRecorder(recorder(client))
    for n in range(5):
        await record(pod_reference("shop", f"web-{n}"), WARNING, "Failed", "boom")
    assert client.created == [], "the caller returned before any round trip"
    await record.flush()
    assert sorted(e.involvedObject.name or "" for e in client.created) == [f"web-{n}" for n in range(5)]


async def test_background_recording_drops_events_beyond_its_limit_not_the_caller() -> None:
    client = FakeClient()
    record = BackgroundRecorder(recorder(client), limit=2)
    for n in range(4):
        await record(pod_reference("shop", f"web-{n}"), WARNING, "Failed", "boom")
    await record.flush()
    assert (len(client.created), record.dropped) == (2, 2)


async def test_one_object_cannot_flood_events_but_others_still_get_theirs() -> None:
    clock = [1000.0]
    client = FakeClient()
    record = EventRecorder(cast(AsyncClient, client), "juicefs-csi-node", host="node-a", clock=lambda: clock[0])
    for attempt in range(40):  # every retry fails with a new message: a new Event each time
        await record(POD, WARNING, "FailedMount", f"attempt {attempt}: boom")
    assert len(client.created) == 25 and record.filtered == 15
    await record(pod_reference("shop", "web-1", "another-uid"), WARNING, "FailedMount", "boom")
    assert len(client.created) == 26, "another object has a bucket of its own"
    clock[0] += 300.0
    await record(POD, WARNING, "FailedMount", "after five minutes")
    await record(POD, WARNING, "FailedMount", "too soon again")
    assert [e.message for e in client.created[-1:]] == ["after five minutes"]
    assert record.filtered == 16
