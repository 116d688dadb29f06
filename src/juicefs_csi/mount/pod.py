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
import contextlib
import errno
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim, Pod, Secret
from lightkube.types import PatchType

from juicefs_csi import DRIVER_NAME
from juicefs_csi.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DriverError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
)
from juicefs_csi.kube.events import WARNING, EventRecorder, Recorder, pod_reference
from juicefs_csi.kube.node_pods import NodePods
from juicefs_csi.locks import KeyedLocks
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount import fusectl
from juicefs_csi.mount import targets as target_ops
from juicefs_csi.mount.base import PublishedTarget, PublishRequest
from juicefs_csi.mount.health import PathState, probe
from juicefs_csi.mount.mountinfo import MountEntry, by_mount_point, read_mounts
from juicefs_csi.mountpod.config import GlobalConfig, select_patch
from juicefs_csi.mountpod.names import (
    ANN_DELETE_AT,
    ANN_UNIQUE_ID,
    APP_NAME_MOUNT,
    CONFIG_MAP_NAME,
    FINALIZER,
    LABEL_APP_NAME,
    LABEL_HASH,
    LABEL_VOLUME_ID,
    METRICS_PORT,
    MOUNT_CONTAINER,
    POD_MOUNT_BASE,
    label_value,
    mount_dir_name,
    mount_secret_name,
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
from juicefs_csi.node.app_pod import AppPod, Lookup, resolve_app_pod
from juicefs_csi.node.decisions import STUCK_AFTER_SECONDS, Action, Decision, PodView, Policy, decide, references
from juicefs_csi.volume.secrets import redact

log = logging.getLogger("juicefs_csi.podmount")

JUICEFS_ROOT_INODE = 1
LOG_TAIL_LINES = 20
READY_POLL_SECONDS = 0.01
# A failed reconcile action is tried again this soon.
RETRY_SECONDS = 2.0
# How long a re-bind waits for the live mount point to answer a stat.
REBIND_PROBE_SECONDS = 5.0
EVENT_COMPONENT = "juicefs-csi-node"
# Warning Events on the app pod (the kubelet adds its own FailedMount with the gRPC message).
REASON_INVALID_SETTINGS = "InvalidMountPodSettings"
REASON_INVALID_CONFIG = "InvalidGlobalConfig"
REASON_SETTINGS_WARNING = "MountPodSettingsWarning"  # on the PV


@dataclass(frozen=True)
class PodMounterConfig:
    node: str
    environment: MountPodEnvironment
    ready_timeout: float = 60.0
    allowed_target_prefix: str = ""
    app_pod_timeout: float = 5.0
    """How long a publish waits for its app pod to show up in the node's pod cache (no podInfoOnMount)."""
    driver_name: str = DRIVER_NAME
    stuck_after: float = STUCK_AFTER_SECONDS
    """A deleted mount pod still running this long after its grace period ended is stuck (FUSE abort)."""


class PodMounter:
    def __init__(
        self,
        client: AsyncClient,
        pods: NodePods,
        config: PodMounterConfig,
        global_config: Any,
        metrics: Metrics,
        *,
        recorder: Recorder | None = None,
    ) -> None:
        self.client = client
        self.pods = pods
        self.config = config
        self.global_config = global_config
        self.metrics = metrics
        self.record: Recorder = recorder or EventRecorder(client, EVENT_COMPONENT, host=config.node)
        self._target_locks = KeyedLocks[str]()
        self._hash_locks = KeyedLocks[str]()
        self._publishing: set[str] = set()
        self._pod_locks = KeyedLocks[str]()
        self._requeue: dict[str, datetime] = {}
        self._fusectl: str | None = None

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
        app = await self._app_pod(request, target)
        settings = await self._checked_settings(request, app)
        existing = self._pod_with_ref(target)
        if existing is not None and _label(existing, LABEL_HASH) != settings.hash:
            raise AlreadyExists(f"target {target} is already published with different mount settings")
        async with self._hash_locks.hold(settings.hash):
            pod = existing or await self._attach(settings, target, request)
        pod = await self._wait_ready(target, _name(pod), settings.volume.credentials.secret_values())
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

    async def _app_pod(self, request: PublishRequest, target: str) -> AppPod:
        """podInfoOnMount context first, then the node's pod cache (waited on briefly: it may lag)."""

        def lookup(waited: bool) -> Lookup:
            return resolve_app_pod(
                request.inputs.volume_context,
                target,
                self._cached_app_pod,
                cache_synced=self.pods.synced,
                waited=waited,
                driver_name=self.config.driver_name,
            )

        found = lookup(waited=False)
        if found.wait_for_uid:
            uid = found.wait_for_uid
            with contextlib.suppress(TimeoutError):
                await self.pods.wait_for(lambda: self._cached_app_pod(uid), timeout=self.config.app_pod_timeout)
            found = lookup(waited=True)
        if found.pod is None:
            raise FailedPrecondition(found.error)
        return found.pod

    def _cached_app_pod(self, uid: str) -> AppPod | None:
        pod = self.pods.find_by_uid(uid)
        if pod is None or pod.metadata is None:
            return None
        return AppPod(pod.metadata.namespace or "", pod.metadata.name or "", uid)

    async def _checked_settings(self, request: PublishRequest, app: AppPod) -> Any:
        """Settings, with a Warning Event on the app pod when bad input refuses them or the ConfigMap is invalid."""
        secrets = request.settings.credentials.secret_values()
        involved = pod_reference(app.namespace, app.name, app.uid)
        volume_id = request.settings.volume_id
        try:
            settings = await self._pod_settings(request)
        except InvalidArgument as exc:
            message = redact(f"volume {volume_id}: {exc.message}", secrets)
            log.warning("publish refused: invalid mount pod settings", extra={"volume_id": volume_id, "error": message})
            await self.record(involved, WARNING, REASON_INVALID_SETTINGS, message)
            raise
        if settings.warnings and self._find_pod(settings.unique_id, settings.hash) is None:
            pv = ObjectReference(apiVersion="v1", kind="PersistentVolume", name=volume_id)
            for warning in settings.warnings:  # once per new mount pod, not per publish
                await self.record(pv, WARNING, REASON_SETTINGS_WARNING, redact(warning, secrets))
        config_error = getattr(self.global_config, "error", None)
        if not config_error:
            return settings
        if getattr(self.global_config, "valid", True):
            message = f"volume {volume_id}: mount pod settings use the last valid {CONFIG_MAP_NAME}; it is invalid now"
            await self.record(involved, WARNING, REASON_INVALID_CONFIG, f"{message}: {config_error}")
            return settings
        if self._find_pod(settings.unique_id, settings.hash) is None:
            message = f"volume {volume_id}: a new mount pod is needed and no valid {CONFIG_MAP_NAME} is known"
            await self.record(involved, WARNING, REASON_INVALID_CONFIG, f"{message}: {config_error}")
            raise FailedPrecondition(f"{message}: {config_error}")
        return settings

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
        secret, made_secret = await self._ensure_secret(settings)
        body = build_mount_pod(
            settings, node=self.config.node, suffix=new_suffix(), upgrade_uuid=str(uuid.uuid4()), targets=[target]
        )
        try:
            created = await self.client.create(cast(Pod, Pod.from_dict(body)))
        except ApiError:
            if made_secret:  # no pod will own it: do not leave the credentials behind
                meta = secret["metadata"]
                with contextlib.suppress(ApiError):
                    await self.client.delete(Secret, meta["name"], namespace=meta["namespace"])
            raise
        log.info("mount pod created", extra={"pod": _name(created), "volume_id": settings.unique_id})
        await self._own_secret(created, secret)
        # Hold the hash lock until the cache shows the pod: the next publish must find it, not make another.
        namespace, name = _meta(created).namespace or "", _name(created)
        await self.pods.wait_for(lambda: self.pods.get(namespace, name), timeout=self.config.ready_timeout)
        return created

    async def _ensure_secret(self, settings: Any) -> tuple[dict[str, Any], bool]:
        """Create or update the per-mount Secret before the pod that reads it; True if created.

        Its owners are the mount pods that read it (`_own_secret`), not the PV: the credentials stay in
        the mount namespace exactly while a client may need them, and go with the last mount pod.
        """
        body = build_mount_secret(settings)
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
            return body, False
        return body, True

    async def _wait_ready(self, target: str, name: str, secret_values: frozenset[str]) -> Pod:
        """Watch the mount pod that holds the target's reference until it runs and its mount point answers.

        Following the reference rather than a pod name lets a publish ride out a replacement (a deleted
        or resource-starved pod recreated meanwhile) instead of failing and waiting for the kubelet's
        retry. Failures carry the log tail of the last pod seen."""
        namespace = self.config.environment.namespace
        seen = name

        def running_holder() -> Pod | None:
            nonlocal seen
            holder = self._pod_with_ref(target)
            if holder is None:
                return None
            seen = _name(holder)
            return _running(holder)

        try:
            async with asyncio.timeout(self.config.ready_timeout):
                pod = await self.pods.wait_for(running_holder, timeout=1e9)
                while not await asyncio.to_thread(_is_juicefs_root, self._host_path(pod)):
                    current = running_holder()
                    if current is None or _name(current) != _name(pod):
                        pod = await self.pods.wait_for(running_holder, timeout=1e9)
                    await asyncio.sleep(READY_POLL_SECONDS)
                return pod
        except TimeoutError:
            tail = redact(await self._log_tail(seen), secret_values)
            raise DeadlineExceeded(
                f"mount pod {namespace}/{seen} was not ready within {self.config.ready_timeout:.0f}s: {tail}"
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

    def _find_pod(self, unique_id: str, settings_hash: str, exclude: str = "") -> Pod | None:
        for pod in self._mount_pods():
            if (
                _name(pod) != exclude
                and _label(pod, LABEL_VOLUME_ID) == label_value(unique_id)
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

    def _own_host_path(self, pod: Pod) -> str | None:
        """The mount point, or None for a pod this driver did not build (e.g. the Go driver's shell command)."""
        try:
            return self._host_path(pod)
        except FailedPrecondition:
            return None

    async def _patch_annotations(
        self, pod: Pod, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Pod:
        """A merge patch; with `resource_version`, only if the pod did not change since (409 otherwise)."""
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        patched = await self.client.patch(
            Pod,
            _name(pod),
            {"metadata": metadata},
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

    def next_requeue(self) -> float | None:
        """Seconds until a pod asked to be looked at again (a delete deadline, a stuck timeout), if any did."""
        if not self._requeue:
            return None
        return max(0.0, (min(self._requeue.values()) - datetime.now(UTC)).total_seconds())

    def due(self) -> list[str]:
        """Pods whose requeue time has come."""
        now = datetime.now(UTC)
        return [name for name, at in self._requeue.items() if at <= now]

    async def reconcile_many(self, names: list[str]) -> None:
        """One read of the mount table and of the live pods serves the whole batch.

        One pass at a time per pod: the reconciler's and an unpublish's must not both act on one view.
        """
        mounts = by_mount_point(await asyncio.to_thread(read_mounts))
        live = {uid for p in self.pods.pods() if (uid := _meta(p).uid)} if self.pods.synced else None
        for name in names:
            async with self._pod_locks.hold(name):
                pod = self.pods.get(self.config.environment.namespace, name)
                if pod is None:
                    self._requeue.pop(name, None)
                    continue
                await self._reconcile_pod(pod, mounts, live)

    def _policy(self) -> Policy:
        config: GlobalConfig = self.global_config.current
        return Policy(
            remove_requests=config.enable_auto_remove_request_resources,
            abort_stuck=config.enable_auto_abort_stuck_mount_pod,
            stuck_after=self.config.stuck_after,
        )

    async def _reconcile_pod(self, pod: Pod, mounts: Mapping[str, list[MountEntry]], live: set[str] | None) -> None:
        name = _name(pod)
        protected = mounts.keys() | self._publishing
        bound = {target for target in references(_meta(pod).annotations or {}).values() if target in protected}
        decision = decide(_view(pod), live, bound, datetime.now(UTC), self._policy())
        if decision.requeue_at is not None:
            self._requeue[name] = decision.requeue_at
        else:
            self._requeue.pop(name, None)
        for action in decision.actions:
            try:
                pod = await self._execute(action, pod, decision, mounts) or pod
            except (ApiError, DriverError, OSError) as exc:
                # Later actions build on this one (no finalizer removal before the references moved): stop here.
                log.warning("reconcile action failed: %s: %s", action.value, exc, extra={"pod": name})
                self._requeue[name] = datetime.now(UTC) + timedelta(seconds=RETRY_SECONDS)
                return

    async def _execute(
        self, action: Action, pod: Pod, decision: Decision, mounts: Mapping[str, list[MountEntry]]
    ) -> Pod | None:
        """Carry one action out; returns the pod as the API server answered, when it changed it."""
        version = _meta(pod).resourceVersion
        if action is Action.DROP_REFS:
            return await self._drop_refs(pod, decision.gone_refs)
        if action is Action.MARK_DELETE_AT and decision.delete_at is not None:
            stamp = decision.delete_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
            return await self._patch_annotations(pod, {ANN_DELETE_AT: stamp}, resource_version=version)
        if action is Action.CLEAR_DELETE_AT:
            return await self._patch_annotations(pod, {ANN_DELETE_AT: None}, resource_version=version)
        if action is Action.DELETE:
            await self._delete_unused(pod)
        elif action is Action.REBIND:
            await self._rebind(pod, mounts)
        elif action in (Action.RECREATE, Action.RECREATE_WITHOUT_REQUESTS):
            keep = {k: v for k, v in references(_meta(pod).annotations or {}).items() if k not in decision.gone_refs}
            await self._recreate(pod, keep, without_requests=action is Action.RECREATE_WITHOUT_REQUESTS)
        elif action is Action.ABORT:
            await self._abort(pod)
        elif action is Action.FINALIZE:
            await self._finalize(pod)
        return None

    async def _drop_refs(self, pod: Pod, gone: tuple[str, ...]) -> Pod | None:
        """Checked again on a fresh mount table: a target bound since the pass began is not stale."""
        fresh = by_mount_point(await asyncio.to_thread(read_mounts))
        annotations = _meta(pod).annotations or {}
        drop = [key for key in gone if annotations.get(key, "") not in fresh.keys() | self._publishing]
        if not drop:
            return None
        log.info("dropping references of gone app pods", extra={"pod": _name(pod), "targets": len(drop)})
        return await self._patch_annotations(pod, dict.fromkeys(drop), resource_version=_meta(pod).resourceVersion)

    async def _delete_unused(self, pod: Pod) -> None:
        """Delete a pod nobody uses, on a fresh read and under its settings' lock.

        A publish attaches under the same lock: one that took the pod over shows in the fresh read
        and keeps it, and one that comes later finds the pod deleting in the cache and makes a new one.
        """
        name, namespace = _name(pod), _meta(pod).namespace or ""
        async with self._hash_locks.hold(_label(pod, LABEL_HASH) or ""):
            fresh = await self.client.get(Pod, name, namespace=namespace)
            if Action.DELETE not in decide(_view(fresh), None, (), datetime.now(UTC), self._policy()).actions:
                return
            await self.client.delete(Pod, name, namespace=namespace)
            log.info("mount pod deleted: no references left", extra={"pod": name})
            with contextlib.suppress(TimeoutError):
                await self.pods.wait_for(lambda: _gone_or_deleting(self.pods.get(namespace, name)), timeout=5.0)

    async def _rebind(self, pod: Pod, mounts: Mapping[str, list[MountEntry]]) -> None:
        """After a client restart or a replacement the targets hold dead binds: bind the live mount over them.

        A bind of the live client shares its FUSE device number, so the mount table alone tells
        which targets need it; nothing is statted but the pod's own mount point (in the bounded
        probe pool), so a hung old client cannot take threads. Each target is re-bound under its
        lock, on a fresh mount table, without ever leaving the bare directory exposed.
        """
        host_path = self._host_path(pod)
        live = _top_device(mounts, host_path)
        targets = references(_meta(pod).annotations or {}).values()
        stale = [t for t in targets if live is not None and _top_device(mounts, t) not in (None, live)]
        if not stale:
            return
        state, _ = await probe(host_path, timeout=REBIND_PROBE_SECONDS, root_inode=JUICEFS_ROOT_INODE)
        if state is not PathState.HEALTHY:
            return
        for target in stale:
            async with self._target_locks.hold(target):
                owner = self._pod_with_ref(target)
                if owner is None or _name(owner) != _name(pod):
                    continue
                fresh = by_mount_point(await asyncio.to_thread(read_mounts))
                device, at_target = _top_device(fresh, host_path), fresh.get(target) or []
                if device is None or _top_device(fresh, target) in (None, device):
                    continue
                top = at_target[-1]
                source = os.path.join(host_path, top.root.lstrip("/"))
                await target_ops.replace_bind(source, target, "ro" in top.options.split(","))
                self.metrics.mount_recoveries.labels(self.metrics.node_name, _label(pod, LABEL_VOLUME_ID)).inc()
                log.info("re-bound target to the live client", extra={"pod": _name(pod), "target": target})

    async def _recreate(self, pod: Pod, keep: Mapping[str, str], without_requests: bool) -> None:
        """Move the references to a replacement, then delete the old pod (unless it is already going).

        The replacement is the node's live pod of the same settings when a publish already made one,
        else a copy of the old pod at a mount directory of its own. Under the settings' lock, like a
        publish's attach, so both never make two pods. The old pod then loses the references: an
        unpublish that later removes one from the replacement must not see it come back.
        """
        name, namespace = _name(pod), _meta(pod).namespace or ""
        if keep:
            async with self._hash_locks.hold(_label(pod, LABEL_HASH) or ""):
                replacement = self._find_pod(_unique_id(pod), _label(pod, LABEL_HASH) or "", exclude=name)
                if replacement is None:
                    replacement = await self._create_replacement(pod, keep, without_requests)
                else:
                    annotations = _meta(replacement).annotations or {}
                    missing = {key: target for key, target in keep.items() if annotations.get(key) != target}
                    if missing:
                        await self._patch_annotations(replacement, {**missing, ANN_DELETE_AT: None})
                log.info("references moved to the replacement", extra={"old": name, "new": _name(replacement)})
                await self._patch_annotations(pod, dict.fromkeys(keep))
        if _meta(pod).deletionTimestamp is None:
            await self.client.delete(Pod, name, namespace=namespace)

    async def _create_replacement(self, pod: Pod, keep: Mapping[str, str], without_requests: bool) -> Pod:
        body = pod.to_dict()
        annotations = {
            key: value
            for key, value in body["metadata"].get("annotations", {}).items()
            if key != ANN_DELETE_AT and key not in references({key: value})
        }
        fresh: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": _name(pod)[:-6] + new_suffix(),
                "namespace": _meta(pod).namespace,
                "labels": body["metadata"].get("labels", {}),
                "annotations": {**annotations, **keep},
                "finalizers": [FINALIZER],
            },
            "spec": body["spec"],
        }
        if without_requests:
            fresh = build_resources_without_requests(fresh)
        _move_mount_dir(fresh, _mount_dir(pod), mount_dir_name(_unique_id(pod), fresh["metadata"]["name"][-6:]))
        created = await self.client.create(cast(Pod, Pod.from_dict(fresh)))
        namespace, name = _meta(created).namespace or "", _name(created)
        log.info(
            "mount pod recreated",
            extra={"old": _name(pod), "new": name, "without_requests": without_requests, "targets": len(keep)},
        )
        await self._own_secret(created)
        await self.pods.wait_for(lambda: self.pods.get(namespace, name), timeout=self.config.ready_timeout)
        return created

    async def _own_secret(self, pod: Pod, body: Mapping[str, Any] | None = None) -> None:
        """Make `pod` an owner of the per-mount Secret: the garbage collector deletes it with its last mount pod.

        Every node's mount pods of the volume share the Secret, so ownership by each of them, not a
        deletion by the node that happens to unmount last, is what keeps it exactly while some client
        may read it. With `body`, a Secret collected meanwhile (its last owner went) is made again.
        """
        meta = _meta(pod)
        owner = {"apiVersion": "v1", "kind": "Pod", "name": meta.name, "uid": meta.uid}
        name = mount_secret_name(_unique_id(pod))
        try:
            await self.client.patch(
                Secret,
                name,
                {"metadata": {"ownerReferences": [owner]}},
                namespace=meta.namespace,
                patch_type=PatchType.STRATEGIC,
            )
        except ApiError as exc:
            if exc.status.code != 404 or body is None:
                log.warning("mount Secret not owned by its pod: %s", exc.status.message, extra={"pod": meta.name})
                return
            metadata = {**body["metadata"], "ownerReferences": [owner]}
            await self.client.create(cast(Secret, Secret.from_dict({**body, "metadata": metadata})))

    async def _abort(self, pod: Pod) -> None:
        """A pod stuck terminating: its client does not answer. Abort its FUSE connection and detach its mount.

        The connection is read from the mount table just before: a mount at the pod's own
        directory is the pod's, so the id cannot name another client's recycled connection.
        """
        host_path = self._own_host_path(pod)
        if host_path is None:
            return
        at_host = by_mount_point(await asyncio.to_thread(read_mounts)).get(host_path, [])
        connections = {fusectl.connection_of(entry.device) for entry in at_host if entry.is_juicefs}
        if connections:
            if self._fusectl is None:
                self._fusectl = await asyncio.to_thread(fusectl.fusectl_root)
            aborted = fusectl.abort_connections(self._fusectl, connections)
            log.warning(
                "mount pod stuck terminating: FUSE connection aborted",
                extra={"pod": _name(pod), "connections": aborted},
            )
        await target_ops.unmount_all(host_path)

    async def _finalize(self, pod: Pod) -> None:
        """Its client is gone (or was given up on): unmount what is left, remove the directory, drop our finalizer."""
        name, namespace = _name(pod), _meta(pod).namespace
        host_path = self._own_host_path(pod)
        if host_path is not None:  # else not a pod this driver built (no mount point of ours): nothing to clean
            await target_ops.unmount_all(host_path)
            try:
                await asyncio.to_thread(os.rmdir, host_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise  # still a mount point: keep the finalizer, try again
                log.warning("mount directory left behind: %s", exc.strerror, extra={"pod": name, "path": host_path})
        finalizers = [f for f in _meta(pod).finalizers or [] if f != FINALIZER]
        await self.client.patch(
            Pod,
            name,
            {"metadata": {"finalizers": finalizers, "resourceVersion": _meta(pod).resourceVersion}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        self._requeue.pop(name, None)
        log.info("mount pod finalized", extra={"pod": name})


def _gone_or_deleting(pod: Pod | None) -> bool:
    return pod is None or _meta(pod).deletionTimestamp is not None


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
    """A replacement pod mounts at a directory of its own, so cleaning up the old one cannot touch it.

    The old mount point also appears wherever a `${MOUNT_POINT}` template was filled (hooks,
    probes, env, annotations): all of them move.
    """
    old_path, new_path = f"{POD_MOUNT_BASE}/{old}", f"{POD_MOUNT_BASE}/{new}"
    pattern = re.compile(re.escape(old_path) + r"(?![\w.-])")

    def move(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(new_path, value)
        if isinstance(value, list):
            return [move(item) for item in value]
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        return value

    body["spec"] = move(body["spec"])
    metadata = body["metadata"]
    metadata["annotations"] = move(metadata.get("annotations", {}))


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
    status, meta = pod.status, _meta(pod)
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    unschedulable = [
        c.message or ""
        for c in conditions
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
    ]
    return PodView(
        name=_name(pod),
        annotations=meta.annotations or {},
        deleting=meta.deletionTimestamp is not None,
        phase=(status.phase if status else "") or "",
        ready=ready or bool(status and status.phase == "Running"),
        reason=(status.reason if status else "") or "",
        message=(status.message if status else "") or "",
        has_finalizer=FINALIZER in (meta.finalizers or []),
        deletion_at=meta.deletionTimestamp,
        stopped=meta.deletionTimestamp is not None and meta.deletionGracePeriodSeconds == 0,
        unschedulable=" ".join(unschedulable),
    )


def _is_juicefs_root(path: str) -> bool:
    try:
        return os.stat(path).st_ino == JUICEFS_ROOT_INODE
    except OSError:
        return False
