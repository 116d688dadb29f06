"""The provisioner's Secret reads: shared within a few seconds, never mirroring, failures never kept."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta, Status
from lightkube.resources.core_v1 import Secret

from juicefs_csi.kube.secret_reader import SecretReader


class FakeClient:
    def __init__(self) -> None:
        self.gets: list[tuple[str, str | None]] = []
        self.value = "first"
        self.missing = False

    async def get(self, kind: type, name: str, *, namespace: str | None = None, **_: Any) -> Secret:
        assert kind is Secret
        self.gets.append((name, namespace))
        await asyncio.sleep(0.01)
        if self.missing:
            raise ApiError(status=Status(code=404, reason="NotFound", message=f'secrets "{name}" not found'))
        encoded = base64.b64encode(self.value.encode()).decode()
        return Secret(metadata=ObjectMeta(name=name), data={"metaurl": encoded}, stringData={"name": "vol"})


def reader(client: FakeClient, clock: list[float]) -> SecretReader:
    return SecretReader(cast(AsyncClient, client), ttl=5.0, clock=lambda: clock[0])


async def test_concurrent_and_recent_reads_share_one_get_then_it_expires() -> None:
    client, clock = FakeClient(), [100.0]
    secrets = reader(client, clock)
    results = await asyncio.gather(*(secrets.read("kube-system", "jfs") for _ in range(50)))
    assert results == [{"metaurl": "first", "name": "vol"}] * 50
    assert len(client.gets) == 1
    clock[0] += 4.9
    client.value = "second"
    assert (await secrets.read("kube-system", "jfs"))["metaurl"] == "first"
    clock[0] += 0.2
    assert (await secrets.read("kube-system", "jfs"))["metaurl"] == "second", "an updated Secret is seen after the ttl"
    await secrets.read("other-ns", "jfs")
    assert client.gets == [("jfs", "kube-system"), ("jfs", "kube-system"), ("jfs", "other-ns")]


async def test_a_missing_secret_is_not_remembered() -> None:
    client, clock = FakeClient(), [100.0]
    secrets = reader(client, clock)
    client.missing = True
    with pytest.raises(ApiError):
        await secrets.read("kube-system", "jfs")
    client.missing = False
    assert (await secrets.read("kube-system", "jfs"))["name"] == "vol", "created since: the next retry sees it"


async def test_a_cancelled_caller_does_not_fail_the_others_sharing_its_get() -> None:
    client, clock = FakeClient(), [100.0]
    secrets = reader(client, clock)
    first = asyncio.create_task(secrets.read("kube-system", "jfs"))
    second = asyncio.create_task(secrets.read("kube-system", "jfs"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second)["metaurl"] == "first"
    assert first.cancelled() and len(client.gets) == 1


async def test_callers_get_their_own_copy() -> None:
    client, clock = FakeClient(), [100.0]
    secrets = reader(client, clock)
    (await secrets.read("kube-system", "jfs"))["metaurl"] = "changed by a caller"
    assert (await secrets.read("kube-system", "jfs"))["metaurl"] == "first"
