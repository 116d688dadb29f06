"""Mount pod mode on the node: kubelet fallback, the global ConfigMap, bad input, podInfoOnMount.

Real `juicefs` mounts through mount pods run by the test pod runner; Events and pods are read back
from the API (emulator, or a real control plane with KUBEBUILDER_ASSETS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.driver import Driver, DriverConfig
from juicefs_csi.errors import FailedPrecondition, InvalidArgument
from juicefs_csi.kube.client import KubeSettings
from juicefs_csi.kube.node_pods import Mode, NodePods
from juicefs_csi.mount.pod import PodMounter
from juicefs_csi.mountpod.names import CONFIG_MAP_KEY, CONFIG_MAP_NAME
from juicefs_csi.node.global_config import GlobalConfigWatcher
from tests.support.driver import capability, cleanup
from tests.support.fake_kubelet import FakeKubelet
from tests.support.kube import KubeAPI
from tests.support.mount_node import (
    NODE,
    PRIORITY_CLASS,
    Node,
    ensure_priority_class,
    eventually,
    format_volume,
    mount_node,
)
from tests.support.podrunner import PodRunner

pytestmark = pytest.mark.mounts

FAST = {"interval": 0.05, "fast_interval": 0.02, "max_backoff": 0.2}
NODE_PODS_LOGGER = "juicefs_csi.node_pods"

GOLD_PATCH = """
mountPodPatch:
  - pvcSelector: {matchLabels: {tier: gold}}
    labels: {patched: gold}
    annotations: {team: storage}
    env: [{name: GOLD, value: "1"}]
    resources: {limits: {memory: 3Gi}}
  - pvcSelector: {matchLabels: {tier: silver}}
    labels: {patched: silver}
"""


# --- helpers ---------------------------------------------------------------------------------------


def sample(registry: CollectorRegistry | None, name: str) -> float:
    assert registry is not None
    return registry.get_sample_value(name) or 0.0


def mode_of(pods: NodePods) -> Mode:
    """The mode now: read through a call, so that mypy does not keep it narrowed by an earlier assert."""
    return pods.mode


def fallback_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == NODE_PODS_LOGGER and "refused the pod list" in r.message]


def set_config(kube_api: KubeAPI, namespace: str, text: str) -> None:
    data = {CONFIG_MAP_KEY: textwrap.dedent(text)}
    if kube_api.get_or_none("configmaps", CONFIG_MAP_NAME, namespace) is None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP_NAME}, "data": data}
        kube_api.create(body, namespace)
    else:
        kube_api.patch("configmaps", CONFIG_MAP_NAME, {"data": data}, namespace=namespace)


async def config_loaded(watcher: GlobalConfigWatcher | None, patches: int) -> None:
    assert watcher is not None
    await eventually(lambda: watcher.error is None and len(watcher.current.mount_pod_patch) == patches, 10, "config")


async def config_rejected(watcher: GlobalConfigWatcher | None, fragment: str) -> str:
    assert watcher is not None
    return str(await eventually(lambda: fragment in (watcher.error or "") and watcher.error, 10, "config error"))


def volume(kube_api: KubeAPI, namespace: str, claim: str, labels: dict[str, str], **annotations: str) -> str:
    """A PV (named after the namespace, PVs are cluster-wide) bound to a PVC with these labels/annotations."""
    pv = f"{namespace}-{claim}"
    meta = {"name": claim, "namespace": namespace, "labels": labels, "annotations": annotations}
    claim_spec = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}
    claim_spec |= {"storageClassName": "", "volumeName": pv}
    kube_api.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim_spec})
    spec = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "csi": {"driver": "csi.juicefs.com", "volumeHandle": pv},
        "claimRef": {"namespace": namespace, "name": claim},
    }
    kube_api.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv}, "spec": spec})
    return pv


def delete_volumes(kube_api: KubeAPI, namespace: str) -> None:
    for pv in kube_api.list("persistentvolumes")["items"]:
        if pv["metadata"]["name"].startswith(f"{namespace}-"):
            kube_api.delete("persistentvolumes", pv["metadata"]["name"])


def mount_pods(node: Node, volume_id: str) -> list[dict[str, Any]]:
    return [p for p in node.mount_pods() if p["metadata"]["annotations"].get("juicefs-uniqueid") == volume_id]


def events(kube_api: KubeAPI, namespace: str, pod: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={pod},reason={reason}"
    return list(kube_api.list("events", namespace, field_selector=selector)["items"])


async def event(kube_api: KubeAPI, namespace: str, pod: str, reason: str, count: int = 1) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = events(kube_api, namespace, pod, reason)
        return found[0] if found and (found[0].get("count") or 0) >= count else None

    found: dict[str, Any] = await eventually(probe, 10, f"event {reason} on {pod}")
    return found


async def unpublish_all(node: Node, *targets: str) -> None:
    """Unpublish, then see the mount pods go (nothing is left behind, and teardown starts from quiet)."""
    for target in targets:
        await node.mounter.unpublish(target)
        assert not os.path.ismount(target)
    await eventually(lambda: not node.mount_pods(), 30, "mount pods to be deleted")


def serves(target: str, name: str = "probe", text: str = "ok") -> bool:
    Path(target, name).write_text(text)
    return Path(target, name).read_text() == text and os.path.ismount(target)


@pytest.fixture
async def volumes_cleanup(kube_api: KubeAPI, kube_namespace: str) -> AsyncIterator[None]:
    yield
    delete_volumes(kube_api, kube_namespace)


# --- kubelet fallback ------------------------------------------------------------------------------


async def test_kubelet_unauthorized_at_start_falls_back_to_the_api_watch_and_publish_mounts(
    kube_api: KubeAPI, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeKubelet(kube_api, NODE) as kubelet:
        kubelet.fail_with(401)
        async with mount_node(
            kube_api, kube_namespace, kubelet_env=kubelet.env(), token_file=kubelet.token_file, pods_options=FAST
        ) as node:
            assert node.pods is not None and node.pods.mode == "apiserver"
            assert node.pods.fallback_reason is not None and "401" in node.pods.fallback_reason
            assert sample(node.registry, "juicefs_kubelet_fallback") == 1
            assert kubelet.served(401) == 1
            # The app pod is known only through the API watch, and no podInfoOnMount context is sent.
            target = node.target(node.app_pod("app-a"))
            await node.mounter.publish(node.request(target, pod_info=False))
            assert serves(target)
            await unpublish_all(node, target)
    assert len(fallback_logs(caplog)) == 1


@pytest.fixture
async def driver_node(
    kube_api: KubeAPI, kube_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Driver, FakeKubelet, csi_pb2_grpc.NodeStub, Path, str]]:
    """The real driver in mount pod mode, in this process, next to a fake kubelet (client certificate)."""
    node_name = f"node-{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix="jfs-drv-"))
    ensure_priority_class(kube_api)
    with FakeKubelet(kube_api, node_name, client_certs=True) as kubelet:
        env = kubelet.env() | {
            "JUICEFS_MOUNT_NAMESPACE": kube_namespace,
            "JUICEFS_MOUNT_PATH": str(root / "volume"),
            "JUICEFS_MOUNT_PRIORITY_NAME": PRIORITY_CLASS,
            "JUICEFS_MOUNT_PREEMPTION_POLICY": "Never",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        runner = PodRunner(kube_api, node_name, root)
        await runner.start()
        config = DriverConfig(
            endpoint=f"unix://{root}/csi.sock",
            node_id=node_name,
            state_dir=root / "state",
            mount_root=root / "mounts",
            run_controller=False,
            by_process=False,
            kube=KubeSettings(kubeconfig=str(kube_api.kubeconfig_path)),
        )
        driver = Driver(config)
        channel = grpc.aio.insecure_channel(f"unix://{root}/csi.sock")
        try:
            yield driver, kubelet, csi_pb2_grpc.NodeStub(channel), root, node_name
        finally:
            await channel.close()
            await driver.stop()
            await runner.stop()
            cleanup(root)
            shutil.rmtree(root, ignore_errors=True)


def app_pod(kube_api: KubeAPI, namespace: str, node_name: str, name: str) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node_name,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}],
        },
    }
    return str(kube_api.create(body)["metadata"]["uid"])


async def test_kubelet_refusing_later_switches_and_node_publish_volume_still_mounts(
    kube_api: KubeAPI,
    kube_namespace: str,
    driver_node: tuple[Driver, FakeKubelet, csi_pb2_grpc.NodeStub, Path, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, kubelet, stub, root, node_name = driver_node
    secret = await format_volume(root)
    uid_a = app_pod(kube_api, kube_namespace, node_name, "app-a")
    await driver.start()
    assert isinstance(driver.mounter, PodMounter) and driver.mounter.pods.mode == "kubelet"

    def publish(uid: str, context: dict[str, str] | None = None, volume_id: str = "pv-k") -> Any:
        target = str(root / "kubelet/pods" / uid / "volumes/kubernetes.io~csi" / volume_id / "mount")
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            target_path=target,
            volume_capability=capability(),
            secrets=secret,
            volume_context=context or {},
        )
        return target, stub.NodePublishVolume(request, timeout=60)

    target_a, call = publish(uid_a)  # identity from the kubelet's pod list, no podInfoOnMount
    await call
    assert serves(target_a, "shared", "from a")
    assert driver.metrics.registry.get_sample_value("juicefs_kubelet_fallback") == 0

    kubelet.fail_with(401)
    uid_b = app_pod(kube_api, kube_namespace, node_name, "app-b")
    # B is not in the cache yet: the publish waits on it, which polls the kubelet, which refuses now;
    # the node switches to the API watch, which has B.
    target_b, call = publish(uid_b)
    await call
    assert mode_of(driver.mounter.pods) == "apiserver"
    assert driver.metrics.registry.get_sample_value("juicefs_kubelet_fallback") == 1
    assert len(fallback_logs(caplog)) == 1
    assert Path(target_b, "shared").read_text() == "from a"
    assert (
        len(kube_api.list("pods", kube_namespace, label_selector="app.kubernetes.io/name=juicefs-mount")["items"]) == 1
    )

    # Bad input through the real gRPC surface: INVALID_ARGUMENT naming key and value, and an Event.
    _, call = publish(uid_b, {"juicefs/mount-cpu-limit": "lots"}, volume_id="pv-bad")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "volume attribute 'juicefs/mount-cpu-limit' 'lots' is not a Kubernetes quantity" in str(
        raised.value.details()
    )
    found = await event(kube_api, kube_namespace, "app-b", "InvalidMountPodSettings")
    assert found["type"] == "Warning" and found["involvedObject"]["uid"] == uid_b
    assert found["source"]["component"] == "juicefs-csi-node" and found["source"]["host"] == node_name

    for target in (target_a, target_b):
        await stub.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id="pv-k", target_path=target))
        assert not os.path.ismount(target)
    selector = "app.kubernetes.io/name=juicefs-mount"
    await eventually(lambda: not kube_api.list("pods", kube_namespace, label_selector=selector)["items"], 30, "pods")


# --- the ConfigMap: selection and hot reload ------------------------------------------------------


@pytest.mark.usefixtures("volumes_cleanup")
async def test_mount_pod_patch_is_applied_by_pvc_selector_and_a_reload_changes_only_new_mount_pods(
    kube_api: KubeAPI, kube_namespace: str, node: Node
) -> None:
    set_config(kube_api, kube_namespace, GOLD_PATCH)
    await config_loaded(node.watcher, 2)
    gold = volume(kube_api, kube_namespace, "gold", {"tier": "gold"})
    bronze = volume(kube_api, kube_namespace, "bronze", {"tier": "bronze"}, **{"juicefs/mount-memory-limit": "512Mi"})
    first, plain = node.target(node.app_pod("app-1"), gold), node.target(node.app_pod("app-2"), bronze)
    await asyncio.gather(
        node.mounter.publish(node.request(first, gold)), node.mounter.publish(node.request(plain, bronze))
    )
    assert serves(first) and serves(plain)

    (pod,) = mount_pods(node, gold)
    assert pod["metadata"]["labels"]["patched"] == "gold"
    assert pod["metadata"]["annotations"]["team"] == "storage"
    container = pod["spec"]["containers"][0]
    assert {"name": "GOLD", "value": "1"} in container["env"]
    assert container["resources"]["limits"]["memory"] == "3Gi"
    (other,) = mount_pods(node, bronze)
    assert "patched" not in other["metadata"]["labels"] and "team" not in other["metadata"]["annotations"]
    resources = other["spec"]["containers"][0]["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "512Mi"  # the PVC's annotation
    warned = await event(kube_api, "default", bronze, "MountPodSettingsWarning")  # PVs are cluster-scoped
    assert warned["type"] == "Warning" and "request 1Gi is above its limit 512Mi" in warned["message"]
    assert not any(e["name"] == "GOLD" for e in other["spec"]["containers"][0].get("env", []))
    pid = node.runner.pid_of(node.namespace, pod["metadata"]["name"], "jfs-mount")

    set_config(kube_api, kube_namespace, GOLD_PATCH.replace("team: storage", "team: storage-v2"))
    await eventually(lambda: "storage-v2" in str(node.watcher and node.watcher.current), 10, "reload")
    second = node.target(node.app_pod("app-3"), gold)
    await node.mounter.publish(node.request(second, gold))
    assert serves(second)

    pods = {p["metadata"]["name"]: p for p in mount_pods(node, gold)}
    assert len(pods) == 2  # the next publish got a new pod; the running one was kept
    old = pods.pop(pod["metadata"]["name"])
    assert old["metadata"]["uid"] == pod["metadata"]["uid"]
    assert old["metadata"]["annotations"]["team"] == "storage"
    assert old["status"]["containerStatuses"][0]["restartCount"] == 0
    assert node.runner.pid_of(node.namespace, pod["metadata"]["name"], "jfs-mount") == pid
    (new,) = pods.values()
    assert new["metadata"]["annotations"]["team"] == "storage-v2"
    assert serves(first, "still")  # the first target kept its client throughout

    await unpublish_all(node, first, plain, second)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("volumes_cleanup")
async def test_an_invalid_config_map_keeps_the_last_good_one_and_says_why_on_the_app_pod(
    kube_api: KubeAPI, kube_namespace: str, node: Node
) -> None:
    set_config(kube_api, kube_namespace, GOLD_PATCH)
    await config_loaded(node.watcher, 2)
    gold = volume(kube_api, kube_namespace, "gold", {"tier": "gold"})

    set_config(kube_api, kube_namespace, "mountPodPatch: [\n")
    error = await config_rejected(node.watcher, "is not valid YAML")
    first = node.target(node.app_pod("app-1"), gold)
    await node.mounter.publish(node.request(first, gold, pod_info=False))
    assert serves(first)
    (pod,) = mount_pods(node, gold)
    assert pod["metadata"]["labels"]["patched"] == "gold"  # the last good config
    found = await event(kube_api, kube_namespace, "app-1", "InvalidGlobalConfig")
    assert found["type"] == "Warning"
    assert f"use the last valid {CONFIG_MAP_NAME}" in found["message"] and error in found["message"]

    reserved = """
    mountPodPatch:
      - volumes: [{name: jfs-dir, emptyDir: {}}]
        volumeMounts: [{name: jfs-dir, mountPath: /scratch}]
    """
    set_config(kube_api, kube_namespace, reserved)
    error = await config_rejected(node.watcher, "mountPodPatch[0].volumes[0].name: 'jfs-dir' uses a prefix")
    second = node.target(node.app_pod("app-2"), gold)
    await node.mounter.publish(node.request(second, gold, pod_info=False))
    assert Path(second, "probe").read_text() == "ok"  # same settings: the same mount pod
    assert len(mount_pods(node, gold)) == 1
    found = await event(kube_api, kube_namespace, "app-2", "InvalidGlobalConfig")
    assert "'jfs-dir' uses a prefix the driver reserves" in found["message"] and error in found["message"]

    await unpublish_all(node, first, second)


@pytest.mark.usefixtures("volumes_cleanup")
async def test_bad_input_fails_only_its_publish_with_a_precise_error_and_an_event(
    kube_api: KubeAPI, kube_namespace: str, node: Node
) -> None:
    clash = """
    mountPodPatch:
      - pvcSelector: {matchLabels: {scratch: "yes"}}
        volumes: [{name: scratch, emptyDir: {}}]
        volumeMounts: [{name: scratch, mountPath: /var/jfsCache}]
    """
    set_config(kube_api, kube_namespace, clash)
    await config_loaded(node.watcher, 1)
    scratch = volume(kube_api, kube_namespace, "scratch", {"scratch": "yes"})
    annotated = volume(kube_api, kube_namespace, "annotated", {}, **{"juicefs/mount-memory-limit": "1 GB"})
    fine = volume(kube_api, kube_namespace, "fine", {})
    attributed = volume(kube_api, kube_namespace, "attributed", {})
    requests = {
        "patch": node.request(node.target(node.app_pod("app-patch"), scratch), scratch, pod_info=False),
        "annotation": node.request(node.target(node.app_pod("app-annotation"), annotated), annotated, pod_info=False),
        "attribute": node.request(
            node.target(node.app_pod("app-attribute"), attributed),
            attributed,
            {"juicefs/mount-cpu-limit": "lots"},
            pod_info=False,
        ),
        "fine": node.request(node.target(node.app_pod("app-fine"), fine), fine, pod_info=False),
    }
    results = dict(
        zip(
            requests,
            await asyncio.gather(*(node.mounter.publish(r) for r in requests.values()), return_exceptions=True),
            strict=True,
        )
    )
    assert not isinstance(results["fine"], BaseException) and serves(requests["fine"].target)
    expected = {
        "patch": "mountPodPatch volumeMounts[0] ('scratch') mountPath '/var/jfsCache' clashes with this volume's "
        "cache directory /var/jfsCache (volume cachedir-0)",
        "annotation": "PVC annotation 'juicefs/mount-memory-limit' '1 GB' is not a Kubernetes quantity",
        "attribute": "volume attribute 'juicefs/mount-cpu-limit' 'lots' is not a Kubernetes quantity",
    }
    for case, fragment in expected.items():
        error = results[case]
        assert isinstance(error, InvalidArgument), (case, error)
        assert fragment in error.message
        assert not os.path.ismount(requests[case].target)
        found = await event(kube_api, kube_namespace, f"app-{case}", "InvalidMountPodSettings")
        assert found["type"] == "Warning" and fragment in found["message"]
        assert found["involvedObject"]["kind"] == "Pod" and found["involvedObject"]["namespace"] == kube_namespace
        assert node.secret["metaurl"] not in found["message"]
    assert {p["metadata"]["annotations"]["juicefs-uniqueid"] for p in node.mount_pods()} == {fine}

    # The kubelet retries: the same Event is counted up, not written again.
    with pytest.raises(InvalidArgument):
        await node.mounter.publish(requests["attribute"])
    await event(kube_api, kube_namespace, "app-attribute", "InvalidMountPodSettings", count=2)
    assert len(events(kube_api, kube_namespace, "app-attribute", "InvalidMountPodSettings")) == 1

    await unpublish_all(node, requests["fine"].target)


async def test_without_any_good_config_new_mount_pods_are_refused_and_a_kept_one_survives_a_restart(
    kube_api: KubeAPI, kube_namespace: str, tmp_path: Path
) -> None:
    state = tmp_path / "global-config"
    set_config(kube_api, kube_namespace, "enableNodeSelector: maybe\n")
    async with mount_node(kube_api, kube_namespace, config_state_file=state) as node:
        assert node.watcher is not None and not node.watcher.valid
        target = node.target(node.app_pod("app-1"))
        with pytest.raises(FailedPrecondition, match=f"no valid {CONFIG_MAP_NAME} is known: .*enableNodeSelector"):
            await node.mounter.publish(node.request(target, pod_info=False))
        await event(kube_api, kube_namespace, "app-1", "InvalidGlobalConfig")
        assert not node.mount_pods()

        set_config(kube_api, kube_namespace, "mountPodPatch: [{labels: {kept: 'yes'}}]\n")
        await config_loaded(node.watcher, 1)
        await node.mounter.publish(node.request(target, pod_info=False))  # retried once fixed
        assert serves(target)
        assert state.stat().st_mode & 0o777 == 0o600
        await unpublish_all(node, target)

    # Broken while the node plugin was down: the restarted one has the config it kept.
    set_config(kube_api, kube_namespace, "enableNodeSelector: maybe\n")
    async with mount_node(kube_api, kube_namespace, config_state_file=state) as node:
        assert node.watcher is not None and node.watcher.valid and node.watcher.error
        assert node.watcher.current.mount_pod_patch[0].labels == {"kept": "yes"}


# --- podInfoOnMount ----------------------------------------------------------------------------------


async def test_publish_without_pod_identity_asks_for_pod_info_on_mount(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with mount_node(kube_api, kube_namespace, app_pod_timeout=0.5) as node:
        uid = "99999999-9999-4999-8999-999999999999"  # no such pod on this node
        target = node.target(uid)
        with pytest.raises(FailedPrecondition) as raised:
            await node.mounter.publish(node.request(target, pod_info=False))
        message = raised.value.message
        assert f"pod {uid} is not among this node's pods" in message
        assert "enable `podInfoOnMount: true` on the CSIDriver object csi.juicefs.com" in message
        assert not node.mount_pods() and not os.path.ismount(target)
        await node.mounter.publish(node.request(target))  # the same publish with podInfoOnMount keys works
        assert serves(target)
        await unpublish_all(node, target)


async def test_an_unavailable_pod_list_and_no_pod_info_fail_with_the_pod_info_on_mount_hint(
    kube_api: KubeAPI, kube_namespace: str, tmp_path: Path
) -> None:
    closed = FakeKubelet(kube_api, NODE).start()
    closed.stop()  # a kubelet that refuses connections: transient errors, never a pod list
    env = {"HOST_IP": "127.0.0.1", "KUBELET_PORT": str(closed.port)}
    token = tmp_path / "token"
    token.write_text("a-token\n")
    async with mount_node(
        kube_api, kube_namespace, kubelet_env=env, token_file=token, pods_options=FAST, app_pod_timeout=0.5
    ) as node:
        assert node.pods is not None and not node.pods.synced and node.pods.mode == "kubelet"
        with pytest.raises(FailedPrecondition, match=r"this node's pod list is not available.*podInfoOnMount: true"):
            await node.mounter.publish(node.request(node.target(node.app_pod("app-1")), pod_info=False))


async def test_a_pod_the_kubelet_cache_does_not_show_yet_is_waited_for_not_refused(
    kube_api: KubeAPI, kube_namespace: str
) -> None:
    with FakeKubelet(kube_api, NODE) as kubelet:
        slow = {"interval": 60.0, "fast_interval": 0.05, "max_backoff": 60.0}  # only a waiter makes it poll
        async with mount_node(
            kube_api, kube_namespace, kubelet_env=kubelet.env(), token_file=kubelet.token_file, pods_options=slow
        ) as node:
            assert node.pods is not None and node.pods.mode == "kubelet" and node.pods.synced
            uid = node.app_pod("app-late")
            assert node.pods.find_by_uid(uid) is None
            target = node.target(uid)
            await node.mounter.publish(node.request(target, pod_info=False))
            assert node.pods.find_by_uid(uid) is not None and serves(target)
            await node.mounter.unpublish(target)
            for _ in range(300):  # nothing polls by itself here: poll as the reconciler's changes need
                await node.pods.refresh()
                if not node.mount_pods():
                    break
                await asyncio.sleep(0.1)
            assert not node.mount_pods()
