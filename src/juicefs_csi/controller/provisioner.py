"""The in-process provisioner (`--provisioner`): PVC → sub-directory + PV, and back, without csi-provisioner.

It follows the contracts of external-provisioner and external-resizer, so the rest of Kubernetes
(kube-controller-manager's PV controller, kubectl, dashboards) sees what it would see with the sidecars:

- A claim is provisioned once kube-controller-manager has annotated it with
  `volume.kubernetes.io/storage-provisioner: <driver>` (or the beta key), its StorageClass names the
  driver, it has no volume yet, and, for `WaitForFirstConsumer`, the scheduler has chosen a node.
- The PV is named `pvc-<claim uid>`. Creating it is the commit point and is idempotent by name: a
  409 is accepted only if the existing PV was made by this driver for this claim, so restarts and
  two instances at once never make a second PV. The directory is made first, and making it again
  is harmless, so a crash in between leaves a directory the next attempt reuses.
- Binding stays kube-controller-manager's job; a `Released` PV with reclaim policy `Delete` is
  deleted here (sub-directory first, unless another PV still uses it), and a claim whose request
  grows past its PV is expanded (quota, PV capacity, claim status) as external-resizer does.

Work is keyed by object, like client-go's workqueue: a key is processed by one worker at a time,
failures are retried with exponential backoff, and informers (not repeated LISTs) feed the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import httpx2 as httpx
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import ObjectReference
from lightkube.resources.core_v1 import Node, PersistentVolume, PersistentVolumeClaim
from lightkube.resources.storage_v1 import StorageClass
from lightkube.types import PatchType

from juicefs_csi import DRIVER_NAME
from juicefs_csi.controller.pathpattern import NodeFacts, uses_node
from juicefs_csi.controller.pvspec import (
    ANN_BETA_STORAGE_PROVISIONER,
    ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER,
    FINALIZER,
    RECLAIM_DELETE,
    WAIT_FOR_FIRST_CONSUMER,
    SecretRef,
    belongs_to_claim,
    build_pv,
    claim_class,
    claim_facts,
    deletion_secret,
    expansion_secret,
    is_ours,
    plan_provision,
    pv_directory,
    pv_name_for,
    quantity_bytes,
)
from juicefs_csi.errors import DriverError, InvalidArgument
from juicefs_csi.kube.election import LeadershipLost
from juicefs_csi.kube.events import NORMAL, WARNING, EventRecorder, Recorder
from juicefs_csi.kube.informer import Event as Change
from juicefs_csi.kube.informer import Informer
from juicefs_csi.kube.secret_reader import SecretReader
from juicefs_csi.locks import KeyedLocks
from juicefs_csi.volume.secrets import parse_credentials, redact

log = logging.getLogger("juicefs_csi.provisioner")

DEFAULT_WORKERS = 100
WORKERS_ENV = "PROVISION_WORKER_THREADS"
COMPONENT = "juicefs-csi-provisioner"
RESYNC_SECONDS = 900.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
STOP_GRACE_SECONDS = 10.0
# Secret keys whose values are not credentials, so they may stay readable in Events.
PUBLIC_SECRET_KEYS = frozenset(
    {"name", "metaurl", "storage", "bucket", "block-size", "compress", "trash-days", "capacity", "inodes", "shards"}
)

PHASE_PENDING, PHASE_BOUND, PHASE_RELEASED, PHASE_FAILED = "Pending", "Bound", "Released", "Failed"


class WatchableStorageClass(StorageClass):
    """StorageClass with `provisioner` optional, so watch BOOKMARK events decode.

    A bookmark carries only `metadata.resourceVersion`; decoded as the strict model (whose
    `provisioner` is required) it raises and ends the informer's watch task.
    """

    provisioner: str | None = None  # type: ignore[assignment]


class Files(Protocol):
    """What the provisioner needs of `VolumeFiles`."""

    async def create(self, secrets: Mapping[str, str], sub_path: str, capacity_bytes: int) -> None: ...

    async def remove(self, secrets: Mapping[str, str], sub_path: str) -> None: ...

    async def resize(self, secrets: Mapping[str, str], sub_path: str, capacity_bytes: int) -> None: ...


def workers_from_env(environ: Mapping[str, str] | None = None) -> int:
    """`PROVISION_WORKER_THREADS`, as the Go driver's Helm chart sets it (default 100)."""
    env = os.environ if environ is None else environ
    raw = (env.get(WORKERS_ENV) or "").strip()
    if not raw:
        return DEFAULT_WORKERS
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {raw[:16]!r}")
    return int(raw)


def reference(obj: PersistentVolumeClaim | PersistentVolume) -> ObjectReference:
    meta = obj.metadata
    assert meta is not None
    kind = "PersistentVolumeClaim" if isinstance(obj, PersistentVolumeClaim) else "PersistentVolume"
    return ObjectReference(
        apiVersion="v1",
        kind=kind,
        name=meta.name,
        namespace=meta.namespace,
        uid=meta.uid,
        resourceVersion=meta.resourceVersion,
    )


# --- work queue -----------------------------------------------------------------------------------


class Key(NamedTuple):
    kind: str  # "claim" or "volume"
    namespace: str
    name: str


CLAIM, VOLUME = "claim", "volume"


class WorkQueue:
    """client-go's workqueue: a key waits once however often it is added, is handled by one worker at
    a time, and a key added while being handled is handled again afterwards."""

    def __init__(self, backoff_base: float, backoff_max: float) -> None:
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._queue: collections.deque[Key] = collections.deque()
        self._available = asyncio.Semaphore(0)
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutdown = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Key) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        self._idle.clear()
        if key not in self._processing:
            self._queue.append(key)
            self._available.release()

    def add_rate_limited(self, key: Key) -> float:
        """Retry after base * 2^failures seconds (capped), unless the key is added again sooner."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self.backoff_max, self.backoff_base * float(1 << min(failures, 32)))
        if key not in self._timers and not self._shutdown:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)
        return delay

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)

    async def get(self) -> Key | None:
        """The next key, or None once shut down."""
        await self._available.acquire()
        if self._shutdown:
            self._available.release()  # wake the next waiting worker, so all of them end
            return None
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._available.release()
        elif not self._queue and not self._processing:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until nothing is queued or being handled (retries waiting for their backoff do not count)."""
        await self._idle.wait()

    def shutdown(self) -> None:
        self._shutdown = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._available.release()


# --- the provisioner ------------------------------------------------------------------------------


class _Refused(Exception):
    """A failure that retrying cannot fix; reported once, retried only when the object changes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Provisioner:
    """Provision, delete and expand this driver's volumes from PVCs, StorageClasses and PVs.

    `run()` serves until `stop()`; leader election, if any, decides when to call them.
    """

    def __init__(
        self,
        client: AsyncClient,
        files: Files,
        driver_name: str = DRIVER_NAME,
        workers: int = DEFAULT_WORKERS,
        recorder: Recorder | None = None,
        *,
        resync_seconds: float = RESYNC_SECONDS,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        fence: Callable[[], None] | None = None,
    ) -> None:
        if workers <= 0:
            raise ValueError("the provisioner needs at least one worker")
        self.client = client
        self.files = files
        self.driver = driver_name
        self.workers = workers
        self.record: Recorder = recorder or EventRecorder(client, COMPONENT)
        self.secrets = SecretReader(client)
        self.resync_seconds = resync_seconds
        # Called right before every irreversible step; leader election passes `elector.check`, which
        # raises LeadershipLost once this replica may no longer act (even if its cancellation is late).
        self.fence: Callable[[], None] = fence or _no_fence
        self.claims: Informer[PersistentVolumeClaim] = Informer(client, PersistentVolumeClaim, name="provisioner-pvc")
        self.volumes: Informer[PersistentVolume] = Informer(client, PersistentVolume, name="provisioner-pv")
        self.classes: Informer[StorageClass] = Informer(client, WatchableStorageClass, name="provisioner-sc")
        self.queue = WorkQueue(backoff_base, backoff_max)
        self.ready = asyncio.Event()
        self._created: dict[str, PersistentVolume] = {}
        self._deleted: set[str] = set()
        self._directory_locks: KeyedLocks[tuple[str, ...]] = KeyedLocks()
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._grace = STOP_GRACE_SECONDS
        self._running = False
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(self._on_volume)
        self.classes.add_handler(self._on_class)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `stop()` (or cancellation); in-flight work gets `stop`'s grace to finish.

        May be called again after it returned (a new leadership term): caches are kept, work is
        found again from them.
        """
        if self._running:
            raise RuntimeError("the provisioner is already running")
        self._running = True
        self._stop.clear()
        self._done.clear()
        self.ready.clear()
        self.queue = WorkQueue(self.queue.backoff_base, self.queue.backoff_max)
        tasks: list[asyncio.Task[None]] = []
        informers = (self.classes, self.volumes, self.claims)
        try:
            for informer in informers:
                informer.start()
            tasks = [asyncio.create_task(self._wait_synced(informers)), asyncio.create_task(self._wait_stop())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.is_set():
                self._enqueue_all()  # a later run's relist reports only changes: look at everything
                tasks += [
                    asyncio.create_task(self._worker(), name=f"provisioner-worker-{n}") for n in range(self.workers)
                ]
                tasks.append(asyncio.create_task(self._resync(), name="provisioner-resync"))
                self.ready.set()
                log.info("provisioner started", extra={"driver": self.driver, "workers": self.workers})
                await self._stop.wait()
                self.queue.shutdown()
                workers = [t for t in tasks if t.get_name().startswith("provisioner-worker-")]
                if workers:
                    await asyncio.wait(workers, timeout=self._grace)
        finally:
            try:
                self.queue.shutdown()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for informer in informers:
                    try:
                        await informer.stop()
                    except Exception:  # a watch task that died must not keep stop() waiting
                        log.exception("informer ended with an error", extra={"informer": informer.name})
            finally:
                self._running = False
                self._done.set()
                log.info("provisioner stopped", extra={"driver": self.driver})

    @staticmethod
    async def _wait_synced(informers: tuple[Informer[Any], ...]) -> None:
        await asyncio.gather(*(informer.wait_synced() for informer in informers))

    async def _wait_stop(self) -> None:
        await self._stop.wait()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """End the current `run()`: no new work; in-flight work may finish within `grace` seconds."""
        self._grace = grace
        self._stop.set()
        if self._running:
            await self._done.wait()

    async def wait_idle(self) -> None:
        """Until everything queued so far was handled (for tests and orderly hand-over)."""
        await self.ready.wait()
        await self.queue.wait_idle()

    # -- informer handlers (must not block) --------------------------------------------------------

    def _on_claim(self, change: Change, pvc: PersistentVolumeClaim) -> None:
        key = Key(CLAIM, pvc.metadata.namespace or "", pvc.metadata.name or "") if pvc.metadata else None
        if key is None:
            return
        if change is Change.DELETED:
            self.queue.forget(key)
        else:
            self.queue.add(key)

    def _on_volume(self, change: Change, pv: PersistentVolume) -> None:
        meta = pv.metadata
        if meta is None or not meta.name:
            return
        self._created.pop(meta.name, None)
        if change is Change.DELETED:
            self._deleted.discard(meta.uid or "")
            self.queue.forget(Key(VOLUME, "", meta.name))
            return
        self.queue.add(Key(VOLUME, "", meta.name))
        ref = pv.spec.claimRef if pv.spec is not None else None
        if ref is not None and ref.name:
            self.queue.add(Key(CLAIM, ref.namespace or "", ref.name))

    def _on_class(self, change: Change, sc: StorageClass) -> None:
        name = sc.metadata.name if sc.metadata else None
        for pvc in self.claims.items():
            if pvc.metadata is not None and claim_class(pvc) == name:
                self.queue.add(Key(CLAIM, pvc.metadata.namespace or "", pvc.metadata.name or ""))

    async def _resync(self) -> None:
        """What informer resync gives client-go controllers: missed or stuck work is looked at again."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            self._enqueue_all()

    def _enqueue_all(self) -> None:
        for pvc in self.claims.items():
            self._on_claim(Change.MODIFIED, pvc)
        for pv in self.volumes.items():
            self._on_volume(Change.MODIFIED, pv)

    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            retry = True
            try:
                retry = await (self._sync_claim(key) if key.kind == CLAIM else self._sync_volume(key))
            except LeadershipLost:
                log.info("stopped work: no longer the leader", extra={"key": "/".join(key)})
                retry = False
            except Exception:
                log.exception("provisioner work failed", extra={"key": "/".join(key)})
            finally:
                self.queue.done(key)
            if retry:
                delay = self.queue.add_rate_limited(key)
                log.debug("retrying", extra={"key": "/".join(key), "after_seconds": delay})
            else:
                self.queue.forget(key)

    # -- provisioning ------------------------------------------------------------------------------

    async def _sync_claim(self, key: Key) -> bool:
        """Returns whether to retry with backoff."""
        pvc = self.claims.get(key.name, key.namespace)
        if pvc is None or pvc.metadata is None or pvc.spec is None:
            return False
        if pvc.spec.volumeName:
            return await self._sync_expansion(pvc)
        sc = self._class_to_provision(pvc)
        if sc is None:
            return False
        return await self._provision(pvc, sc)

    def _class_to_provision(self, pvc: PersistentVolumeClaim) -> StorageClass | None:
        """external-provisioner's shouldProvision: the claim waits for us, and its class is ours."""
        meta, status = pvc.metadata, pvc.status
        assert meta is not None
        if meta.deletionTimestamp is not None:
            return None
        if status is not None and status.phase not in (None, PHASE_PENDING):
            return None
        annotations = meta.annotations or {}
        wanted = annotations.get(ANN_STORAGE_PROVISIONER) or annotations.get(ANN_BETA_STORAGE_PROVISIONER)
        if wanted != self.driver:
            return None
        sc = self.classes.get(claim_class(pvc))
        if sc is None or sc.provisioner != self.driver:
            return None
        if sc.volumeBindingMode == WAIT_FOR_FIRST_CONSUMER and not annotations.get(ANN_SELECTED_NODE):
            return None
        return sc

    async def _provision(self, pvc: PersistentVolumeClaim, sc: StorageClass) -> bool:
        meta = pvc.metadata
        assert meta is not None and meta.uid
        pv_name = pv_name_for(meta.uid)
        sc_name = (sc.metadata.name if sc.metadata else None) or ""
        existing = self.volumes.get(pv_name) or self._created.get(pv_name)
        if existing is not None:
            if belongs_to_claim(existing, self.driver, meta.uid):
                return False
            await self._claim_failed(pvc, sc_name, f"PersistentVolume {pv_name} already exists and is not this claim's")
            return False
        secrets: Mapping[str, str] = {}
        try:
            node = await self._selected_node(pvc, sc)
            try:
                plan = plan_provision(pvc, sc, claim_facts(pvc, node))
            except InvalidArgument as exc:
                raise _Refused(exc.message) from None
            await self.record(
                reference(pvc),
                NORMAL,
                "Provisioning",
                f'External provisioner is provisioning volume for claim "{meta.namespace}/{meta.name}"',
            )
            secrets = await self._read_secret(plan.provisioner_secret, "provisioner")
            credentials = parse_credentials(secrets)
            async with self._directory_locks.hold(
                (credentials.name, credentials.meta.url_without_password, plan.directory)
            ):
                self.fence()
                await self.files.create(secrets, plan.directory, plan.capacity_bytes)
                created = await self._create_pv(build_pv(self.driver, pvc, sc, plan), meta.uid)
                self._created[pv_name] = created
        except _Refused as exc:
            await self._claim_failed(pvc, sc_name, exc.message, secrets)
            return False
        except (DriverError, ApiError, httpx.HTTPError, OSError) as exc:
            await self._claim_failed(pvc, sc_name, _describe(exc), secrets)
            return True
        log.info(
            "volume provisioned",
            extra={
                "pvc": f"{meta.namespace}/{meta.name}",
                "pv": pv_name,
                "sub_path": plan.sub_path,
                "capacity": plan.capacity,
            },
        )
        await self.record(reference(pvc), NORMAL, "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name}")
        return False

    async def _selected_node(self, pvc: PersistentVolumeClaim, sc: StorageClass) -> NodeFacts | None:
        """The Node is read only when a template needs it."""
        texts = [*(sc.parameters or {}).values(), *(sc.mountOptions or [])]
        if not any(uses_node(text) for text in texts):
            return None
        name = ((pvc.metadata.annotations if pvc.metadata else None) or {}).get(ANN_SELECTED_NODE)
        if not name:
            return None  # the template expansion names what is missing
        node = await self.client.get(Node, name)
        meta = node.metadata
        return NodeFacts(
            name=name,
            pod_cidr=(node.spec.podCIDR if node.spec else None) or "",
            labels=dict((meta.labels if meta else None) or {}),
            annotations=dict((meta.annotations if meta else None) or {}),
        )

    async def _create_pv(self, pv: PersistentVolume, claim_uid: str) -> PersistentVolume:
        """The commit point. A name collision is success only if the PV is ours for this claim."""
        assert pv.metadata is not None and pv.metadata.name
        try:
            self.fence()
            return await self.client.create(pv)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        existing = await self.client.get(PersistentVolume, pv.metadata.name)
        if belongs_to_claim(existing, self.driver, claim_uid):
            return existing
        raise _Refused(f"PersistentVolume {pv.metadata.name} already exists and is not this claim's")

    async def _claim_failed(
        self, pvc: PersistentVolumeClaim, sc_name: str, message: str, secrets: Mapping[str, str] | None = None
    ) -> None:
        message = _scrub(message, secrets or {})
        meta = pvc.metadata
        assert meta is not None
        log.warning("provisioning failed", extra={"pvc": f"{meta.namespace}/{meta.name}", "error": message})
        await self.record(
            reference(pvc),
            WARNING,
            "ProvisioningFailed",
            f'failed to provision volume with StorageClass "{sc_name}": {message}',
        )

    # -- deletion ----------------------------------------------------------------------------------

    def _should_delete(self, pv: PersistentVolume) -> bool:
        """external-provisioner's shouldDelete: ours, Released, reclaim policy Delete, not already gone."""
        meta, spec = pv.metadata, pv.spec
        if meta is None or spec is None or not is_ours(pv, self.driver):
            return False
        if spec.csi is None or spec.csi.driver != self.driver or (meta.uid or "") in self._deleted:
            return False
        if meta.deletionTimestamp is not None and FINALIZER not in (meta.finalizers or []):
            return False
        phase = pv.status.phase if pv.status is not None else None
        return phase == PHASE_RELEASED and spec.persistentVolumeReclaimPolicy == RECLAIM_DELETE

    async def _sync_volume(self, key: Key) -> bool:
        pv = self.volumes.get(key.name)
        if pv is None or not self._should_delete(pv):
            return False
        assert pv.metadata is not None
        secrets: Mapping[str, str] = {}
        try:
            try:
                directory = pv_directory(pv)
            except InvalidArgument as exc:
                raise _Refused(f"refusing to delete the volume's data: {exc.message}") from None
            ref = deletion_secret(pv)
            if ref is None:
                raise _Refused(
                    "the PV names no Secret to delete its directory with "
                    "(provisioner-deletion-secret annotations or nodePublishSecretRef)"
                )
            secrets = await self._read_secret(ref, "provisioner")
            credentials = parse_credentials(secrets)
            identity = (credentials.name, credentials.meta.url_without_password)
            async with self._directory_locks.hold((*identity, directory)):
                holders = await self._holders(pv, directory, ref, identity)
                if holders:
                    log.info(
                        "kept a directory other volumes use",
                        extra={"pv": pv.metadata.name, "directory": directory, "used_by": ", ".join(sorted(holders))},
                    )
                else:
                    self.fence()
                    await self.files.remove(secrets, directory)
            await self._delete_pv(pv)
        except _Refused as exc:
            await self._volume_failed(pv, exc.message, secrets)
            return False
        except (DriverError, ApiError, httpx.HTTPError, OSError) as exc:
            await self._volume_failed(pv, _describe(exc), secrets)
            return True
        self._deleted.add(pv.metadata.uid or "")
        log.info("volume deleted", extra={"pv": pv.metadata.name, "directory": directory, "kept": bool(holders)})
        return False

    async def _holders(
        self, pv: PersistentVolume, directory: str, ref: SecretRef, identity: tuple[str, str]
    ) -> list[str]:
        """Other PVs of this driver whose directory is this one or inside it, on the same file system.

        When in doubt (a Secret that cannot be read) a PV counts as a holder: keeping data is the
        mistake that can be undone.
        """
        assert pv.metadata is not None
        candidates = {p.metadata.name or "": p for p in self.volumes.items() if p.metadata is not None}
        for created_name, created in self._created.items():
            candidates.setdefault(created_name, created)
        holders: list[str] = []
        for name, other in candidates.items():
            if name == pv.metadata.name or not self._holds_directory(other):
                continue
            try:
                other_directory = pv_directory(other)
            except InvalidArgument:
                continue
            if other_directory != directory and not other_directory.startswith(directory + "/"):
                continue
            other_ref = deletion_secret(other)
            if other_ref is None or other_ref == ref:
                holders.append(name)
                continue
            try:
                other_credentials = parse_credentials(await self._read_secret(other_ref, "volume"))
            except (DriverError, ApiError, httpx.HTTPError, OSError):
                holders.append(name)
                continue
            if (other_credentials.name, other_credentials.meta.url_without_password) == identity:
                holders.append(name)
        return holders

    def _holds_directory(self, pv: PersistentVolume) -> bool:
        """Live PVs hold their directory; a Released or Failed one with reclaim policy Delete does not."""
        meta, spec = pv.metadata, pv.spec
        if meta is None or spec is None or spec.csi is None or spec.csi.driver != self.driver:
            return False
        if meta.deletionTimestamp is not None:
            return False
        phase = pv.status.phase if pv.status is not None else None
        return not (phase in (PHASE_RELEASED, PHASE_FAILED) and spec.persistentVolumeReclaimPolicy == RECLAIM_DELETE)

    async def _delete_pv(self, pv: PersistentVolume) -> None:
        """Delete, then drop our finalizer (external-provisioner's order); both tolerate a repeat."""
        assert pv.metadata is not None and pv.metadata.name
        name = pv.metadata.name
        try:
            self.fence()
            await self.client.delete(PersistentVolume, name)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            return
        if FINALIZER not in (pv.metadata.finalizers or []):
            return
        try:
            current = await self.client.get(PersistentVolume, name)
        except ApiError as exc:
            if exc.status.code == 404:
                return
            raise
        meta = current.metadata
        if meta is None or meta.uid != pv.metadata.uid or FINALIZER not in (meta.finalizers or []):
            return
        remaining = [f for f in meta.finalizers or [] if f != FINALIZER]
        patch = {"metadata": {"finalizers": remaining or None, "resourceVersion": meta.resourceVersion}}
        try:
            await self.client.patch(PersistentVolume, name, patch, patch_type=PatchType.MERGE)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def _volume_failed(self, pv: PersistentVolume, message: str, secrets: Mapping[str, str]) -> None:
        message = _scrub(message, secrets)
        log.warning("volume deletion failed", extra={"pv": pv.metadata.name if pv.metadata else "", "error": message})
        await self.record(reference(pv), WARNING, "VolumeFailedDelete", message)

    # -- expansion -----------------------------------------------------------------------------------

    async def _sync_expansion(self, pvc: PersistentVolumeClaim) -> bool:
        """external-resizer for a controller-only volume: quota, PV capacity, then the claim's status."""
        meta, spec, status = pvc.metadata, pvc.spec, pvc.status
        assert meta is not None and spec is not None
        if status is None or status.phase != PHASE_BOUND or not spec.volumeName:
            return False
        pv = self.volumes.get(spec.volumeName)
        if pv is None or pv.spec is None or pv.spec.csi is None or pv.spec.csi.driver != self.driver:
            return False
        if pv.spec.claimRef is None or pv.spec.claimRef.uid != meta.uid:
            return False
        request = ((spec.resources.requests if spec.resources else None) or {}).get("storage")
        capacity = (pv.spec.capacity or {}).get("storage")
        try:
            wanted, current = quantity_bytes(request, "request"), quantity_bytes(capacity, "PV capacity")
        except InvalidArgument:
            return False
        if wanted <= current:
            reported = (status.capacity or {}).get("storage")
            if reported is not None and _bytes_or(reported, current) < current:
                await self._finish_resize(pvc, str(capacity))  # an expansion interrupted after the PV update
            return False
        sc_name = pv.spec.storageClassName or claim_class(pvc)
        sc = self.classes.get(sc_name)
        secrets: Mapping[str, str] = {}
        try:
            if sc is None or not sc.allowVolumeExpansion:
                raise _Refused(f"StorageClass {sc_name!r} does not allow volume expansion (allowVolumeExpansion)")
            try:
                directory = pv_directory(pv)
            except InvalidArgument as exc:
                raise _Refused(exc.message) from None
            ref = expansion_secret(pv)
            if ref is None:
                raise _Refused(f"PV {spec.volumeName} has no controllerExpandSecretRef")
            await self.record(
                reference(pvc), NORMAL, "Resizing", f"External resizer is resizing volume {spec.volumeName}"
            )
            await self.client.patch(
                PersistentVolumeClaim.Status,
                meta.name or "",
                {"status": {"conditions": [{"type": "Resizing", "status": "True", "lastTransitionTime": _now()}]}},
                namespace=meta.namespace,
                patch_type=PatchType.MERGE,
            )
            secrets = await self._read_secret(ref, "controller-expand")
            self.fence()
            await self.files.resize(secrets, directory, wanted)
            await self.client.patch(
                PersistentVolume,
                spec.volumeName,
                {"spec": {"capacity": {"storage": request}}},
                patch_type=PatchType.MERGE,
            )
            await self._finish_resize(pvc, str(request))
        except _Refused as exc:
            await self._resize_failed(pvc, exc.message, secrets)
            return False
        except (DriverError, ApiError, httpx.HTTPError, OSError) as exc:
            await self._resize_failed(pvc, _describe(exc), secrets)
            return True
        log.info("volume expanded", extra={"pvc": f"{meta.namespace}/{meta.name}", "capacity": request})
        await self.record(reference(pvc), NORMAL, "VolumeResizeSuccessful", "Resize volume succeeded")
        return False

    async def _finish_resize(self, pvc: PersistentVolumeClaim, capacity: str) -> None:
        assert pvc.metadata is not None
        await self.client.patch(
            PersistentVolumeClaim.Status,
            pvc.metadata.name or "",
            {"status": {"capacity": {"storage": capacity}, "conditions": None}},
            namespace=pvc.metadata.namespace,
            patch_type=PatchType.MERGE,
        )

    async def _resize_failed(self, pvc: PersistentVolumeClaim, message: str, secrets: Mapping[str, str]) -> None:
        message = _scrub(message, secrets)
        log.warning("expansion failed", extra={"pvc": pvc.metadata.name if pvc.metadata else "", "error": message})
        await self.record(reference(pvc), WARNING, "VolumeResizeFailed", message)

    # -- shared ------------------------------------------------------------------------------------

    async def _read_secret(self, ref: SecretRef, role: str) -> dict[str, str]:
        """Secrets are read when needed, and kept only a few seconds (see `SecretReader`)."""
        try:
            data = await self.secrets.read(ref.namespace, ref.name)
        except ApiError as exc:
            reason = "not found" if exc.status.code == 404 else f"{exc.status.code} {exc.status.reason or ''}".strip()
            raise _SecretUnavailable(f"cannot read the {role} Secret {ref}: {reason}") from None
        if not data:
            raise _SecretUnavailable(f"the {role} Secret {ref} is empty")
        return data


def _no_fence() -> None:
    return None


class _SecretUnavailable(DriverError):
    """Retried: the Secret may be created or fixed later."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DriverError):
        return exc.message
    if isinstance(exc, ApiError):
        return f"Kubernetes API error {exc.status.code}: {exc.status.message or exc.status.reason}"
    return f"{type(exc).__name__}: {exc}"


def _scrub(message: str, secrets: Mapping[str, str]) -> str:
    """Event messages never carry a credential, whatever produced them."""
    sensitive = {v for k, v in secrets.items() if k not in PUBLIC_SECRET_KEYS}
    with contextlib.suppress(DriverError):
        sensitive |= parse_credentials(secrets).secret_values()
    return redact(message, sensitive)


def _bytes_or(text: str, default: int) -> int:
    try:
        return quantity_bytes(text, "capacity")
    except InvalidArgument:
        return default


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
