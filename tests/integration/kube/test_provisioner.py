"""The in-process provisioner against the session's Kubernetes API and a real JuiceFS file system.

Claims are bound by the PV binder (kube-controller-manager's part); directories are created, sized
and removed in a real file system (SQLite metadata, local object storage) through the same
`VolumeFiles` the controller uses. Waits poll the API or watch the provisioner's caches; none sleeps
for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets as random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import PersistentVolume
from prometheus_client import CollectorRegistry

from juicefs_csi.controller.provisioner import Provisioner, _scrub, workers_from_env
from juicefs_csi.controller.volumes import VolumeFiles
from juicefs_csi.juicefs.runner import JuiceFS
from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from juicefs_csi.kube.election import LeadershipLost
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount.process import ProcessMounter, ProcessMounterConfig
from tests.support.kube import KubeAPI, KubeApiError
from tests.support.kube.pvbinder import PVBinder
from tests.support.objects import meta
from tests.support.podrunner import eventually

pytestmark = pytest.mark.mounts

Obj = dict[str, Any]
DRIVER = "csi.juicefs.com"
TIMEOUT = 60.0


# --- harness --------------------------------------------------------------------------------------


class Harness:
    """Provisioners, their clients and file access, for one test; everything is stopped afterwards."""

    def __init__(self, kube_api: KubeAPI, namespace: str, workdir: Path, secret: dict[str, str]) -> None:
        self.kube_api = kube_api
        self.namespace = namespace
        self.workdir = workdir
        self.secret = secret
        self.secret_name = "jfs-secret"
        self.juicefs = JuiceFS()
        self.mounters: list[ProcessMounter] = []
        self.clients: list[AsyncClient] = []
        self.running: list[tuple[Provisioner, asyncio.Task[None]]] = []
        self.classes: list[str] = []
        self.files: VolumeFiles | None = None

    def client(self) -> AsyncClient:
        client = make_client(
            KubeSettings(kubeconfig=str(self.kube_api.kubeconfig_path), qps=500, burst=500),
            request_counter(CollectorRegistry()),
        )
        self.clients.append(client)
        return client

    async def volume_files(self) -> VolumeFiles:
        """A VolumeFiles over its own mounter, as each controller process has its own."""
        index = len(self.mounters)
        mounter = ProcessMounter(
            ProcessMounterConfig(
                state_dir=self.workdir / f"state{index}",
                mount_root=self.workdir / f"mnt{index}",
                metrics_host="127.0.0.1",
            ),
            self.juicefs,
            Metrics(f"node-{index}"),
        )
        await mounter.start()
        self.mounters.append(mounter)
        return VolumeFiles(mounter, self.juicefs, linger=5.0)

    async def start(self, workers: int = 16, files: VolumeFiles | None = None) -> Provisioner:
        if files is None:
            if self.files is None:
                self.files = await self.volume_files()
            files = self.files
        provisioner = Provisioner(self.client(), files, DRIVER, workers, backoff_base=0.05, backoff_max=1.0)
        task = asyncio.create_task(provisioner.run())
        self.running.append((provisioner, task))
        await asyncio.wait_for(provisioner.ready.wait(), TIMEOUT)
        return provisioner

    async def stop(self, provisioner: Provisioner, grace: float = 10.0) -> None:
        await provisioner.stop(grace)
        self.running = [(p, t) for p, t in self.running if p is not provisioner]

    async def close(self) -> None:
        for provisioner, _ in self.running:
            await provisioner.stop(0)
        for pv in self.kube_api.list("persistentvolumes")["items"]:
            if (pv["spec"].get("claimRef") or {}).get("namespace") == self.namespace:
                name = pv["metadata"]["name"]
                try:
                    self.kube_api.patch("persistentvolumes", name, {"metadata": {"finalizers": None}})
                    self.kube_api.delete("persistentvolumes", name)
                except KubeApiError:
                    pass
        for sc in self.classes:
            with contextlib.suppress(KubeApiError):
                self.kube_api.delete("storageclasses", sc)
        for client in self.clients:
            await client.close()
        for mounter in self.mounters:
            await mounter.close()

    # -- objects -------------------------------------------------------------------------------

    def put_secret(self, name: str | None = None) -> None:
        self.kube_api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name or self.secret_name, "namespace": self.namespace},
                "stringData": self.secret,
            }
        )

    def storage_class(self, parameters: dict[str, str] | None = None, secret: str | None = None, **fields: Any) -> str:
        name = f"jfs-{self.namespace}-{len(self.classes)}"
        secret = secret or self.secret_name
        params = {
            f"csi.storage.k8s.io/{kind}-secret-{part}": value
            for kind in ("provisioner", "node-publish", "controller-expand")
            for part, value in (("name", secret), ("namespace", self.namespace))
        }
        self.kube_api.create(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": name},
                "provisioner": DRIVER,
                "parameters": {**params, **(parameters or {})},
                **fields,
            }
        )
        self.classes.append(name)
        return name

    def claim_manifest(self, name: str, sc: str, storage: str = "1Gi", **metadata: Any) -> Obj:
        spec_extra = metadata.pop("spec", {})
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": self.namespace, **metadata},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": sc,
                "resources": {"requests": {"storage": storage}},
                **spec_extra,
            },
        }

    def claim(self, name: str, sc: str, storage: str = "1Gi", **metadata: Any) -> Obj:
        return self.kube_api.create(self.claim_manifest(name, sc, storage, **metadata))

    def get_claim(self, name: str) -> Obj:
        return self.kube_api.get("persistentvolumeclaims", name, self.namespace)

    async def bound(self, name: str, timeout: float = TIMEOUT) -> tuple[Obj, Obj]:
        """The claim once Bound, and its PV."""

        def probe() -> Obj | None:
            pvc = self.get_claim(name)
            return pvc if pvc.get("status", {}).get("phase") == "Bound" else None

        pvc = await eventually(probe, timeout, what=f"PVC {name} to be bound")
        return pvc, self.kube_api.get("persistentvolumes", pvc["spec"]["volumeName"])

    def events(self, involved: str, reason: str | None = None) -> list[Obj]:
        namespace = self.namespace if not involved.startswith("pvc-") else "default"
        selector = f"involvedObject.name={involved}" + (f",reason={reason}" if reason else "")
        return list(self.kube_api.list("events", namespace, field_selector=selector)["items"])

    async def event(self, involved: str, reason: str, timeout: float = TIMEOUT) -> Obj:
        found = await eventually(
            lambda: self.events(involved, reason) or None, timeout, what=f"event {reason} on {involved}"
        )
        return found[-1]

    def pvs(self) -> list[Obj]:
        return [
            pv
            for pv in self.kube_api.list("persistentvolumes")["items"]
            if (pv["spec"].get("claimRef") or {}).get("namespace") == self.namespace
        ]

    async def gone(self, resource: str, name: str, namespace: str | None = None) -> None:
        await eventually(
            lambda: self.kube_api.get_or_none(resource, name, namespace) is None,
            TIMEOUT,
            what=f"{resource} {name} to be deleted",
        )

    # -- the file system -----------------------------------------------------------------------

    async def fs(self) -> VolumeFiles:
        if self.files is None:
            self.files = await self.volume_files()
        return self.files

    async def exists(self, directory: str) -> bool:
        return await (await self.fs()).exists(self.secret, directory)

    async def root_entries(self) -> set[str]:
        async with (await self.fs())._root(self.secret) as root:
            return set(await asyncio.to_thread(os.listdir, root)) - {".trash", ".stats", ".config", ".accesslog"}

    async def quota(self, directory: str) -> str:
        process = await asyncio.create_subprocess_exec(
            self.juicefs.binary,
            "quota",
            "get",
            self.secret["metaurl"],
            "--path",
            "/" + directory,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await process.communicate())[0].decode()
        for line in output.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) > 2 and cells[1] == "/" + directory:
                return cells[2]
        raise AssertionError(f"no quota for /{directory}: {output[-500:]}")


@pytest.fixture
def binder(kube_api: KubeAPI) -> Iterator[PVBinder]:
    with PVBinder(kube_api) as running:
        yield running


@pytest.fixture
async def harness(
    kube_api: KubeAPI, kube_namespace: str, workdir: Path, sqlite_secret: dict[str, str], binder: PVBinder
) -> AsyncIterator[Harness]:
    built = Harness(kube_api, kube_namespace, workdir, sqlite_secret)
    built.put_secret()
    try:
        yield built
    finally:
        await built.close()


# --- provisioning -----------------------------------------------------------------------------------


async def test_dynamic_provisioning_end_to_end_and_reclaim_delete(harness: Harness) -> None:
    sc = harness.storage_class({"juicefs/mount-delete-delay": "1m"}, mountOptions=["cache-size=1024"])
    await harness.start()
    created = harness.claim("data", sc, "1Gi")
    pvc, pv = await harness.bound("data")

    name = f"pvc-{created['metadata']['uid']}"
    assert pvc["spec"]["volumeName"] == name
    assert pvc["status"]["capacity"] == {"storage": "1Gi"}
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == DRIVER
    assert pv["metadata"]["annotations"]["volume.kubernetes.io/provisioner-deletion-secret-name"] == "jfs-secret"
    assert pv["spec"]["csi"] == {
        "driver": DRIVER,
        "volumeHandle": name,
        "fsType": "juicefs",
        "volumeAttributes": {"juicefs/mount-delete-delay": "1m", "subPath": name, "capacity": str(1 << 30)},
        "nodePublishSecretRef": {"name": "jfs-secret", "namespace": harness.namespace},
        "controllerExpandSecretRef": {"name": "jfs-secret", "namespace": harness.namespace},
    }
    assert pv["spec"]["claimRef"]["uid"] == created["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["mountOptions"] == ["cache-size=1024"]
    assert pv["spec"]["storageClassName"] == sc
    assert pv["status"]["phase"] == "Bound"
    assert await harness.exists(name)
    assert await harness.quota(name) == "1.0 GiB"
    assert harness.events("data", "Provisioning")
    succeeded = await harness.event("data", "ProvisioningSucceeded")
    assert succeeded["message"] == f"Successfully provisioned volume {name}"
    assert succeeded["type"] == "Normal"

    harness.kube_api.delete("persistentvolumeclaims", "data", harness.namespace)
    await harness.gone("persistentvolumes", name)
    assert not await harness.exists(name)


async def test_directory_left_by_a_crash_is_reused(harness: Harness) -> None:
    """A crash between making the directory and the PV: the next attempt adopts the directory."""
    sc = harness.storage_class({"pathPattern": "${.pvc.namespace}-${.pvc.name}"})
    directory = f"{harness.namespace}-survivor"
    files = await harness.fs()
    await files.create(harness.secret, directory, 1 << 30)
    async with files._root(harness.secret) as root:
        Path(root, directory, "kept.txt").write_text("data")
    await harness.start()
    harness.claim("survivor", sc)
    _, pv = await harness.bound("survivor")
    assert pv["spec"]["csi"]["volumeAttributes"]["subPath"] == directory
    async with files._root(harness.secret) as root:
        assert Path(root, directory, "kept.txt").read_text() == "data"


async def test_path_pattern_makes_readable_directories_and_templates_mount_options(harness: Harness) -> None:
    sc = harness.storage_class(
        {"pathPattern": "${.pvc.namespace}-${.pvc.name}-${.PVC.labels.team}"},
        mountOptions=["cache-size=${.pvc.annotations.cache}"],
    )
    await harness.start()
    harness.claim("reports", sc, labels={"team": "ml"}, annotations={"cache": "2048"})
    _, pv = await harness.bound("reports")
    directory = f"{harness.namespace}-reports-ml"
    assert pv["spec"]["csi"]["volumeAttributes"]["subPath"] == directory
    assert pv["spec"]["csi"]["volumeAttributes"]["pathPattern"] == directory
    assert pv["spec"]["mountOptions"] == ["cache-size=2048"]
    assert await harness.exists(directory)
    assert await harness.quota(directory) == "1.0 GiB"


@pytest.mark.parametrize(
    ("pattern", "annotations", "message"),
    [
        ("${.pvc.annotations.dir}", {"dir": "../../etc"}, "contains .."),
        ("${.pvc.annotations.dir}", {"dir": "/"}, "the file system root"),
        ("${.pvc.annotations.dir}", {"dir": "/etc"}, "absolute path '/etc'"),
        ("${.pvc.labels.team}", {}, "refers to label 'team', which PVC {ns}/bad does not have"),
        ("data-${pvc.name}", {}, "unknown template '${pvc.name}'"),
        ("a//${.pvc.name}", {}, "empty segment"),
    ],
)
async def test_bad_path_patterns_create_nothing(
    harness: Harness, pattern: str, annotations: dict[str, str], message: str
) -> None:
    sc = harness.storage_class({"pathPattern": pattern})
    before = await harness.root_entries()
    provisioner = await harness.start()
    harness.claim("bad", sc, annotations=annotations)
    event = await harness.event("bad", "ProvisioningFailed")
    assert event["type"] == "Warning"
    assert message.replace("{ns}", harness.namespace) in event["message"]
    assert event["message"].startswith(f'failed to provision volume with StorageClass "{sc}": pathPattern ')
    await provisioner.wait_idle()
    assert harness.pvs() == []
    assert harness.get_claim("bad")["status"]["phase"] == "Pending"
    assert await harness.root_entries() == before
    assert not harness.events("bad", "Provisioning")  # refused before anything started


async def test_missing_secret_is_retried_and_creates_nothing(harness: Harness) -> None:
    sc = harness.storage_class(secret="not-yet")
    before = await harness.root_entries()
    provisioner = await harness.start()
    harness.claim("waiting", sc)
    event = await harness.event("waiting", "ProvisioningFailed")
    assert f"cannot read the provisioner Secret {harness.namespace}/not-yet: not found" in event["message"]
    # Retried with backoff: the same Event is counted up, not written again.
    await eventually(
        lambda: (harness.events("waiting", "ProvisioningFailed")[0].get("count") or 0) >= 2, TIMEOUT, what="a retry"
    )
    assert len(harness.events("waiting", "ProvisioningFailed")) == 1
    await provisioner.wait_idle()
    assert harness.pvs() == []
    assert await harness.root_entries() == before
    for value in harness.secret.values():
        if len(value) > 3 and value not in ("testvol", "file"):
            assert all(value not in e.get("message", "") for e in harness.events("waiting"))

    harness.put_secret("not-yet")
    _, pv = await harness.bound("waiting")
    assert await harness.exists(pv["metadata"]["name"])


async def test_selector_is_rejected(harness: Harness) -> None:
    sc = harness.storage_class()
    provisioner = await harness.start()
    harness.claim("selective", sc, spec={"selector": {"matchLabels": {"disk": "fast"}}})
    event = await harness.event("selective", "ProvisioningFailed")
    assert event["message"].endswith("claim Selector is not supported")
    await provisioner.wait_idle()
    assert harness.pvs() == []


async def test_wait_for_first_consumer_waits_for_the_selected_node(harness: Harness) -> None:
    node = f"node-{random.token_hex(4)}"
    harness.kube_api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"zone": "z1"}}})
    try:
        sc = harness.storage_class(
            {"pathPattern": "${.node.labels.zone}-${.pvc.name}"}, volumeBindingMode="WaitForFirstConsumer"
        )
        provisioner = await harness.start()
        harness.claim("late", sc)
        await provisioner.claims.wait_for(lambda: provisioner.claims.get("late", harness.namespace), TIMEOUT)
        await provisioner.wait_idle()
        assert harness.pvs() == []
        harness.kube_api.patch(
            "persistentvolumeclaims",
            "late",
            {"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}},
            namespace=harness.namespace,
        )
        _, pv = await harness.bound("late")
        assert pv["spec"]["csi"]["volumeAttributes"]["subPath"] == "z1-late"
        assert await harness.exists("z1-late")
    finally:
        harness.kube_api.delete("nodes", node)


# --- deletion -----------------------------------------------------------------------------------


async def test_reclaim_retain_keeps_data_and_pv(harness: Harness) -> None:
    sc = harness.storage_class(reclaimPolicy="Retain")
    provisioner = await harness.start()
    harness.claim("keep", sc)
    _, pv = await harness.bound("keep")
    name = pv["metadata"]["name"]
    assert "finalizers" not in pv["metadata"]
    harness.kube_api.delete("persistentvolumeclaims", "keep", harness.namespace)

    def released() -> PersistentVolume | None:
        seen = provisioner.volumes.get(name)
        return seen if seen is not None and seen.status is not None and seen.status.phase == "Released" else None

    await provisioner.volumes.wait_for(released, TIMEOUT)
    await provisioner.wait_idle()
    assert harness.kube_api.get("persistentvolumes", name)["status"]["phase"] == "Released"
    assert await harness.exists(name)


async def test_shared_directory_is_kept_while_another_pv_uses_it(harness: Harness) -> None:
    sc = harness.storage_class({"pathPattern": "shared-${.pvc.labels.group}"})
    await harness.start()
    harness.claim("first", sc, labels={"group": "g1"})
    harness.claim("second", sc, labels={"group": "g1"})
    _, first = await harness.bound("first")
    _, second = await harness.bound("second")
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["spec"]["csi"]["volumeAttributes"]["subPath"] == "shared-g1"
    assert second["spec"]["csi"]["volumeAttributes"]["subPath"] == "shared-g1"

    harness.kube_api.delete("persistentvolumeclaims", "first", harness.namespace)
    await harness.gone("persistentvolumes", first["metadata"]["name"])
    assert await harness.exists("shared-g1")

    harness.kube_api.delete("persistentvolumeclaims", "second", harness.namespace)
    await harness.gone("persistentvolumes", second["metadata"]["name"])
    assert not await harness.exists("shared-g1")


async def test_root_sub_path_is_never_deleted(harness: Harness) -> None:
    """A PV of ours whose subPath is the root (hand-made, or edited) gets an Event, not an rmr."""
    sc = harness.storage_class()
    provisioner = await harness.start()
    before = await harness.root_entries()
    name = f"pvc-{random.token_hex(8)}"
    harness.kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "capacity": {"storage": "1Gi"},
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": sc,
                "claimRef": {"namespace": harness.namespace, "name": "gone", "uid": "0000"},
                "csi": {
                    "driver": DRIVER,
                    "volumeHandle": name,
                    "volumeAttributes": {"subPath": "/"},
                    "nodePublishSecretRef": {"name": "jfs-secret", "namespace": harness.namespace},
                },
            },
        }
    )
    event = await harness.event(name, "VolumeFailedDelete")
    assert "refusing to delete the volume's data" in event["message"] and "root" in event["message"]
    await provisioner.wait_idle()
    assert harness.kube_api.get("persistentvolumes", name)["status"]["phase"] == "Released"
    assert await harness.root_entries() == before


# --- expansion ----------------------------------------------------------------------------------


async def test_expansion_updates_quota_and_capacities(harness: Harness) -> None:
    sc = harness.storage_class(allowVolumeExpansion=True)
    await harness.start()
    harness.claim("grow", sc, "1Gi")
    _, pv = await harness.bound("grow")
    name = pv["metadata"]["name"]
    assert await harness.quota(name) == "1.0 GiB"

    harness.kube_api.patch(
        "persistentvolumeclaims",
        "grow",
        {"spec": {"resources": {"requests": {"storage": "3Gi"}}}},
        namespace=harness.namespace,
    )
    await eventually(
        lambda: harness.get_claim("grow")["status"].get("capacity") == {"storage": "3Gi"},
        TIMEOUT,
        what="the claim's capacity",
    )
    assert harness.kube_api.get("persistentvolumes", name)["spec"]["capacity"] == {"storage": "3Gi"}
    assert not harness.get_claim("grow")["status"].get("conditions")
    assert await harness.quota(name) == "3.0 GiB"
    assert harness.events("grow", "Resizing")
    assert (await harness.event("grow", "VolumeResizeSuccessful"))["type"] == "Normal"


async def test_expansion_needs_allow_volume_expansion(harness: Harness) -> None:
    sc = harness.storage_class()
    await harness.start()
    harness.claim("fixed", sc, "1Gi")
    _, pv = await harness.bound("fixed")
    harness.kube_api.patch(
        "persistentvolumeclaims",
        "fixed",
        {"spec": {"resources": {"requests": {"storage": "2Gi"}}}},
        namespace=harness.namespace,
    )
    event = await harness.event("fixed", "VolumeResizeFailed")
    assert "does not allow volume expansion" in event["message"]
    assert harness.kube_api.get("persistentvolumes", pv["metadata"]["name"])["spec"]["capacity"] == {"storage": "1Gi"}
    assert await harness.quota(pv["metadata"]["name"]) == "1.0 GiB"


# --- scale, restarts and concurrent instances ---------------------------------------------------


@pytest.mark.slow
async def test_hundred_claims_exactly_hundred_pvs_across_restart_and_two_instances(harness: Harness) -> None:
    sc = harness.storage_class()
    first = await harness.start(workers=100)
    client = harness.client()
    names = [f"claim-{n:03d}" for n in range(100)]

    created = await asyncio.gather(*(client.create(from_dict(harness.claim_manifest(n, sc))) for n in names))
    uids = {meta(pvc).name: meta(pvc).uid for pvc in created}

    # Restart in the middle: the first instance is cancelled with work in flight.
    await eventually(lambda: len(harness.pvs()) >= 20 or None, TIMEOUT * 2, what="the first PVs")
    await harness.stop(first, grace=0)
    # Two instances at once from here on, each with its own client and mount: still one PV per claim.
    await harness.start(workers=100)
    await harness.start(workers=50, files=await harness.volume_files())

    await eventually(
        lambda: (
            all(
                pvc["status"].get("phase") == "Bound"
                for pvc in harness.kube_api.list("persistentvolumeclaims", harness.namespace)["items"]
            )
            or None
        ),
        TIMEOUT * 4,
        interval=0.2,
        what="all claims to be bound",
    )
    pvs = harness.pvs()
    assert len(pvs) == 100
    assert {pv["metadata"]["name"] for pv in pvs} == {f"pvc-{uid}" for uid in uids.values()}
    assert {pv["spec"]["claimRef"]["uid"] for pv in pvs} == set(uids.values())
    for pvc in harness.kube_api.list("persistentvolumeclaims", harness.namespace)["items"]:
        assert pvc["spec"]["volumeName"] == f"pvc-{pvc['metadata']['uid']}"
    assert {f"pvc-{uid}" for uid in uids.values()} <= await harness.root_entries()


async def test_a_stopped_instance_runs_again(harness: Harness) -> None:
    """Leader election stops and reruns one instance: work that arrived meanwhile is found."""
    sc = harness.storage_class()
    provisioner = await harness.start()
    harness.claim("before", sc)
    await harness.bound("before")
    await harness.stop(provisioner)
    harness.claim("meanwhile", sc)
    task = asyncio.create_task(provisioner.run())
    harness.running.append((provisioner, task))
    await asyncio.wait_for(provisioner.ready.wait(), TIMEOUT)
    _, pv = await harness.bound("meanwhile")
    assert await harness.exists(pv["metadata"]["name"])
    assert len(harness.pvs()) == 2


async def test_a_fenced_provisioner_makes_nothing(harness: Harness) -> None:
    """Leader election's fence (`elector.check`) raising: no directory, no PV, the claim stays Pending."""
    sc = harness.storage_class({"pathPattern": "fenced-${.pvc.name}"})
    before = await harness.root_entries()
    fenced: list[str] = []

    def fence() -> None:
        fenced.append("checked")
        raise LeadershipLost("not the leader of lease ns/csi-controller.juicefs.com")

    provisioner = Provisioner(
        harness.client(), await harness.fs(), DRIVER, 4, fence=fence, backoff_base=0.05, backoff_max=1.0
    )
    harness.running.append((provisioner, asyncio.create_task(provisioner.run())))
    await asyncio.wait_for(provisioner.ready.wait(), TIMEOUT)
    harness.claim("fenced", sc)

    def handed_to_us() -> Any:
        pvc = provisioner.claims.get("fenced", harness.namespace)
        annotations = (pvc.metadata.annotations if pvc is not None and pvc.metadata else None) or {}
        return pvc if annotations.get("volume.kubernetes.io/storage-provisioner") == DRIVER else None

    await provisioner.claims.wait_for(handed_to_us, TIMEOUT)
    await eventually(lambda: fenced or None, TIMEOUT, what="the fence to be checked")
    await provisioner.wait_idle()
    assert harness.pvs() == []
    assert harness.get_claim("fenced")["status"].get("phase") == "Pending"
    assert await harness.root_entries() == before


# --- small pieces -------------------------------------------------------------------------------


def test_worker_count_from_environment() -> None:
    assert workers_from_env({}) == 100
    assert workers_from_env({"PROVISION_WORKER_THREADS": "8"}) == 8
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="PROVISION_WORKER_THREADS"):
            workers_from_env({"PROVISION_WORKER_THREADS": bad})


def test_event_messages_are_scrubbed_of_secret_values() -> None:
    secret = {
        "name": "vol",
        "metaurl": "redis://:hunter22@redis:6379/1",
        "access-key": "AKIAXXXX",
        "secret-key": "s3cr3t-value",
        "envs": "{TOKEN: tok-123456}",
    }
    message = "juicefs failed: auth hunter22 AKIAXXXX s3cr3t-value tok-123456 for vol"
    scrubbed = _scrub(message, secret)
    for value in ("hunter22", "AKIAXXXX", "s3cr3t-value", "tok-123456"):
        assert value not in scrubbed
    assert scrubbed.endswith("for vol")
