"""Mount pod mode: each volume's client runs in a mount pod on the node, shared by every target.

Sharing is decided by the settings hash: publishes with equal settings reuse
the node's mount pod of that volume (one reference annotation per target);
different settings get a new pod. Everything read comes from the node's pod
cache; a publish writes at most the Secret and the pod (first use) or one
patch (reuse). The reconciler (`reconcile`) keeps the pods and the targets'
binds right after crashes, deletions and restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim, Pod, Secret
from lightkube.types import PatchType

from juicefs_csi.errors import AlreadyExists, DeadlineExceeded, DriverError, FailedPrecondition, Internal
from juicefs_csi.kube.node_pods import NodePods
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount import targets as target_ops
from juicefs_csi.mount.base import PublishedTarget, PublishRequest
from juicefs_csi.mount.health import PathState, probe
from juicefs_csi.mount.locks import KeyedLocks
from juicefs_csi.mount.mountinfo import MountEntry, by_mount_point, read_mounts
from juicefs_csi.mountpod.config import GlobalConfig, select_patch
from juicefs_csi.mountpod.names import (
    ANN_DELETE_AT,
    ANN_UNIQUE_ID,
    APP_NAME_MOUNT,
    FINALIZER,
    LABEL_APP_NAME,
    LABEL_HASH,
    LABEL_VOLUME_ID,
    METRICS_PORT,
    MOUNT_CONTAINER,
    POD_MOUNT_BASE,
    label_value,
    mount_dir_name,
    new_suffix,
    reference_key,
)
from juicefs_csi.mountpod.spec import (
    MountPodEnvironment,
    build_mount_pod,
    build_mount_secret,
    build_resources_without_requests,
    mount_pod_settings,
)
from juicefs_csi.node.decisions import Action, PodView, decide, references
from juicefs_csi.volume.secrets import redact

log = logging.getLogger("juicefs_csi.podmount")

JUICEFS_ROOT_INODE = 1
LOG_TAIL_LINES = 20
READY_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class PodMounterConfig:
    node: str
    environment: MountPodEnvironment
    ready_timeout: float = 60.0
    allowed_target_prefix: str = ""


class PodMounter:
    def __init__(
        self,
        client: AsyncClient,
        pods: NodePods,
        config: PodMounterConfig,
        global_config: Any,
        metrics: Metrics,
    ) -> None:
        self.client = client
        self.pods = pods
        self.config = config
        self.global_config = global_config
        self.metrics = metrics
        self._target_locks = KeyedLocks()
        self._hash_locks = KeyedLocks()
        self._publishing: set[str] = set()

    async def start(self) -> None:
        await self.pods.start()

    async def close(self) -> None:
        await self.pods.stop()

    # -- Mounter -------------------------------------------------------------------------------

    def published(self, target: str) -> PublishedTarget | None:
        pod = self._pod_with_ref(target)
        if pod is None:
            return None
        return PublishedTarget(_unique_id(pod), target, self._host_path(pod), METRICS_PORT)

    async def publish(self, request: PublishRequest) -> PublishedTarget:
        target = target_ops.validate_target(request.target, self.config.allowed_target_prefix)
        async with self._target_locks.hold(target):
            self._publishing.add(target)
            try:
                return await self._publish(request, target)
            finally:
                self._publishing.discard(target)

    async def _publish(self, request: PublishRequest, target: str) -> PublishedTarget:
        settings = await self._pod_settings(request)
        existing = self._pod_with_ref(target)
        if existing is not None and _label(existing, LABEL_HASH) != settings.hash:
            raise AlreadyExists(f"target {target} is already published with different mount settings")
        async with self._hash_locks.hold(settings.hash):
            pod = existing or await self._attach(settings, target, request)
        pod = await self._wait_ready(_name(pod), settings.volume.credentials.secret_values())
        host_path = self._host_path(pod)
        source = os.path.join(host_path, settings.volume.sub_path)
        if not await self._target_serves(target):
            await asyncio.to_thread(os.makedirs, source, 0o777, True)
            await target_ops.unmount_all(target)
            try:
                await target_ops.bind(source, target, request.read_only)
            except OSError as exc:
                raise Internal(f"bind {target}: {exc.strerror}") from None
        return PublishedTarget(request.settings.volume_id, target, host_path, METRICS_PORT)

    async def unpublish(self, target: str) -> None:
        target = target_ops.validate_target(target)
        async with self._target_locks.hold(target):
            await target_ops.remove_target(target)
            pod = self._pod_with_ref(target)
            if pod is None:
                return
            await self._patch_annotations(pod, {reference_key(target): None})
        await self.reconcile(_name(pod))

    # -- publish helpers -----------------------------------------------------------------------

    async def _pod_settings(self, request: PublishRequest) -> Any:
        """PV and PVC give the patch selectors and resource annotations; read, never listed."""
        pvc_labels: Mapping[str, str] = {}
        pvc_annotations: Mapping[str, str] = {}
        pvc_name = storage_class = None
        try:
            pv = await self.client.get(PersistentVolume, request.settings.volume_id)
        except ApiError as exc:
            if exc.status.code != 404:
                raise Internal(f"reading PV {request.settings.volume_id}: {exc.status.message}") from None
            pv = None
        if pv is not None and pv.spec and pv.spec.claimRef:
            ref = pv.spec.claimRef
            storage_class = pv.spec.storageClassName
            try:
                pvc = await self.client.get(PersistentVolumeClaim, ref.name or "", namespace=ref.namespace)
                pvc_labels = (pvc.metadata.labels if pvc.metadata else None) or {}
                pvc_annotations = (pvc.metadata.annotations if pvc.metadata else None) or {}
                pvc_name = ref.name
            except ApiError as exc:
                if exc.status.code != 404:
                    raise Internal(f"reading PVC {ref.namespace}/{ref.name}: {exc.status.message}") from None
        config: GlobalConfig = self.global_config.current
        node = self.pods.node_name
        patch = select_patch(config, pvc_labels, pvc_name, storage_class, {"kubernetes.io/hostname": node})
        settings = mount_pod_settings(
            request.settings,
            volume_context=request.inputs.volume_context,
            patch=patch,
            environment=self.config.environment,
            config=config,
            pvc_annotations=pvc_annotations,
        )
        for warning in settings.warnings:
            log.warning("mount pod settings", extra={"volume_id": request.settings.volume_id, "warning": warning})
        return settings

    async def _attach(self, settings: Any, target: str, request: PublishRequest) -> Pod:
        """Add a reference to the node's mount pod for these settings, creating it the first time."""
        pod = self._find_pod(settings.unique_id, settings.hash)
        if pod is not None:
            return await self._patch_annotations(pod, {reference_key(target): target, ANN_DELETE_AT: None})
        await self._ensure_secret(settings, request.settings.volume_id)
        body = build_mount_pod(
            settings, node=self.config.node, suffix=new_suffix(), upgrade_uuid=str(uuid.uuid4()), targets=[target]
        )
        created = await self.client.create(cast(Pod, Pod.from_dict(body)))
        log.info("mount pod created", extra={"pod": _name(created), "volume_id": settings.unique_id})
        # Hold the hash lock until the cache shows the pod: the next publish must find it, not make another.
        namespace, name = _meta(created).namespace or "", _name(created)
        await self.pods.wait_for(lambda: self.pods.get(namespace, name), timeout=self.config.ready_timeout)
        return created

    async def _ensure_secret(self, settings: Any, volume_id: str) -> None:
        pv_uid = ""
        try:
            pv = await self.client.get(PersistentVolume, volume_id)
            pv_uid = (pv.metadata.uid if pv.metadata else None) or ""
        except ApiError:
            pass
        body = build_mount_secret(settings, pv_name=volume_id if pv_uid else "", pv_uid=pv_uid)
        try:
            await self.client.create(cast(Secret, Secret.from_dict(body)))
        except ApiError as exc:
            if exc.status.code != 409:
                raise Internal(f"creating the mount Secret: {exc.status.message}") from None
            await self.client.patch(
                Secret,
                body["metadata"]["name"],
                {"data": body.get("data", {})},
                namespace=body["metadata"]["namespace"],
                patch_type=PatchType.MERGE,
            )

    async def _wait_ready(self, name: str, secret_values: frozenset[str]) -> Pod:
        """Watch the pod until it runs and its mount point answers; failures carry its log tail."""
        namespace = self.config.environment.namespace
        try:
            async with asyncio.timeout(self.config.ready_timeout):
                pod = await self.pods.wait_for(lambda: _running(self.pods.get(namespace, name)), timeout=1e9)
                host_path = self._host_path(pod)
                while not await asyncio.to_thread(_is_juicefs_root, host_path):
                    current = self.pods.get(namespace, name)
                    if current is None or _running(current) is None:
                        pod = await self.pods.wait_for(lambda: _running(self.pods.get(namespace, name)), timeout=1e9)
                    await asyncio.sleep(READY_POLL_SECONDS)
                return pod
        except TimeoutError:
            tail = redact(await self._log_tail(name), secret_values)
            raise DeadlineExceeded(
                f"mount pod {namespace}/{name} was not ready within {self.config.ready_timeout:.0f}s: {tail}"
            ) from None

    async def _log_tail(self, name: str) -> str:
        try:
            lines = [
                line
                async for line in self.client.log(
                    name,
                    namespace=self.config.environment.namespace,
                    container=MOUNT_CONTAINER,
                    tail_lines=LOG_TAIL_LINES,
                )
            ]
        except ApiError:
            return "(no log available)"
        return "".join(lines).strip() or "(empty log)"

    async def _target_serves(self, target: str) -> bool:
        entries = await target_ops.mount_entries(target)
        if not entries or not entries[-1].is_juicefs:
            return False
        state, _ = await probe(target)
        return state is PathState.HEALTHY

    # -- pods ----------------------------------------------------------------------------------

    def _mount_pods(self) -> list[Pod]:
        return [pod for pod in self.pods.pods() if _label(pod, LABEL_APP_NAME) == APP_NAME_MOUNT]

    def _find_pod(self, unique_id: str, settings_hash: str) -> Pod | None:
        for pod in self._mount_pods():
            if (
                _label(pod, LABEL_VOLUME_ID) == label_value(unique_id)
                and _label(pod, LABEL_HASH) == settings_hash
                and _meta(pod).deletionTimestamp is None
                and (pod.status is None or pod.status.phase not in ("Failed", "Succeeded"))
            ):
                return pod
        return None

    def _pod_with_ref(self, target: str) -> Pod | None:
        key = reference_key(target)
        for pod in self._mount_pods():
            if key in (_meta(pod).annotations or {}) and _meta(pod).deletionTimestamp is None:
                return pod
        return None

    def _host_path(self, pod: Pod) -> str:
        """The node's view of the pod's mount point, read from the mount command itself."""
        return os.path.join(self.config.environment.mount_root, _mount_dir(pod))

    async def _patch_annotations(self, pod: Pod, annotations: Mapping[str, str | None]) -> Pod:
        patched = await self.client.patch(
            Pod,
            _name(pod),
            {"metadata": {"annotations": dict(annotations)}},
            namespace=_meta(pod).namespace,
            patch_type=PatchType.MERGE,
        )
        return patched

    # -- reconciliation ------------------------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        """Bring one mount pod and its targets to what its references ask for."""
        await self.reconcile_many([name])

    def mount_pod_names(self) -> list[str]:
        return [_name(pod) for pod in self._mount_pods()]

    async def reconcile_all(self) -> None:
        await self.reconcile_many(self.mount_pod_names())

    async def reconcile_many(self, names: list[str]) -> None:
        """One read of the mount table and of the live pods serves the whole batch."""
        mounts = by_mount_point(await asyncio.to_thread(read_mounts))
        live = {uid for p in self.pods.pods() if (uid := _meta(p).uid)} if self.pods.synced else None
        for name in names:
            pod = self.pods.get(self.config.environment.namespace, name)
            if pod is not None:
                await self._reconcile_pod(pod, mounts, live)

    async def _reconcile_pod(self, pod: Pod, mounts: Mapping[str, list[MountEntry]], live: set[str] | None) -> None:
        protected = mounts.keys() | self._publishing
        bound = {target for target in references(_meta(pod).annotations or {}).values() if target in protected}
        decision = decide(_view(pod), live, bound, datetime.now(UTC))
        for action in decision.actions:
            try:
                await self._execute(action, pod, decision, mounts)
            except (ApiError, DriverError, OSError) as exc:
                log.warning("reconcile action failed: %s: %s", action.value, exc, extra={"pod": _name(pod)})

    async def _execute(self, action: Action, pod: Pod, decision: Any, mounts: Mapping[str, list[MountEntry]]) -> None:
        name, namespace = _name(pod), _meta(pod).namespace
        if action is Action.DROP_REFS:
            await self._patch_annotations(pod, dict.fromkeys(decision.gone_refs))
        elif action is Action.MARK_DELETE_AT and decision.delete_at is not None:
            stamp = decision.delete_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
            await self._patch_annotations(pod, {ANN_DELETE_AT: stamp})
        elif action is Action.DELETE:
            await self.client.delete(Pod, name, namespace=namespace)
            log.info("mount pod deleted: no references left", extra={"pod": name})
        elif action is Action.REBIND:
            await self._rebind(pod, mounts)
        elif action is Action.FINALIZE:
            await target_ops.unmount_all(self._host_path(pod))
            finalizers = [f for f in _meta(pod).finalizers or [] if f != FINALIZER]
            await self.client.patch(
                Pod,
                name,
                {"metadata": {"finalizers": finalizers, "resourceVersion": _meta(pod).resourceVersion}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        elif action in (Action.RECREATE, Action.RECREATE_WITHOUT_REQUESTS):
            await self._recreate(pod, without_requests=action is Action.RECREATE_WITHOUT_REQUESTS)

    async def _rebind(self, pod: Pod, mounts: Mapping[str, list[MountEntry]]) -> None:
        """After a client restart the targets hold dead binds: bind the live mount over them.

        A bind of the live client shares its FUSE device number, so healthy targets are told
        apart from the mount table alone; only the others are probed, under their lock."""
        host_path = self._host_path(pod)
        if not await asyncio.to_thread(_is_juicefs_root, host_path):
            return
        live_device = _top_device(mounts, host_path)
        for target in references(_meta(pod).annotations or {}).values():
            if live_device is not None and _top_device(mounts, target) == live_device:
                continue
            async with self._target_locks.hold(target):
                if self._pod_with_ref(target) is None or await self._target_serves(target):
                    continue
                entries = await target_ops.mount_entries(target)
                if not entries:
                    continue
                root = entries[-1].root.lstrip("/")
                await target_ops.unmount_all(target)
                await target_ops.bind(os.path.join(host_path, root), target, "ro" in entries[-1].options.split(","))
                self.metrics.mount_recoveries.labels(self.metrics.node_name, _label(pod, LABEL_VOLUME_ID)).inc()
                log.info("re-bound target to the restarted client", extra={"pod": _name(pod), "target": target})

    async def _recreate(self, pod: Pod, without_requests: bool) -> None:
        """A replacement with the same references; the old pod goes (its finalizer is ours)."""
        body = pod.to_dict()
        fresh: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": _name(pod)[:-6] + new_suffix(),
                "namespace": _meta(pod).namespace,
                "labels": body["metadata"].get("labels", {}),
                "annotations": {k: v for k, v in body["metadata"].get("annotations", {}).items() if k != ANN_DELETE_AT},
                "finalizers": [FINALIZER],
            },
            "spec": body["spec"],
        }
        if without_requests:
            fresh = build_resources_without_requests(fresh)
        _move_mount_dir(fresh, _mount_dir(pod), mount_dir_name(_unique_id(pod), fresh["metadata"]["name"][-6:]))
        await self.client.create(cast(Pod, Pod.from_dict(fresh)))
        if _meta(pod).deletionTimestamp is None:
            await self.client.delete(Pod, _name(pod), namespace=_meta(pod).namespace)
        log.info("mount pod recreated", extra={"old": _name(pod), "new": fresh["metadata"]["name"]})


def _top_device(mounts: Mapping[str, list[MountEntry]], path: str) -> str | None:
    """The device of the juicefs mount a path shows (the last one stacked there), if any."""
    stacked = mounts.get(path)
    return stacked[-1].device if stacked and stacked[-1].is_juicefs else None


def _mount_dir(pod: Pod) -> str:
    for container in pod.spec.containers if pod.spec else []:
        if container.name == MOUNT_CONTAINER:
            for arg in container.command or []:
                if arg.startswith(POD_MOUNT_BASE + "/"):
                    return arg[len(POD_MOUNT_BASE) + 1 :]
    raise FailedPrecondition(f"mount pod {_name(pod)} has no mount point under {POD_MOUNT_BASE}")


def _move_mount_dir(body: dict[str, Any], old: str, new: str) -> None:
    """A replacement pod mounts at a directory of its own, so cleaning up the old one cannot touch it."""
    for container in body["spec"].get("containers", []):
        container["command"] = [
            POD_MOUNT_BASE + "/" + new if arg == POD_MOUNT_BASE + "/" + old else arg
            for arg in container.get("command", [])
        ]


def _unique_id(pod: Pod) -> str:
    return str((_meta(pod).annotations or {}).get(ANN_UNIQUE_ID, ""))


def _meta(pod: Pod) -> ObjectMeta:
    """Objects read from the API always carry metadata; lightkube types it optional."""
    assert pod.metadata is not None
    return pod.metadata


def _name(pod: Pod) -> str:
    return _meta(pod).name or ""


def _label(pod: Pod, key: str) -> str | None:
    return (_meta(pod).labels or {}).get(key)


def _running(pod: Pod | None) -> Pod | None:
    if pod is None or pod.status is None or _meta(pod).deletionTimestamp is not None:
        return None
    if pod.status.phase == "Failed":
        raise FailedPrecondition(f"mount pod {_name(pod)} failed: {pod.status.message or pod.status.reason}")
    return pod if pod.status.phase == "Running" else None


def _view(pod: Pod) -> PodView:
    status = pod.status
    ready = bool(
        status and status.conditions and any(c.type == "Ready" and c.status == "True" for c in status.conditions)
    )
    return PodView(
        name=_name(pod),
        annotations=_meta(pod).annotations or {},
        deleting=_meta(pod).deletionTimestamp is not None,
        phase=(status.phase if status else "") or "",
        ready=ready or bool(status and status.phase == "Running"),
        reason=(status.reason if status else "") or "",
        message=(status.message if status else "") or "",
        has_finalizer=FINALIZER in (_meta(pod).finalizers or []),
    )


def _is_juicefs_root(path: str) -> bool:
    try:
        return os.stat(path).st_ino == JUICEFS_ROOT_INODE
    except OSError:
        return False
