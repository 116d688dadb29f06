"""The node's pods from the kubelet, and the fallback to the API server, against the `kube_api` fixture.

A fake kubelet (tests/support/fake_kubelet.py) mirrors the API's pods bound to
one node; each test uses its own node name so pods of other tests never show up.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod
from prometheus_client import CollectorRegistry

from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from juicefs_csi.kube.informer import Event
from juicefs_csi.kube.kubelet import KubeletClient, KubeletConfig, KubeletError, KubeletUnauthorized
from juicefs_csi.kube.node_pods import NodePods, PodCache
from tests.support.fake_kubelet import FakeKubelet
from tests.support.kube import KubeAPI
from tests.support.objects import meta

T = TypeVar("T")
LOGGER = "juicefs_csi.node_pods"
FAST = {"interval": 0.05, "fast_interval": 0.02, "max_backoff": 0.2}


def pod_manifest(name: str, namespace: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}]}
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def names(node_pods: NodePods) -> set[str]:
    return {p.metadata.name for p in node_pods.pods() if p.metadata is not None and p.metadata.name}


async def eventually(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll with a deadline, for facts no cache change announces (metrics, mode)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def api_requests(registry: CollectorRegistry, resource: str = "pods") -> float:
    """What this NodePods' own client sent to the API server (juicefs_kube_requests)."""
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "juicefs_kube_requests_total" and s.labels.get("resource") == resource
    )


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING and "refused" in r.message]


@pytest.fixture
def node() -> str:
    return f"node-{secrets.token_hex(4)}"


@pytest.fixture
def fake_kubelet(kube_api: KubeAPI, node: str) -> Iterator[FakeKubelet]:
    with FakeKubelet(kube_api, node) as fake:
        yield fake


class Harness:
    """Builds NodePods the way the node plugin would (env + make_client) and stops them afterwards."""

    def __init__(self, kube_api: KubeAPI, node: str) -> None:
        self.kube_api = kube_api
        self.node = node
        self.built: list[tuple[NodePods, AsyncClient, CollectorRegistry]] = []

    def build(self, env: dict[str, str], token_file: Path | None = None, **options: float) -> NodePods:
        registry = CollectorRegistry()
        client = make_client(KubeSettings(kubeconfig=str(self.kube_api.kubeconfig_path)), request_counter(registry))
        node_pods = NodePods.from_env(
            self.node,
            client,
            registry,
            env,
            token_file=token_file or Path("/nonexistent/token"),
            **{**FAST, **options},
        )
        self.built.append((node_pods, client, registry))
        return node_pods

    def registry(self, node_pods: NodePods) -> CollectorRegistry:
        return next(registry for built, _, registry in self.built if built is node_pods)

    async def close(self) -> None:
        for node_pods, client, _ in self.built:
            await node_pods.stop()
            await client.close()


@pytest.fixture
async def harness(kube_api: KubeAPI, node: str) -> AsyncIterator[Harness]:
    built = Harness(kube_api, node)
    try:
        yield built
    finally:
        await built.close()


# --- kubelet mode ----------------------------------------------------------------------------


async def test_kubelet_mode_lists_only_the_nodes_pods_and_refresh_sees_a_new_one(
    kube_api: KubeAPI, kube_namespace: str, node: str, fake_kubelet: FakeKubelet, harness: Harness
) -> None:
    kube_api.create(pod_manifest("mine-1", kube_namespace, node))
    kube_api.create(pod_manifest("mine-2", kube_namespace, node))
    kube_api.create(pod_manifest("elsewhere", kube_namespace, f"{node}-other"))
    kube_api.create(pod_manifest("unscheduled", kube_namespace, None))
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file, interval=30)
    events: list[tuple[Event, str | None]] = []
    node_pods.add_handler(lambda event, pod: events.append((event, meta(pod).name)))

    await node_pods.start()

    assert node_pods.mode == "kubelet"
    assert node_pods.synced
    assert names(node_pods) == {"mine-1", "mine-2"}
    mine = node_pods.get(kube_namespace, "mine-1")
    assert mine is not None and mine.metadata is not None and mine.metadata.uid
    assert node_pods.find_by_uid(mine.metadata.uid) is mine
    assert node_pods.get(kube_namespace, "elsewhere") is None

    kube_api.create(pod_manifest("mine-3", kube_namespace, node))
    assert node_pods.get(kube_namespace, "mine-3") is None  # a 30 s interval: only refresh() can see it
    assert await node_pods.refresh()
    assert node_pods.get(kube_namespace, "mine-3") is not None
    assert len(events) == 3
    assert set(events) == {(Event.ADDED, "mine-1"), (Event.ADDED, "mine-2"), (Event.ADDED, "mine-3")}
    assert api_requests(harness.registry(node_pods)) == 0  # nothing went to the API server
    assert sample(harness.registry(node_pods), "juicefs_kubelet_fallback") == 0


async def test_reads_come_from_the_cache(
    kube_api: KubeAPI, kube_namespace: str, node: str, fake_kubelet: FakeKubelet, harness: Harness
) -> None:
    kube_api.create(pod_manifest("p", kube_namespace, node))
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file, interval=30)
    await node_pods.start()
    before = fake_kubelet.served()
    for _ in range(50):
        assert names(node_pods) == {"p"}
        assert node_pods.get(kube_namespace, "p") is not None
    assert fake_kubelet.served() == before


async def test_poll_diffs_report_modified_and_deleted(
    kube_api: KubeAPI, kube_namespace: str, node: str, fake_kubelet: FakeKubelet, harness: Harness
) -> None:
    kube_api.create(pod_manifest("changes", kube_namespace, node))
    kube_api.create(pod_manifest("goes", kube_namespace, node))
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file)
    events: list[tuple[Event, str | None]] = []
    node_pods.add_handler(lambda event, pod: events.append((event, meta(pod).name)))
    await node_pods.start()

    kube_api.patch("pods", "changes", {"metadata": {"labels": {"x": "1"}}}, namespace=kube_namespace)
    kube_api.delete("pods", "goes", kube_namespace, grace_period_seconds=0)

    def labelled() -> Pod | None:
        pod = node_pods.get(kube_namespace, "changes")
        return pod if pod is not None and pod.metadata is not None and (pod.metadata.labels or {}).get("x") else None

    await node_pods.wait_for(labelled, timeout=10)
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "goes") is None, timeout=10)
    assert (Event.MODIFIED, "changes") in events
    assert (Event.DELETED, "goes") in events
    assert events.count((Event.ADDED, "changes")) == 1


async def test_a_waiter_speeds_up_polling(
    kube_api: KubeAPI, kube_namespace: str, node: str, fake_kubelet: FakeKubelet, harness: Harness
) -> None:
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file, interval=60, fast_interval=0.05)
    await node_pods.start()
    kube_api.create(pod_manifest("awaited", kube_namespace, node))
    found = await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "awaited"), timeout=5)
    assert found.metadata is not None and found.metadata.name == "awaited"


async def test_client_certificate_instead_of_token(
    kube_api: KubeAPI, kube_namespace: str, node: str, harness: Harness
) -> None:
    kube_api.create(pod_manifest("by-cert", kube_namespace, node))
    with FakeKubelet(kube_api, node, client_certs=True) as fake:
        assert "KUBELET_CLIENT_CERT" in fake.env()
        node_pods = harness.build(fake.env(), Path("/nonexistent/token"))
        await node_pods.start()
        assert node_pods.mode == "kubelet"
        assert names(node_pods) == {"by-cert"}
        await node_pods.stop()


# --- fallback to the API server ----------------------------------------------------------------


async def test_unauthorized_at_start_falls_back_to_the_api_server(
    kube_api: KubeAPI,
    kube_namespace: str,
    fake_kubelet: FakeKubelet,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = fake_kubelet.node
    caplog.set_level(logging.WARNING, logger=LOGGER)
    kube_api.create(pod_manifest("a", kube_namespace, node))
    kube_api.create(pod_manifest("other-node", kube_namespace, f"{node}-x"))
    fake_kubelet.fail_with(401)
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file)
    kube_api.reset_counts()

    await node_pods.start()

    assert node_pods.mode == "apiserver"
    await node_pods.wait_synced(10)
    assert names(node_pods) == {"a"}
    kube_api.create(pod_manifest("b", kube_namespace, node))
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "b"), timeout=10)
    assert len(fallback_warnings(caplog)) == 1
    assert "401" in (node_pods.fallback_reason or "")
    assert sample(harness.registry(node_pods), "juicefs_kubelet_fallback") == 1
    assert fake_kubelet.served() == 1  # given up at once, never asked again
    assert sample(harness.registry(node_pods), "juicefs_kubelet_errors_total", reason="unauthorized") == 1
    counts = kube_api.request_counts()
    if not kube_api.is_real and counts is not None:
        assert counts.get(("list", "pods"), 0) == 1  # the informer listed once, then watched


async def test_wrong_token_is_unauthorized_too(
    kube_api: KubeAPI, node: str, fake_kubelet: FakeKubelet, harness: Harness, tmp_path: Path
) -> None:
    wrong = tmp_path / "token"
    wrong.write_text("not-the-token")
    node_pods = harness.build(fake_kubelet.env(), wrong)
    await node_pods.start()
    assert node_pods.mode == "apiserver"
    assert fake_kubelet.served(401) == 1


async def test_forbidden_later_switches_and_changes_keep_arriving(
    kube_api: KubeAPI,
    kube_namespace: str,
    fake_kubelet: FakeKubelet,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = fake_kubelet.node
    caplog.set_level(logging.WARNING, logger=LOGGER)
    kube_api.create(pod_manifest("before", kube_namespace, node))
    kube_api.create(pod_manifest("leaves", kube_namespace, node))
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file)
    events: list[tuple[Event, str | None]] = []
    node_pods.add_handler(lambda event, pod: events.append((event, meta(pod).name)))
    await node_pods.start()
    assert node_pods.mode == "kubelet"
    assert names(node_pods) == {"before", "leaves"}

    fake_kubelet.fail_with(403)
    # Deleted while nobody can see: the switch must still report it.
    kube_api.delete("pods", "leaves", kube_namespace, grace_period_seconds=0)
    await node_pods.wait_for(lambda: node_pods.mode == "apiserver", timeout=10)
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "leaves") is None, timeout=10)
    assert await node_pods.refresh()  # API-server mode: returns once the first list is in
    served_at_switch = fake_kubelet.served()
    mark = len(events)

    kube_api.create(pod_manifest("after", kube_namespace, node))
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "after"), timeout=10)
    kube_api.delete("pods", "before", kube_namespace, grace_period_seconds=0)
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "before") is None, timeout=10)

    later = [(event, name) for event, name in events[mark:] if event is not Event.MODIFIED]
    assert later == [(Event.ADDED, "after"), (Event.DELETED, "before")]
    assert (Event.DELETED, "leaves") in events
    assert events.count((Event.ADDED, "before")) == 1  # the switch did not re-announce known pods
    assert len(fallback_warnings(caplog)) == 1
    assert "403" in (node_pods.fallback_reason or "")
    assert sample(harness.registry(node_pods), "juicefs_kubelet_fallback") == 1
    assert fake_kubelet.served() == served_at_switch  # the kubelet is not asked again


async def test_server_errors_keep_kubelet_mode_and_it_recovers(
    kube_api: KubeAPI,
    kube_namespace: str,
    fake_kubelet: FakeKubelet,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = fake_kubelet.node
    caplog.set_level(logging.INFO, logger=LOGGER)
    kube_api.create(pod_manifest("steady", kube_namespace, node))
    node_pods = harness.build(fake_kubelet.env(), fake_kubelet.token_file)
    await node_pods.start()

    fake_kubelet.fail_with(500)
    registry = harness.registry(node_pods)
    await eventually(lambda: sample(registry, "juicefs_kubelet_errors_total", reason="status") >= 3, what="errors")
    assert node_pods.mode == "kubelet"
    assert names(node_pods) == {"steady"}  # the last good list is kept
    assert not await node_pods.refresh()

    kube_api.create(pod_manifest("later", kube_namespace, node))
    fake_kubelet.recover()
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "later"), timeout=10)
    assert node_pods.mode == "kubelet"
    assert sample(registry, "juicefs_kubelet_fallback") == 0
    assert api_requests(registry) == 0
    assert not fallback_warnings(caplog)
    assert any("answers again" in r.message for r in caplog.records if r.name == LOGGER)


async def test_kubelet_down_at_start_keeps_kubelet_mode_until_it_answers(
    kube_api: KubeAPI, kube_namespace: str, node: str, harness: Harness, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("kubelet-test-token")
    kube_api.create(pod_manifest("waiting", kube_namespace, node))
    node_pods = harness.build({"HOST_IP": "127.0.0.1", "KUBELET_PORT": str(port)}, token)

    await node_pods.start()

    assert node_pods.mode == "kubelet"
    assert not node_pods.synced
    assert sample(harness.registry(node_pods), "juicefs_kubelet_errors_total", reason="connection") >= 1
    with FakeKubelet(kube_api, node, port=port):
        await node_pods.wait_synced(10)
        assert names(node_pods) == {"waiting"}
        assert node_pods.mode == "kubelet"


async def test_without_host_ip_the_api_server_is_used_and_listed_once(
    kube_api: KubeAPI, kube_namespace: str, node: str, harness: Harness
) -> None:
    kube_api.create(pod_manifest("one", kube_namespace, node))
    kube_api.create(pod_manifest("not-mine", kube_namespace, f"{node}-b"))
    node_pods = harness.build({})
    assert node_pods.mode == "apiserver"
    kube_api.reset_counts()

    await node_pods.start()
    await node_pods.wait_synced(10)
    assert names(node_pods) == {"one"}
    kube_api.create(pod_manifest("two", kube_namespace, node))
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "two"), timeout=10)
    kube_api.delete("pods", "one", kube_namespace, grace_period_seconds=0)
    await node_pods.wait_for(lambda: node_pods.get(kube_namespace, "one") is None, timeout=10)
    for _ in range(20):
        assert await node_pods.refresh()
        assert names(node_pods) == {"two"}

    assert node_pods.fallback_reason is None
    assert sample(harness.registry(node_pods), "juicefs_kubelet_fallback") == 0
    assert api_requests(harness.registry(node_pods)) >= 2  # one list, then watches
    counts = kube_api.request_counts()
    if kube_api.is_real or counts is None:
        return  # request counts are an emulator control
    assert counts.get(("list", "pods"), 0) == 1
    assert counts.get(("watch", "pods"), 0) >= 1


# --- the kubelet client --------------------------------------------------------------------------


async def test_kubelet_client_classifies_failures(
    kube_api: KubeAPI, kube_namespace: str, node: str, fake_kubelet: FakeKubelet, tmp_path: Path
) -> None:
    kube_api.create(pod_manifest("listed", kube_namespace, node))
    config = KubeletConfig.from_env(fake_kubelet.env(), token_file=fake_kubelet.token_file)
    assert config is not None
    client = KubeletClient(config)
    try:
        pods = await client.pods()
        assert [p.metadata.name for p in pods if p.metadata] == ["listed"]
        assert isinstance(pods[0], Pod)
        for status in (401, 403):
            fake_kubelet.fail_with(status)
            with pytest.raises(KubeletUnauthorized) as unauthorized:
                await client.pods()
            assert unauthorized.value.status == status
        fake_kubelet.fail_with(503)
        with pytest.raises(KubeletError) as failed:
            await client.pods()
        assert not isinstance(failed.value, KubeletUnauthorized)
        assert (failed.value.reason, failed.value.status) == ("status", 503)
        fake_kubelet.recover()
        fake_kubelet.delay = 2.0
        slow = KubeletClient(
            KubeletConfig.from_env({**fake_kubelet.env(), "KUBELET_TIMEOUT": "0.2"}, token_file=fake_kubelet.token_file)
            or config
        )
        with pytest.raises(KubeletError) as timed_out:
            await slow.pods()
        assert timed_out.value.reason == "timeout"
        await slow.aclose()
    finally:
        await client.aclose()
    missing = KubeletClient(KubeletConfig(host="127.0.0.1", port=fake_kubelet.port, token_file=tmp_path / "none"))
    with pytest.raises(KubeletUnauthorized, match="token unreadable"):
        await missing.pods()
    broken_cert = KubeletClient(
        KubeletConfig(
            host="127.0.0.1", port=fake_kubelet.port, client_cert=str(tmp_path / "c"), client_key=str(tmp_path / "k")
        )
    )
    with pytest.raises(KubeletUnauthorized, match="certificate"):
        await broken_cert.pods()


# --- the cache ------------------------------------------------------------------------------------


def _pod(name: str, uid: str, *, terminating: bool = False, rv: str = "1") -> Pod:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv}
    if terminating:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return cast(Pod, Pod.from_dict({"metadata": meta, "spec": {"containers": [{"name": "c"}]}}))


def test_cache_keeps_a_terminating_pod_and_its_same_named_replacement() -> None:
    cache = PodCache()
    old, new = _pod("web-0", "u1", terminating=True), _pod("web-0", "u2")
    cache.put(old)
    cache.put(new)
    assert cache.get("ns", "web-0") is new
    assert cache.others_with_key(new) == ["u1"]
    assert cache.remove("u2") is new
    assert cache.get("ns", "web-0") is old
    assert cache.remove("u1") is old
    assert cache.get("ns", "web-0") is None
    assert cache.by_uid == {}
