"""Benchmark of the controller: provisioning throughput, failover time, and memory with 10,000 PVs cached.

Two real `juicefs-csi --role controller --leader-election --provisioner` processes campaign for the
production 15 s Lease against the in-process Kubernetes API emulator; the leader provisions claims into one
real JuiceFS volume (SQLite metadata, local `file` object storage, formatted beforehand). The emulator has
no kube-controller-manager: the test PV binder plays its part (hands claims to the provisioner, binds them
to their PVs).

    .venv/bin/python -m bench.controller [--pvcs 500] [--failovers 20] [--cached-pvs 10000] [--write-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from lightkube.core import decoders
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim

from bench._report import (
    Machine,
    load_average,
    median,
    mib,
    p90,
    percentile,
    proc_status_kib,
    terminate_as_interrupt,
    verdict,
    wait_until,
    write_docs,
)
from bench.process_mode import Volume
from juicefs_csi.controller.provisioner import DEFAULT_WORKERS
from juicefs_csi.kube.client import DEFAULT_BURST, DEFAULT_QPS
from juicefs_csi.kube.informer import drop_managed_fields
from tests.support.driver import cleanup, free_port, juicefs_processes, mounts_under
from tests.support.kube import REGISTRY, Api, Change, Emulator, KubeAPI, ResourceType, start_kube_api
from tests.support.kube.pvbinder import PVBinder
from tests.support.kube.store import Stored

REPO = Path(__file__).resolve().parent.parent
DRIVER_BIN = str(Path(sys.executable).with_name("juicefs-csi"))
DRIVER = "csi.juicefs.com"
NAMESPACE = "bench-controller"  # the claims, the volume's Secret and the Lease
CACHED_NAMESPACE = "bench-cached"  # the claims added for the memory measurement
STORAGE_CLASS = "juicefs-bench"
SECRET = "juicefs-bench-secret"
LEASE = "csi-controller.juicefs.com"
LEASE_SECONDS = 15.0
RETRY_SECONDS = 2.0  # client-go's retry period for a 15 s lease
FAILOVER_SLACK_SECONDS = 2.0
PATH_PATTERN = "${.pvc.namespace}-${.pvc.name}"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
RSS_TARGET_BYTES = 200 * 1000 * 1000
BOOKMARK_SECONDS = 60.0  # kube-apiserver sends watch bookmarks about once a minute
MODEL_SAMPLE = 1000  # objects of each kind decoded in this process to size one cached model
CACHED_BATCH = 500  # pairs created per call on the emulator's loop (keeps its HTTP server answering)
SETTLE_IDLE_CPU = 0.03  # the leader counts as settled once it uses less than 3 % of a core ...
SETTLE_WINDOW_SECONDS = 3.0  # ... over this window
START_TIMEOUT = 60.0
WAIT_TIMEOUT = 900.0
START_MARKER = "<!-- bench:controller:start -->"
END_MARKER = "<!-- bench:controller:end -->"


# -- what the API server saw, with commit times ---------------------------------------------------------


@dataclass
class ClaimTimes:
    """Monotonic commit times of one claim's way to Bound (CLOCK_MONOTONIC, shared by all processes)."""

    created: float | None = None
    handed_over: float | None = None  # the PV binder (kube-controller-manager's part) annotated it for us
    pv_created: float | None = None  # the provisioner created its PV
    bound: float | None = None


@dataclass(frozen=True)
class LeaseWrite:
    at: float
    holder: str
    transitions: int


class Timeline:
    """A listener on the emulator's store: called in the emulator thread as each write commits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: dict[str, ClaimTimes] = {}
        self.lease_writes: list[LeaseWrite] = []

    def __call__(self, change: Change) -> None:
        now = time.monotonic()
        obj = change.obj.obj
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        with self.lock:
            if kind == "PersistentVolumeClaim" and meta.get("namespace") == NAMESPACE:
                times = self.claims.setdefault(meta.get("name", ""), ClaimTimes())
                if times.created is None and change.type == "ADDED":
                    times.created = now
                if times.handed_over is None and (meta.get("annotations") or {}).get(ANN_STORAGE_PROVISIONER):
                    times.handed_over = now
                if times.bound is None and (obj.get("status") or {}).get("phase") == "Bound":
                    times.bound = now
            elif kind == "PersistentVolume" and change.type == "ADDED":
                ref = (obj.get("spec") or {}).get("claimRef") or {}
                if ref.get("namespace") == NAMESPACE:
                    self.claims.setdefault(ref.get("name", ""), ClaimTimes()).pv_created = now
            elif kind == "Lease" and meta.get("name") == LEASE and meta.get("namespace") == NAMESPACE:
                spec = obj.get("spec") or {}
                write = LeaseWrite(now, spec.get("holderIdentity") or "", int(spec.get("leaseTransitions") or 0))
                self.lease_writes.append(write)

    def holder(self) -> str:
        with self.lock:
            return self.lease_writes[-1].holder if self.lease_writes else ""

    def writes_since(self, moment: float) -> list[LeaseWrite]:
        with self.lock:
            return [w for w in self.lease_writes if w.at >= moment]

    def last_write_before(self, moment: float) -> LeaseWrite | None:
        with self.lock:
            return next((w for w in reversed(self.lease_writes) if w.at < moment), None)

    def bound_count(self) -> int:
        with self.lock:
            return sum(1 for t in self.claims.values() if t.bound is not None)

    def snapshot(self) -> dict[str, ClaimTimes]:
        with self.lock:
            return copy.deepcopy(self.claims)


# -- controller processes ----------------------------------------------------------------------------------


def cli_has_controller_flags() -> bool:
    """Whether `juicefs-csi` has been wired with the in-process provisioner and leader election."""
    result = subprocess.run([DRIVER_BIN, "--help"], capture_output=True, text=True, check=False)
    return all(flag in result.stdout for flag in ("--provisioner", "--leader-election-lease-duration"))


@dataclass
class Controller:
    """One controller process. `slot` is the replica (its state and mounts survive its restarts, as a pod's
    volumes do); each start is a new incarnation with a new POD_NAME, so the Lease's holder identity
    (POD_NAME + "_" + a random suffix) names the incarnation."""

    slot: str
    incarnation: int
    root: Path
    kubeconfig: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return f"juicefs-csi-controller-{self.slot}{self.incarnation}"

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def argv(self) -> list[str]:
        endpoint = f"unix://{self.root / 'csi.sock'}"
        state, mounts = self.root / "state", self.root / "mnt"
        return [
            DRIVER_BIN,
            "--role=controller",
            f"--endpoint={endpoint}",
            "--nodeid=bench-controller",
            f"--state-dir={state}",
            f"--mount-root={mounts}",
            f"--metrics-port={self.port}",
            "--client-metrics-host=127.0.0.1",
            "--leader-election",
            f"--leader-election-namespace={NAMESPACE}",
            f"--leader-election-lease-duration={LEASE_SECONDS:g}s",
            "--provisioner",
            "--log-format=json",
            "--log-level=info",
        ]

    def start(self) -> Controller:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "POD_NAME": self.name,
            "POD_NAMESPACE": NAMESPACE,
            "PYTHONPATH": str(REPO),
        }
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C of the benchmark reaches the controllers only through `Bench.close`.
            self.process = subprocess.Popen(
                self.argv(),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def leader_gauge(self) -> float | None:
        text = self.metrics()
        if text is None:
            return None
        prefix = f'juicefs_leader{{name="{LEASE}"}} '
        return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), None)

    def wait_serving(self, timeout: float = START_TIMEOUT) -> float:
        """Until its metrics endpoint answers; returns that moment."""
        wait_until(lambda: self.metrics() is not None or self._exited(), f"{self.name} to serve", timeout)
        return time.monotonic()

    def _exited(self) -> bool:
        if self.alive():
            return False
        raise RuntimeError(f"{self.name} exited: {self.log_tail()}")

    def owns(self, identity: str) -> bool:
        return identity.startswith(self.name + "_")

    def kill(self) -> None:
        """SIGKILL: no lease release, like a crashed process or a lost node."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM: a clean shutdown releases the lease."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def cpu_seconds(self) -> tuple[float, float]:
        """(its own user+system time, that of its children it has waited for: the juicefs commands)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def fields_v1(value: Any) -> Any:
    """The FieldsV1 set of a JSON value, as the API server writes it into managedFields (lists as atoms)."""
    if isinstance(value, dict):
        return {".": {}, **{f"f:{key}": fields_v1(item) for key, item in value.items()}}
    return {}


def with_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with the two managedFields entries a real API server records for a bound PV or PVC: its creator's
    (labels, annotations, finalizers, spec) and kube-controller-manager's status update."""
    meta = obj["metadata"]
    owned = {key: meta[key] for key in ("labels", "annotations", "finalizers") if key in meta}
    stamp = {"operation": "Update", "apiVersion": "v1", "time": meta.get("creationTimestamp"), "fieldsType": "FieldsV1"}
    entries = [
        {
            "manager": "juicefs-csi",
            **stamp,
            "fieldsV1": {"f:metadata": fields_v1(owned), "f:spec": fields_v1(obj.get("spec", {}))},
        },
        {
            "manager": "kube-controller-manager",
            **stamp,
            "subresource": "status",
            "fieldsV1": {"f:status": fields_v1(obj.get("status", {}))},
        },
    ]
    return {**obj, "metadata": {**meta, "managedFields": entries}}


def decoded_bytes(objects: Sequence[dict[str, Any]], resource: type) -> float:
    """Bytes per object that lightkube's LIST decoding keeps alive once the informer has dropped managedFields
    (tracemalloc): what an informer caches."""
    body = json.dumps(
        {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": list(objects)}
    ).encode()
    gc.collect()
    tracemalloc.start()
    try:
        items = decoders.decode_list(body, resource)[2]
        for item in items:
            drop_managed_fields(item)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del items
    return size / len(objects)


def create_with_status(api: Api, rt: ResourceType, namespace: str, obj: dict[str, Any]) -> str:
    """Create `obj` on the emulator's loop, then give it its status (a create resets status); returns its uid."""
    status = obj.pop("status")
    stored = api.create(rt, namespace, obj)
    assert isinstance(stored, Stored)
    api.apply_update(rt, stored, {**stored.obj, "status": status}, subresource="status")
    return str(stored.obj["metadata"]["uid"])


# -- results ---------------------------------------------------------------------------------------------


@dataclass
class Provisioning:
    claims: int = 0
    wall_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    to_handed_over: list[float] = field(default_factory=list)
    to_pv: list[float] = field(default_factory=list)
    to_bound: list[float] = field(default_factory=list)
    pvs: int = 0
    distinct_claims_with_pv: int = 0
    leader_cpu: float = 0.0
    juicefs_cpu: float = 0.0
    bench_cpu: float = 0.0
    leader_rss_kib: int = 0
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class Failover:
    killed_after_renewal: float  # kill time minus the killed leader's last renewal
    takeover: float  # kill → the other replica's takeover write committed
    since_renewal: float  # the killed leader's last renewal → takeover
    gauge: float | None  # kill → the new leader's `juicefs_leader` gauge read 1
    new_leader_was_follower: bool


@dataclass
class Memory:
    pvs: int = 0
    pvcs: int = 0
    pv_json_bytes: float = 0.0
    pvc_json_bytes: float = 0.0
    start_to_synced: float = 0.0
    synced_to_settled: float = 0.0
    leader_rss_synced_kib: int = 0
    leader_rss_settled_kib: int = 0
    leader_hwm_kib: int = 0
    follower_rss_kib: int = 0
    idle_leader_rss_kib: int = 0  # the leader with part 1's claims only, before the cached ones were added
    # Bytes per object decoded into lightkube models, as the informers keep them: kind -> (as served by the
    # emulator, with the managedFields a real API server adds), and the JSON size with managedFields.
    model_bytes: dict[str, tuple[float, float]] = field(default_factory=dict)
    managed_json_bytes: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    provisioning: Provisioning = field(default_factory=Provisioning)
    failovers: list[Failover] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)


# -- the benchmark ------------------------------------------------------------------------------------------


class Bench:
    """Holds the API, the binder and every process started, so `close` can undo all of it."""

    def __init__(self, workdir: Path, pvcs: int, failovers: int, cached_pvs: int) -> None:
        self.workdir = workdir
        self.pvcs = pvcs
        self.failover_rounds = failovers
        self.cached_pvs = cached_pvs
        self.results = Results()
        self.timeline = Timeline()
        self.stack = contextlib.ExitStack()
        self.kube_api: KubeAPI | None = None
        self.binder: PVBinder | None = None
        self.controllers: list[Controller] = []  # every incarnation ever started
        self.incarnations: Counter[str] = Counter()
        self.volume_uuid = ""

    @property
    def api(self) -> KubeAPI:
        assert self.kube_api is not None
        return self.kube_api

    @property
    def emulator(self) -> Emulator:
        assert self.kube_api is not None and self.kube_api.emulator is not None
        return self.kube_api.emulator

    # -- set-up --

    def set_up(self) -> None:
        volume = Volume(self.workdir / "volume")
        volume.root.mkdir()
        self.volume_uuid = volume.format()
        # The emulator, never a real control plane: the benchmark reads commit times off its store.
        self.kube_api = self.stack.enter_context(start_kube_api(assets="", bookmark_interval=BOOKMARK_SECONDS))
        self.emulator.call(lambda: self.emulator.store.listeners.append(self.timeline))
        api = self.api
        for namespace in (NAMESPACE, CACHED_NAMESPACE):
            api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
                "stringData": volume.secret,
            }
        )
        secret_parameters = {
            f"csi.storage.k8s.io/{role}-secret-{part}": value
            for role in ("provisioner", "node-publish", "controller-expand")
            for part, value in (("name", SECRET), ("namespace", NAMESPACE))
        }
        api.create(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS},
                "provisioner": DRIVER,
                "reclaimPolicy": "Delete",
                "allowVolumeExpansion": True,
                "parameters": {**secret_parameters, "pathPattern": PATH_PATTERN},
            }
        )

    def spawn(self, slot: str) -> Controller:
        controller = Controller(slot, self.incarnations[slot], self.workdir / slot, self.api.kubeconfig_path)
        self.incarnations[slot] += 1
        self.controllers.append(controller)
        return controller.start()

    def running(self) -> list[Controller]:
        return [c for c in self.controllers if c.alive()]

    def leader(self, timeout: float = WAIT_TIMEOUT) -> Controller:
        """The running controller that holds the Lease, once one does."""
        found: list[Controller] = []

        def probe() -> bool:
            holder = self.timeline.holder()
            found[:] = [c for c in self.running() if c.owns(holder)]
            return bool(found)

        wait_until(probe, "a controller to hold the lease", timeout)
        return found[0]

    def start_pair(self) -> tuple[Controller, Controller]:
        """Two replicas; the first leads, the second follows (it starts after the first leads)."""
        first = self.spawn("a")
        first.wait_serving()
        leader = self.leader()
        second = self.spawn("b")
        second.wait_serving()
        wait_until(lambda: leader.leader_gauge() == 1.0, f"{leader.name}'s leader gauge", START_TIMEOUT)
        return leader, second

    # -- 1: provisioning throughput --

    def provision(self, leader: Controller) -> None:
        r = self.results.provisioning
        r.claims = self.pvcs
        self.binder = PVBinder(self.api).start()
        rt = REGISTRY.resolve("persistentvolumeclaims")

        def claim(index: int) -> dict[str, Any]:
            return {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"data-{index:04d}", "namespace": NAMESPACE, "labels": {"app": "bench"}},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": STORAGE_CLASS,
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            }

        def create_all() -> None:
            for index in range(self.pvcs):
                self.emulator.api.create(rt, NAMESPACE, claim(index))

        counts = self.emulator.request_counts()
        cpu = leader.cpu_seconds()
        bench_cpu = time.process_time()
        print(f"creating {self.pvcs} PVCs at once")
        self.emulator.call(create_all)  # one call on the emulator's loop: all are committed before any is served
        last_report = time.monotonic()

        def all_bound() -> bool:
            nonlocal last_report
            if not leader.alive():
                raise RuntimeError(f"the leader exited: {leader.log_tail()}")
            bound = self.timeline.bound_count()
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(f"  {bound}/{self.pvcs} bound")
            return bound >= self.pvcs

        wait_until(all_bound, f"{self.pvcs} PVCs to be Bound", WAIT_TIMEOUT, interval=0.05)
        after = leader.cpu_seconds()
        r.bench_cpu = time.process_time() - bench_cpu
        r.leader_cpu, r.juicefs_cpu = after[0] - cpu[0], after[1] - cpu[1]
        r.leader_rss_kib = proc_status_kib(leader.pid)
        r.requests = Counter(self.emulator.request_counts()) - Counter(counts)
        claims = [t for t in self.timeline.snapshot().values() if t.created is not None]
        first = min(t.created for t in claims if t.created is not None)
        r.wall_seconds = max(t.bound or 0.0 for t in claims) - first
        for t in claims:
            assert t.created is not None and t.bound is not None
            r.latencies.append(t.bound - t.created)
            if t.handed_over is not None and t.pv_created is not None:
                r.to_handed_over.append(t.handed_over - t.created)
                r.to_pv.append(t.pv_created - t.handed_over)
                r.to_bound.append(t.bound - t.pv_created)

        def count_pvs() -> tuple[int, int]:
            refs = [
                ((pv.get("spec") or {}).get("claimRef") or {}) for pv in self.emulator.api.objects("persistentvolumes")
            ]
            ours = [ref.get("uid") for ref in refs if ref.get("namespace") == NAMESPACE]
            return len(ours), len(set(ours))

        r.pvs, r.distinct_claims_with_pv = self.emulator.call(count_pvs)
        print(f"  {self.pvcs} bound in {r.wall_seconds:.1f} s ({self.pvcs / r.wall_seconds:.1f} PVCs/s)")

    # -- 2: failover --

    def failover(self, leader: Controller, follower: Controller) -> None:
        """SIGKILL the leader; the follower takes over; the killed replica restarts at once (as kubelet restarts
        a crashed container) and is the next round's follower."""
        for round_ in range(self.failover_rounds):
            time.sleep(random.uniform(0.0, RETRY_SECONDS))  # a random phase of the new leader's renewal cycle
            leader, follower = self.failover_round(leader, follower)
            print(
                f"  failover {round_ + 1}/{self.failover_rounds}: {self.results.failovers[-1].takeover:.2f} s "
                f"({leader.name} leads)"
            )

    def failover_round(self, leader: Controller, follower: Controller) -> tuple[Controller, Controller]:
        renewal = self.timeline.last_write_before(time.monotonic())
        if renewal is None or not leader.owns(renewal.holder):
            raise RuntimeError(f"{leader.name} does not hold the lease")
        killed_identity = renewal.holder
        killed_at = time.monotonic()
        leader.kill()
        renewal = self.timeline.last_write_before(killed_at)  # a renewal may have landed meanwhile
        assert renewal is not None
        restarted = self.spawn(leader.slot)
        takeover: list[LeaseWrite] = []

        def taken_over() -> bool:
            takeover[:] = [w for w in self.timeline.writes_since(killed_at) if w.holder != killed_identity]
            return bool(takeover)

        wait_until(taken_over, "another controller to take over", LEASE_SECONDS * 3)
        write = takeover[0]
        new_leader = next((c for c in (follower, restarted) if c.owns(write.holder)), None)
        if new_leader is None:
            raise RuntimeError(f"the lease went to an unknown holder {write.holder!r}")
        gauge_at: float | None = None
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: new_leader.leader_gauge() == 1.0, "the leader gauge", 10.0)
            gauge_at = time.monotonic()
        self.results.failovers.append(
            Failover(
                killed_after_renewal=killed_at - renewal.at,
                takeover=write.at - killed_at,
                since_renewal=write.at - renewal.at,
                gauge=None if gauge_at is None else gauge_at - killed_at,
                new_leader_was_follower=new_leader is follower,
            )
        )
        restarted.wait_serving()
        return new_leader, (restarted if new_leader is follower else follower)

    # -- 3: memory with many PVs cached --

    def add_cached_pairs(self, count: int) -> None:
        """`count` bound PV/PVC pairs shaped exactly like part 1's (copies of one it provisioned and bound)."""
        pvc_rt, pv_rt = REGISTRY.resolve("persistentvolumeclaims"), REGISTRY.resolve("persistentvolumes")
        api = self.emulator.api

        def templates() -> tuple[dict[str, Any], dict[str, Any]]:
            pv = next(
                p
                for p in api.objects("persistentvolumes")
                if ((p.get("spec") or {}).get("claimRef") or {}).get("namespace") == NAMESPACE
            )
            pvc = api.lookup("persistentvolumeclaims", NAMESPACE, pv["spec"]["claimRef"]["name"])
            assert pvc is not None
            return copy.deepcopy(pvc), copy.deepcopy(pv)

        pvc_template, pv_template = self.emulator.call(templates)
        for obj in (pvc_template, pv_template):
            for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
                obj["metadata"].pop(key, None)

        def create(start: int, stop: int) -> None:
            for index in range(start, stop):
                name, pv_name = f"cached-{index:05d}", f"pvc-{uuid.uuid4()}"
                pvc = copy.deepcopy(pvc_template)
                pvc["metadata"].update(name=name, namespace=CACHED_NAMESPACE)
                pvc["spec"]["volumeName"] = pv_name
                uid = create_with_status(api, pvc_rt, CACHED_NAMESPACE, pvc)
                pv = copy.deepcopy(pv_template)
                pv["metadata"]["name"] = pv_name
                spec = pv["spec"]
                spec["claimRef"].update(namespace=CACHED_NAMESPACE, name=name, uid=uid)
                spec["claimRef"].pop("resourceVersion", None)
                spec["csi"]["volumeHandle"] = pv_name
                spec["csi"]["volumeAttributes"]["subPath"] = f"{CACHED_NAMESPACE}-{name}"
                create_with_status(api, pv_rt, "", pv)

        for start in range(0, count, CACHED_BATCH):
            self.emulator.call(partial(create, start, min(count, start + CACHED_BATCH)))

    def memory(self, leader: Controller, follower: Controller) -> None:
        m = self.results.memory
        m.idle_leader_rss_kib = proc_status_kib(leader.pid)
        for controller in (leader, follower):
            controller.stop()
        assert self.binder is not None
        self.binder.stop()
        self.binder = None
        existing = self.emulator.call(lambda: len(self.emulator.api.objects("persistentvolumes")))
        extra = max(0, self.cached_pvs - existing)
        print(f"adding {extra} bound PV/PVC pairs ({existing} PVs exist)")
        self.add_cached_pairs(extra)

        def sizes() -> tuple[int, int, float, float]:
            pvs = self.emulator.api.objects("persistentvolumes")
            pvcs = self.emulator.api.objects("persistentvolumeclaims")
            return (
                len(pvs),
                len(pvcs),
                sum(len(json.dumps(o)) for o in pvs) / max(len(pvs), 1),
                sum(len(json.dumps(o)) for o in pvcs) / max(len(pvcs), 1),
            )

        m.pvs, m.pvcs, m.pv_json_bytes, m.pvc_json_bytes = self.emulator.call(sizes)
        watches = self._watch_counts()
        started = time.monotonic()
        new_leader, new_follower = self.start_pair()

        def synced() -> bool:
            current = self._watch_counts()
            return all(current[k] > watches[k] for k in watches)

        wait_until(synced, "the leader to list and watch PVs and PVCs", WAIT_TIMEOUT, interval=0.02)
        m.start_to_synced = time.monotonic() - started
        synced_at = time.monotonic()
        m.leader_rss_synced_kib = proc_status_kib(new_leader.pid)
        samples: list[tuple[float, float]] = []

        def settled() -> bool:
            """CPU over the last window (from the newest sample at least a window old) is below the bar."""
            now, cpu = time.monotonic(), sum(new_leader.cpu_seconds())
            samples.append((now, cpu))
            old = [s for s in samples if s[0] <= now - SETTLE_WINDOW_SECONDS]
            return bool(old) and (cpu - old[-1][1]) / (now - old[-1][0]) < SETTLE_IDLE_CPU

        wait_until(settled, "the leader to settle", WAIT_TIMEOUT, interval=0.5)
        m.synced_to_settled = time.monotonic() - synced_at
        m.leader_rss_settled_kib = proc_status_kib(new_leader.pid)
        m.leader_hwm_kib = proc_status_kib(new_leader.pid, "VmHWM:")
        m.follower_rss_kib = proc_status_kib(new_follower.pid)
        print(f"  leader RSS {mib(m.leader_rss_settled_kib)} with {m.pvs} PVs and {m.pvcs} PVCs in the API")
        for controller in (new_leader, new_follower):
            controller.stop()  # the emulator's thread goes quiet for the in-process measurement below
        self.model_sizes()

    def model_sizes(self) -> None:
        """What one cached PV / PVC costs as a lightkube model, and what the managedFields a real API server
        adds to every object (the emulator keeps none) would cost on top, measured in this process."""

        def sample() -> list[list[dict[str, Any]]]:
            return [
                copy.deepcopy(self.emulator.api.objects(resource)[:MODEL_SAMPLE])
                for resource in ("persistentvolumes", "persistentvolumeclaims")
            ]

        pvs, pvcs = self.emulator.call(sample)
        m = self.results.memory
        for kind, objects, resource in (("PV", pvs, PersistentVolume), ("PVC", pvcs, PersistentVolumeClaim)):
            managed = [with_managed_fields(obj) for obj in objects]
            m.model_bytes[kind] = (decoded_bytes(objects, resource), decoded_bytes(managed, resource))
            m.managed_json_bytes[kind] = sum(len(json.dumps(o)) for o in managed) / len(managed)

    def _watch_counts(self) -> dict[tuple[str, str], int]:
        counts = self.emulator.request_counts()
        keys = [("watch", "persistentvolumes"), ("watch", "persistentvolumeclaims")]
        return {k: counts.get(k, 0) for k in keys}

    # -- all of it --

    def run(self) -> None:
        self.set_up()
        leader, follower = self.start_pair()
        print(f"{leader.name} leads, {follower.name} follows")
        self.provision(leader)
        print(f"{self.failover_rounds} failovers with a {LEASE_SECONDS:g} s lease")
        self.failover(leader, follower)
        leader = self.leader()
        follower = next(c for c in self.running() if c is not leader)
        self.memory(leader, follower)

    def close(self) -> None:
        """Undo everything, whatever state the run ended in."""
        for controller in self.controllers:
            with contextlib.suppress(Exception):
                controller.stop()
            controller.kill()
        if self.binder is not None:
            with contextlib.suppress(Exception):
                self.binder.stop()
        self.stack.close()
        cleanup(self.workdir)  # the controllers' juicefs clients (own sessions) and their mounts
        if self.volume_uuid:
            shutil.rmtree(Path("/var/jfsCache") / self.volume_uuid, ignore_errors=True)


# -- report ---------------------------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def report(
    bench: Bench, machine: Machine, loads: tuple[str, str], date: str, command: str
) -> tuple[str, dict[str, bool]]:
    r = bench.results
    p, m = r.provisioning, r.memory
    takeovers = [f.takeover for f in r.failovers]
    bound = LEASE_SECONDS + FAILOVER_SLACK_SECONDS
    settled_bytes = m.leader_rss_settled_kib * 1024
    met = {
        "provisioned": p.pvs == p.claims == p.distinct_claims_with_pv == len(p.latencies),
        "failover": bool(takeovers) and max(takeovers) <= bound and all(f.new_leader_was_follower for f in r.failovers),
        "rss": 0 < settled_bytes < RSS_TARGET_BYTES,
    }
    processes = (
        "the real `juicefs-csi --role controller --leader-election --leader-election-lease-duration 15s "
        "--provisioner` processes"
    )
    lines = [
        START_MARKER,
        "## Controller",
        "",
        f"Measured {date} with `{command}`: two controller replicas, {processes}, both with the production "
        f"{LEASE_SECONDS:g} s Lease (renew deadline 10 s, retry period 2 s), against the in-process Kubernetes API "
        "emulator (`tests/support/kube`, watch bookmarks every "
        f"{BOOKMARK_SECONDS:.0f} s). The emulator has no kube-controller-manager: the test PV binder "
        "(`tests/support/kube/pvbinder.py`) plays its part, on the emulator's loop: it hands each pending claim to "
        "the provisioner (`volume.kubernetes.io/storage-provisioner`) and binds claim and PV once the PV exists. "
        "One real JuiceFS volume for every claim: SQLite metadata and local `file` object storage under /tmp, "
        "formatted beforehand; the StorageClass names `csi.juicefs.com`, its Secret (no storage, so nothing is "
        f"formatted), reclaim policy Delete and `pathPattern: {PATH_PATTERN}`. Times are commit times read off "
        "the emulator's store by a listener (CLOCK_MONOTONIC, shared with the controller processes).",
        "",
        *machine.rows(loads),
        *machine.busy_note(
            loads[0],
            "CPU-bound steps are noisier than on an idle machine, but the throughput is held by the client's "
            "token bucket (see below), and failover times and memory are not affected.",
        ),
        "| Target | Measured | Met |",
        "|---|---|---|",
        f"| {p.claims} PVCs → {p.claims} PVs, one per claim, all Bound | {p.pvs} PVs for "
        f"{p.distinct_claims_with_pv} claims, {len(p.latencies)} Bound | {verdict(met['provisioned'])} |",
        f"| Failover after SIGKILL of the leader ≤ lease + {FAILOVER_SLACK_SECONDS:g} s = {bound:g} s "
        f"({len(takeovers)} failovers) | max {seconds(max(takeovers, default=0.0))} | {verdict(met['failover'])} |",
        f"| Controller RSS with {m.pvs} PVs and {m.pvcs} PVCs cached < 200 MB ({mib(RSS_TARGET_BYTES / 1024)}) "
        f"| {mib(m.leader_rss_settled_kib)} | {verdict(met['rss'])} |",
        f"| … the same objects with the managedFields a real API server keeps (projection, see Memory) "
        f"| {mib(projected_rss_kib(m))} | (not measured) |",
        "",
        *provisioning_lines(p, machine.cores),
        "### Failover",
        "",
        f"{len(r.failovers)} rounds: SIGKILL the leader (no lease release) at a random moment of its 2 s renewal "
        "cycle; the killed replica is restarted at once, as kubelet restarts a crashed container, and is the "
        "follower of the next round. Takeover is the commit of the other replica's Lease write naming itself "
        f"holder; the bound is lease + {FAILOVER_SLACK_SECONDS:g} s.",
        "",
        "| Measurement | Min | Median | p90 | Max |",
        "|---|---|---|---|---|",
        stats_row("SIGKILL → the other replica holds the Lease", takeovers),
        stats_row(
            "the killed leader's last renewal → takeover (the follower's observed expiry)",
            [f.since_renewal for f in r.failovers],
        ),
        stats_row(
            "last renewal → SIGKILL (where in the renewal cycle the kill fell)",
            [f.killed_after_renewal for f in r.failovers],
        ),
        stats_row(
            "SIGKILL → the new leader's `juicefs_leader` gauge reads 1 (metrics polled every 10 ms)",
            [f.gauge for f in r.failovers if f.gauge is not None],
        ),
        "",
        f"Every takeover, in order: {', '.join(f'{t:.2f}' for t in takeovers)} s. "
        f"New leader was the running follower (not the restarted replica) in "
        f"{sum(f.new_leader_was_follower for f in r.failovers)}/{len(r.failovers)} rounds.",
        "",
        *memory_lines(m, p),
        END_MARKER,
    ]
    return "\n".join(lines) + "\n", met


def provisioning_lines(p: Provisioning, cores: int) -> list[str]:
    rate = p.claims / p.wall_seconds if p.wall_seconds else 0.0
    writes = sum(n for (verb, _), n in p.requests.items() if verb in ("create", "update", "patch", "delete"))
    # The provisioner's own client carries the work; Events go out in the background on a client of their own.
    work = Counter({key: n for key, n in p.requests.items() if base_resource(key) not in ("leases", "events")})
    events = Counter({key: n for key, n in p.requests.items() if base_resource(key) == "events"})
    per_claim = sum(work.values()) / max(p.claims, 1)
    events_per_claim = sum(events.values()) / max(p.claims, 1)
    ceiling = DEFAULT_QPS / per_claim if per_claim else 0.0
    busy = (p.leader_cpu + p.juicefs_cpu + p.bench_cpu) / (p.wall_seconds * cores) if p.wall_seconds else 0.0
    if rate > 1.1 * ceiling:
        versus = f"is above it: the bucket's burst of {DEFAULT_BURST} requests covers much of so short a run"
    else:
        versus = "is at that ceiling" if rate >= 0.9 * ceiling else "is below that ceiling"
    waves = (
        " The workers share that bucket in FIFO order, so every claim in flight waits for the requests of all the "
        f"others: claims complete in waves of up to {DEFAULT_WORKERS} (the workers), and the median claim waits "
        "about half of the whole run."
        if p.claims > DEFAULT_WORKERS
        else ""
    )
    return [
        "### Provisioning throughput",
        "",
        f"{p.claims} PVCs created at once (one call on the emulator's loop commits all of them before the "
        f"first watch event is sent), while the leader runs with the production client settings (`KUBE_QPS` "
        f"{DEFAULT_QPS:g}, `KUBE_BURST` {DEFAULT_BURST}, `PROVISION_WORKER_THREADS` {DEFAULT_WORKERS}). Latency is "
        "from the claim's creation to its `status.phase: Bound`.",
        "",
        "| Measurement | Value |",
        "|---|---|",
        f"| First PVC created → last PVC Bound | {seconds(p.wall_seconds)} |",
        f"| Throughput | {rate:.1f} PVCs/s |",
        f"| Latency, creation → Bound: p50 / p90 / max | {seconds(median(p.latencies))} / "
        f"{seconds(p90(p.latencies))} / {seconds(max(p.latencies, default=0.0))} |",
        f"| … created → handed to the provisioner by the PV binder (median) | {seconds(median(p.to_handed_over))} |",
        f"| … handed over → PV created by the provisioner (median / p90) | {seconds(median(p.to_pv))} / "
        f"{seconds(p90(p.to_pv))} |",
        f"| … PV created → claim Bound by the PV binder (median) | {seconds(median(p.to_bound))} |",
        f"| API requests of both controllers in the window: all / writes, per PVC | "
        f"{sum(p.requests.values()) / max(p.claims, 1):.2f} / {writes / max(p.claims, 1):.2f} |",
        f"| … by verb and resource | {request_mix(p.requests)} |",
        f"| CPU in the window: leader / its `juicefs` commands / emulator + binder + benchmark | "
        f"{seconds(p.leader_cpu)} / {seconds(p.juicefs_cpu)} / {seconds(p.bench_cpu)} |",
        f"| Leader RSS after provisioning | {mib(p.leader_rss_kib)} |",
        "",
        f"Without the Lease traffic the provisioner sends {per_claim:.2f} requests per claim "
        f"({request_mix(work, p.claims)} per claim) through its client, whose token bucket passes {DEFAULT_QPS:g} "
        f"requests/s: at most {ceiling:.1f} PVCs/s. Its Events go out in the background through another client "
        f"with a bucket of its own ({events_per_claim:.2f} per claim landed within the window; the rest follow "
        f"later and never delay a claim). The measured {rate:.1f} PVCs/s {versus}, "
        f"while the CPU used in the window adds up to {busy:.0%} of the machine's {cores} cores.{waves}",
        "",
    ]


def projected_rss_kib(m: Memory) -> float:
    """The settled leader plus what the managedFields of a real API server would add to its cached models
    (little: the informers drop them)."""
    if not m.model_bytes:
        return 0.0
    extra = m.pvs * (m.model_bytes["PV"][1] - m.model_bytes["PV"][0])
    extra += m.pvcs * (m.model_bytes["PVC"][1] - m.model_bytes["PVC"][0])
    return m.leader_rss_settled_kib + extra / 1024


def memory_lines(m: Memory, p: Provisioning) -> list[str]:
    models = m.pvs * m.model_bytes.get("PV", (0.0, 0.0))[0] + m.pvcs * m.model_bytes.get("PVC", (0.0, 0.0))[0]
    growth_kib = m.leader_rss_settled_kib - m.follower_rss_kib
    lines = [
        "### Memory",
        "",
        f"Both replicas stopped (SIGTERM), then {m.pvs - p.pvs} more bound PV/PVC pairs added to part 1's, as "
        "copies of a PV the provisioner made and its bound claim (new names, uids, sub-paths); then two fresh "
        "replicas. VmRSS and VmHWM from /proc, no forced GC.",
        "",
        "| Controller | VmRSS |",
        "|---|---|",
        f"| Leader with part 1's {p.claims} PVs and PVCs, before the others were added | "
        f"{mib(m.idle_leader_rss_kib)} |",
        f"| Fresh leader, its PV and PVC informers synced ({seconds(m.start_to_synced)} after the start) | "
        f"{mib(m.leader_rss_synced_kib)} |",
        f"| … settled: every object handled, below {SETTLE_IDLE_CPU:.0%} CPU for {SETTLE_WINDOW_SECONDS:g} s "
        f"({seconds(m.synced_to_settled)} later) | {mib(m.leader_rss_settled_kib)} |",
        f"| … peak (VmHWM) | {mib(m.leader_hwm_kib)} |",
        f"| Follower (campaigns, no provisioner caches) | {mib(m.follower_rss_kib)} |",
        "",
    ]
    if not m.model_bytes:
        return lines
    pv, pvc = m.model_bytes["PV"], m.model_bytes["PVC"]
    return [
        *lines,
        "What the caches hold: the informers keep every PV and PVC as a decoded lightkube model. The benchmark "
        f"decodes {MODEL_SAMPLE} of each from the emulator the way a LIST response is decoded and counts what stays "
        "allocated (tracemalloc), once as the emulator serves them and once with the two `managedFields` entries a "
        "real API server records for such objects (the creator's and kube-controller-manager's status update; the "
        "emulator keeps none). The informers drop managedFields before caching, as controller-runtime does, so "
        "they cost only while a response is decoded.",
        "",
        "| Object | JSON | Cached model | JSON with managedFields | Cached model, served with managedFields |",
        "|---|---|---|---|---|",
        f"| PV | {m.pv_json_bytes / 1024:.1f} KiB | {pv[0] / 1024:.1f} KiB | "
        f"{m.managed_json_bytes['PV'] / 1024:.1f} KiB | {pv[1] / 1024:.1f} KiB |",
        f"| PVC | {m.pvc_json_bytes / 1024:.1f} KiB | {pvc[0] / 1024:.1f} KiB | "
        f"{m.managed_json_bytes['PVC'] / 1024:.1f} KiB | {pvc[1] / 1024:.1f} KiB |",
        "",
        f"The {m.pvs} PVs and {m.pvcs} PVCs take {mib(models / 1024)} as models, most of the leader's "
        f"{mib(growth_kib)} above the follower (the rest is not broken down here). With "
        f"managedFields they would take {mib((m.pvs * pv[1] + m.pvcs * pvc[1]) / 1024)}, and the leader about "
        f"{mib(projected_rss_kib(m))}.",
    ]


def stats_row(label: str, values: list[float]) -> str:
    if not values:
        return f"| {label} | — | — | — | — |"
    return (
        f"| {label} | {seconds(min(values))} | {seconds(median(values))} | {seconds(percentile(values, 0.9))} "
        f"| {seconds(max(values))} |"
    )


def base_resource(key: tuple[str, str]) -> str:
    """`leases.coordination.k8s.io` → `leases`: the emulator counts resources with their API group."""
    return key[1].split(".")[0]


def request_mix(requests: Counter[tuple[str, str]], per: int = 1) -> str:
    def count(n: int) -> str:
        return str(n) if per == 1 else f"{n / per:.2f}"

    return ", ".join(f"{key[0]} {base_resource(key)} {count(n)}" for key, n in requests.most_common())


# -- entry point -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller", description=__doc__.splitlines()[0])
    parser.add_argument("--pvcs", type=int, default=500, help="PVCs created at once (default 500)")
    parser.add_argument("--failovers", type=int, default=20, help="leader kills (default 20)")
    parser.add_argument("--cached-pvs", type=int, default=10_000, help="PVs (and PVCs) for the memory part (10000)")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.pvcs < 1 or args.failovers < 0 or args.cached_pvs < args.pvcs:
        parser.error("--pvcs must be positive, --failovers not negative, --cached-pvs at least --pvcs")
    if os.geteuid() != 0:
        print("the controller mounts the volume's root with FUSE: run the benchmark as root", file=sys.stderr)
        return 1
    if not cli_has_controller_flags():
        print(f"{DRIVER_BIN} has no --provisioner / --leader-election-lease-duration flags", file=sys.stderr)
        return 1

    machine = Machine.describe()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    start_load = load_average()
    command = "python -m bench.controller " + " ".join(
        [f"--pvcs {args.pvcs}", f"--failovers {args.failovers}", f"--cached-pvs {args.cached_pvs}"]
        + (["--write-docs"] if args.write_docs else [])
    )
    workdir = Path(tempfile.mkdtemp(prefix="jfs-"))  # short: the controllers' unix sockets live below it
    bench = Bench(workdir, args.pvcs, args.failovers, args.cached_pvs)
    started = time.monotonic()
    with terminate_as_interrupt():
        try:
            bench.run()
        except BaseException:
            for controller in bench.controllers[-2:]:
                print(f"{controller.name} log tail:\n{controller.log_tail()}", file=sys.stderr)
            raise
        finally:
            bench.close()
            left = mounts_under(workdir)
            leftovers = [pid for pid, cmd in juicefs_processes() if any(str(workdir) in a for a in cmd)]
            if not left and not leftovers:
                shutil.rmtree(workdir, ignore_errors=True)
    section, met = report(bench, machine, (start_load, load_average()), date, command)
    print()
    print(section)
    print(f"run took {time.monotonic() - started:.0f} s")
    if args.write_docs:
        write_docs(section, START_MARKER, END_MARKER)
        print("wrote docs/benchmarks.md")
    if left or leftovers:
        print(f"left behind: mounts {left}, juicefs processes {leftovers}", file=sys.stderr)
        return 1
    return 0 if all(met.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
