"""The Kubernetes client layer against the emulator (or a real API server with KUBEBUILDER_ASSETS)."""

from __future__ import annotations

import asyncio
import time

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap
from prometheus_client import CollectorRegistry

from juicefs_csi.kube.client import DEFAULT_BURST, DEFAULT_QPS, KubeSettings, make_client, request_counter
from juicefs_csi.kube.informer import Event, Informer
from tests.support.kube import KubeAPI
from tests.support.objects import meta


def client_for(
    kube_api: KubeAPI, qps: float = DEFAULT_QPS, burst: int = DEFAULT_BURST
) -> tuple[AsyncClient, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = request_counter(registry)
    kube = KubeSettings(qps=qps, burst=burst, kubeconfig=str(kube_api.kubeconfig_path))
    return make_client(kube, counter), registry


def requests(registry: CollectorRegistry, verb: str, resource: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_total")
                and sample.labels.get("verb") == verb
                and sample.labels.get("resource") == resource
            ):
                total += sample.value
    return total


async def test_requests_are_counted_by_verb_and_resource(kube_api: KubeAPI, kube_namespace: str) -> None:
    client, registry = client_for(kube_api)
    await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=kube_namespace), data={"k": "v"}))
    await client.get(ConfigMap, "a", namespace=kube_namespace)
    _ = [cm async for cm in client.list(ConfigMap, namespace=kube_namespace)]
    assert requests(registry, "create", "configmaps") == 1
    assert requests(registry, "get", "configmaps") == 1
    assert requests(registry, "list", "configmaps") == 1


async def test_token_bucket_limits_rate(kube_api: KubeAPI, kube_namespace: str) -> None:
    client, _ = client_for(kube_api, qps=10.0, burst=2)
    started = time.monotonic()
    for _ in range(7):
        _ = [cm async for cm in client.list(ConfigMap, namespace=kube_namespace)]
    # 2 at once, then 5 more at 10/s: at least ~0.5 s.
    assert time.monotonic() - started >= 0.45


async def test_informer_lists_once_then_watches(kube_api: KubeAPI, kube_namespace: str) -> None:
    client, registry = client_for(kube_api)
    await client.create(ConfigMap(metadata=ObjectMeta(name="pre", namespace=kube_namespace, labels={"app": "x"})))
    informer: Informer[ConfigMap] = Informer(client, ConfigMap, namespace=kube_namespace, labels={"app": "x"})
    events: list[tuple[Event, str]] = []
    informer.add_handler(lambda event, obj: events.append((event, obj.metadata.name)))
    informer.start()
    try:
        await informer.wait_synced(10)
        assert informer.get("pre", kube_namespace) is not None
        await client.create(ConfigMap(metadata=ObjectMeta(name="new", namespace=kube_namespace, labels={"app": "x"})))
        await client.create(ConfigMap(metadata=ObjectMeta(name="other", namespace=kube_namespace)))
        found = await informer.wait_for(lambda: informer.get("new", kube_namespace), timeout=10)
        assert meta(found).name == "new"
        await client.delete(ConfigMap, "pre", namespace=kube_namespace)
        await informer.wait_for(lambda: True if informer.get("pre", kube_namespace) is None else None, 10)
        assert informer.get("other", kube_namespace) is None
        assert (Event.DELETED, "pre") in events
        assert requests(registry, "list", "configmaps") == 1
    finally:
        await informer.stop()


async def test_informer_relists_after_410_and_reports_missed_deletions(kube_api: KubeAPI, kube_namespace: str) -> None:
    emulator = kube_api.emulator
    if emulator is None:
        pytest.skip("needs the emulator to force a 410")
    client, _ = client_for(kube_api)
    await client.create(ConfigMap(metadata=ObjectMeta(name="gone", namespace=kube_namespace)))
    informer: Informer[ConfigMap] = Informer(client, ConfigMap, namespace=kube_namespace)
    events: list[tuple[Event, str]] = []
    informer.add_handler(lambda event, obj: events.append((event, obj.metadata.name)))
    informer.start()
    try:
        await informer.wait_synced(10)
        emulator.inject_error("watch", "configmaps", status=410, times=1)
        emulator.close_watches()
        await client.delete(ConfigMap, "gone", namespace=kube_namespace)
        await informer.wait_for(lambda: True if informer.get("gone", kube_namespace) is None else None, 15)
        assert (Event.DELETED, "gone") in events
        assert informer.relists >= 1
    finally:
        await informer.stop()
    await asyncio.sleep(0)
