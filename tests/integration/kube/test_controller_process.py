"""The controller through real `juicefs-csi` processes: provisioning end to end, and leader failover.

Every driver is its own process (tests/support/driver.py) talking to the session's Kubernetes API
through a kubeconfig; volumes live in a real JuiceFS file system (SQLite metadata, local objects). The
PV binder plays kube-controller-manager; the test pod runner plays the kubelet for mount pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from juicefs_csi.csi.proto import csi_pb2
from juicefs_csi.mount.mountinfo import read_mounts
from tests.support.driver import DriverProcess, capability, cleanup, driver_metrics, metric_samples
from tests.support.kube import KubeAPI, KubeApiError
from tests.support.kube.pvbinder import PVBinder
from tests.support.podrunner import PodRunner, eventually

pytestmark = pytest.mark.mounts

Obj = dict[str, Any]
DRIVER = "csi.juicefs.com"
LEASE = "csi-controller.juicefs.com"
JUICEFS = str(Path(sys.executable).with_name("juicefs"))
PRIORITY_CLASS = "juicefs-mount-priority-nonpreempting"
TIMEOUT = 60.0
LEASE_SECONDS = 4.0
RETRY_SECONDS = LEASE_SECONDS * 2 / 15  # client-go's ratio, as `election_timing` derives it


@dataclass
class Setup:
    kube_api: KubeAPI
    namespace: str
    root: Path
    secret: dict[str, str]
    storage_class: str

    def env(self, **extra: str) -> dict[str, str]:
        """What a driver pod would have: API access, its namespace, the mount pod settings."""
        return {
            "KUBECONFIG": str(self.kube_api.kubeconfig_path),
            "KUBERNETES_SERVICE_HOST": "",
            "HOST_IP": "",  # no kubelet to poll: the node's pods come from an API watch
            "POD_NAME": "",
            "POD_NAMESPACE": "",
            "JUICEFS_MOUNT_NAMESPACE": self.namespace,
            "JUICEFS_MOUNT_PATH": str(self.root / "volume"),
            "JUICEFS_MOUNT_PRIORITY_NAME": PRIORITY_CLASS,
            "JUICEFS_MOUNT_PREEMPTION_POLICY": "Never",
            "KUBE_QPS": "500",
            "KUBE_BURST": "500",
            "PROVISION_WORKER_THREADS": "32",
            **extra,
        }

    def driver(
        self, name: str, *args: str, node_id: str = "controller", by_process: bool = False, **env: str
    ) -> DriverProcess:
        return DriverProcess(
            self.root / name, node_id=node_id, extra_args=list(args), by_process=by_process, env=self.env(**env)
        )

    def claim(self, name: str) -> Obj:
        return self.kube_api.create(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": self.storage_class,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )

    def claims(self) -> list[Obj]:
        return list(self.kube_api.list("persistentvolumeclaims", self.namespace)["items"])

    def pvs(self) -> list[Obj]:
        return [
            pv
            for pv in self.kube_api.list("persistentvolumes")["items"]
            if (pv["spec"].get("claimRef") or {}).get("namespace") == self.namespace
        ]

    async def all_bound(self, count: int, timeout: float = TIMEOUT) -> list[Obj]:
        def probe() -> list[Obj] | None:
            claims = self.claims()
            return (
                claims
                if len(claims) == count and all(c.get("status", {}).get("phase") == "Bound" for c in claims)
                else None
            )

        found: list[Obj] = await eventually(probe, timeout, interval=0.1, what=f"{count} bound claims")
        return found


@pytest.fixture
def setup(kube_api: KubeAPI, kube_namespace: str) -> Iterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix="jfs-cp-"))
    meta, bucket = root / "meta.db", root / "bucket"
    subprocess.run(
        [JUICEFS, "format", f"sqlite3://{meta}", "ctlvol", "--storage=file", f"--bucket={bucket}/"],
        check=True,
        capture_output=True,
    )
    if kube_api.get_or_none("priorityclasses.scheduling.k8s.io", PRIORITY_CLASS) is None:
        with contextlib.suppress(KubeApiError):  # another test may have made it meanwhile
            kube_api.create(
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": PRIORITY_CLASS},
                    "value": 1000000000,
                    "preemptionPolicy": "Never",
                }
            )
    secret = {"name": "ctlvol", "metaurl": f"sqlite3://{meta}"}
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "jfs-secret", "namespace": kube_namespace},
            "stringData": secret,
        }
    )
    storage_class = f"jfs-{kube_namespace}"
    kube_api.create(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": storage_class},
            "provisioner": DRIVER,
            "reclaimPolicy": "Delete",
            "parameters": {
                "pathPattern": "${.pvc.namespace}-${.pvc.name}",
                **{
                    f"csi.storage.k8s.io/{kind}-secret-{part}": value
                    for kind in ("provisioner", "node-publish", "controller-expand")
                    for part, value in (("name", "jfs-secret"), ("namespace", kube_namespace))
                },
            },
        }
    )
    try:
        with PVBinder(kube_api):
            yield Setup(kube_api, kube_namespace, root, secret, storage_class)
    finally:
        for pv in kube_api.list("persistentvolumes")["items"]:
            if (pv["spec"].get("claimRef") or {}).get("namespace") == kube_namespace:
                with contextlib.suppress(KubeApiError):
                    kube_api.patch("persistentvolumes", pv["metadata"]["name"], {"metadata": {"finalizers": None}})
                    kube_api.delete("persistentvolumes", pv["metadata"]["name"])
        with contextlib.suppress(KubeApiError):
            kube_api.delete("storageclasses.storage.k8s.io", storage_class)
        cleanup(root)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def running(*drivers: DriverProcess) -> AsyncIterator[None]:
    """Start the processes side by side (off the event loop, which the pod runner shares)."""
    try:
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in drivers))
        yield
    finally:
        for d in drivers:
            await asyncio.to_thread(d.stop)


def requests(driver: DriverProcess, verb: str, resource: str) -> float:
    samples = metric_samples(driver_metrics(driver), "juicefs_kube_requests_total")
    return sum(value for labels, value in samples if labels["verb"] == verb and labels["resource"] == resource)


def is_leader(driver: DriverProcess) -> bool:
    samples = metric_samples(driver_metrics(driver), "juicefs_leader")
    return any(labels.get("name") == LEASE and value == 1 for labels, value in samples)


# --- (a) dynamic provisioning end to end ----------------------------------------------------------


async def test_pvc_to_pattern_named_directory_on_a_real_mount_through_both_roles(setup: Setup) -> None:
    """PVC → the controller process provisions (pathPattern) → bound → the node process publishes it
    through a mount pod the pod runner runs as a real juicefs process → the target is that directory."""
    node_name = f"node-{secrets.token_hex(3)}"
    controller = setup.driver("ctl", "--role=controller", "--provisioner")
    node = setup.driver("node", "--role=node", node_id=node_name)
    runner = PodRunner(setup.kube_api, node_name, setup.root / "runner")
    async with running(controller, node):
        await runner.start()
        try:
            claim = setup.claim("data")
            (pvc,) = await setup.all_bound(1)
            pv = setup.kube_api.get("persistentvolumes", pvc["spec"]["volumeName"])
            directory = f"{setup.namespace}-data"
            assert pv["metadata"]["name"] == f"pvc-{claim['metadata']['uid']}"
            assert pv["spec"]["csi"]["volumeHandle"] == pv["metadata"]["name"]
            assert pv["spec"]["csi"]["volumeAttributes"]["subPath"] == directory

            pod_uid = "0d3c1f4e-5a6b-4c7d-8e9f-000000000001"
            target = setup.root / f"kubelet/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv['metadata']['name']}/mount"
            context = {
                **pv["spec"]["csi"]["volumeAttributes"],
                "csi.storage.k8s.io/pod.uid": pod_uid,
                "csi.storage.k8s.io/pod.name": "app",
                "csi.storage.k8s.io/pod.namespace": setup.namespace,
            }
            await asyncio.to_thread(
                node.node.NodePublishVolume,
                csi_pb2.NodePublishVolumeRequest(
                    volume_id=pv["spec"]["csi"]["volumeHandle"],
                    target_path=str(target),
                    volume_capability=capability(),
                    secrets=setup.secret,
                    volume_context=context,
                ),
                timeout=TIMEOUT,
            )
            (target / "hello.txt").write_text("through the target")

            # The target is a bind of exactly the pattern-named directory of the file system ...
            (entry,) = [m for m in read_mounts() if m.mount_point == str(target)]
            assert entry.fs_type == "fuse.juicefs"
            assert entry.root == f"/{directory}"
            # ... served by the mount pod's client, whose mount point shows the file system root.
            mount_pods = setup.kube_api.list(
                "pods", setup.namespace, label_selector="app.kubernetes.io/name=juicefs-mount"
            )["items"]
            assert [p["spec"]["nodeName"] for p in mount_pods] == [node_name]
            (root_mount,) = [
                m.mount_point
                for m in read_mounts()
                if m.is_juicefs and m.root == "/" and m.mount_point.startswith(str(setup.root / "volume"))
            ]
            assert (Path(root_mount) / directory / "hello.txt").read_text() == "through the target"
            # The controller made the directory with its quota (the node only binds it).
            argv = [JUICEFS, "quota", "get", setup.secret["metaurl"], "--path", f"/{directory}"]
            quota = (await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, check=True)).stdout
            assert f"/{directory}" in quota and "1.0 GiB" in quota

            await asyncio.to_thread(node.unpublish, pv["spec"]["csi"]["volumeHandle"], target)
            await eventually(
                lambda: (
                    not setup.kube_api.list(
                        "pods", setup.namespace, label_selector="app.kubernetes.io/name=juicefs-mount"
                    )["items"]
                ),
                TIMEOUT,
                what="the mount pod to go",
            )
        finally:
            await runner.stop()
    log = controller.log_text()
    assert '"msg": "volume provisioned"' in log and f'"sub_path": "{directory}"' in log
    assert '"msg": "cleanup started"' in log, "mount pod mode: the controller also runs the cleanup"


# --- (b) leader failover --------------------------------------------------------------------------


async def test_killed_leader_is_replaced_and_every_claim_gets_exactly_one_pv(setup: Setup) -> None:
    """Two replicas with `--leader-election --provisioner`: one provisions; SIGKILL it (no release) and
    the other takes over within lease + 2 s; 100 claims made during the failover get exactly 100 PVs."""
    args = ("--provisioner", "--leader-election", f"--leader-election-lease-duration={LEASE_SECONDS:g}s")
    # The role comes from POD_NAME, as in the Go driver; a takes the Lease's namespace from the flag,
    # b from POD_NAMESPACE (the default).
    a = setup.driver(
        "ctl-a", *args, f"--leader-election-namespace={setup.namespace}", POD_NAME="juicefs-csi-controller-0"
    )
    b = setup.driver("ctl-b", *args, POD_NAME="juicefs-csi-controller-1", POD_NAMESPACE=setup.namespace)
    async with running(a, b):
        await eventually(lambda: is_leader(a) or is_leader(b), TIMEOUT, what="a leader")
        leader, follower = (a, b) if is_leader(a) else (b, a)
        assert not is_leader(follower)
        holder = setup.kube_api.get("leases", LEASE, setup.namespace)["spec"]["holderIdentity"]
        assert holder.startswith(leader.env["POD_NAME"] + "_")

        # While both run, exactly one provisions: the follower never even watches claims.
        for n in range(10):
            setup.claim(f"before-{n}")
        await setup.all_bound(10)
        assert requests(leader, "create", "persistentvolumes") >= 10
        assert requests(follower, "create", "persistentvolumes") == 0
        assert requests(follower, "list", "persistentvolumeclaims") == 0
        assert requests(follower, "watch", "persistentvolumeclaims") == 0

        assert leader.process is not None
        os.kill(leader.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        creating = asyncio.gather(*(asyncio.to_thread(setup.claim, f"during-{n:03d}") for n in range(100)))
        await eventually(lambda: is_leader(follower), LEASE_SECONDS + 10, interval=0.02, what="the takeover")
        takeover = time.monotonic() - killed
        await creating
        print(f"takeover after SIGKILL with a {LEASE_SECONDS:g}s lease: {takeover:.2f}s")
        assert takeover <= LEASE_SECONDS + 2.0
        # Not before the dead leader's last renewal (at most one retry period before the kill) lapsed.
        assert takeover >= LEASE_SECONDS - RETRY_SECONDS - 0.3
        lease = setup.kube_api.get("leases", LEASE, setup.namespace)["spec"]
        assert lease["holderIdentity"].startswith(follower.env["POD_NAME"] + "_")
        assert lease["leaseTransitions"] == 1

        claims = await setup.all_bound(110, timeout=TIMEOUT * 2)
        pvs = setup.pvs()
        assert len(pvs) == 110, "exactly one PV per claim: none lost, no duplicates"
        assert {pv["metadata"]["name"] for pv in pvs} == {f"pvc-{c['metadata']['uid']}" for c in claims}
        assert sorted(pv["spec"]["claimRef"]["uid"] for pv in pvs) == sorted(c["metadata"]["uid"] for c in claims)
        assert all(c["spec"]["volumeName"] == f"pvc-{c['metadata']['uid']}" for c in claims)
        assert requests(follower, "create", "persistentvolumes") >= 100

        # A clean stop (SIGTERM) stops the work first, then releases the lease for the next replica.
        await asyncio.to_thread(follower.stop)
        assert follower.process is not None and follower.process.returncode == 0
        assert setup.kube_api.get("leases", LEASE, setup.namespace)["spec"]["holderIdentity"] == ""


def test_provisioner_without_kubernetes_is_a_clear_startup_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    argv = [
        str(Path(sys.executable).with_name("juicefs-csi")),
        "--role=controller",
        "--provisioner",
        f"--endpoint=unix://{tmp_path / 'csi.sock'}",
        f"--state-dir={tmp_path / 'state'}",
        "--metrics-port=0",
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "--provisioner needs Kubernetes: run in a pod (service account) or set KUBECONFIG" in done.stderr
    assert not (tmp_path / "csi.sock").exists(), "nothing was started"
