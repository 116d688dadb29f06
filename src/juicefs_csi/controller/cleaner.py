"""Carries out `controller/cleanup.py`'s decisions: finalise orphaned mount pods, delete finished helper Jobs.

Three label-selected informers in the driver's namespace (mount pods, node plugin pods, helper Jobs)
feed one loop. Every change, and every deadline a decision asked for, triggers a pass over the caches
(pure, cheap); the few writes it yields are fenced (`fence()` raises when this replica is no longer the
leader) and conditional on the resourceVersion the decision was made on. Nothing is LISTed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod
from lightkube.types import CascadeType, PatchType

from juicefs_csi.controller.cleanup import (
    DEFAULT_GRACE_SECONDS,
    JOB_LABELS,
    MOUNT_POD_LABELS,
    NODE_PLUGIN_LABELS,
    Action,
    decide_job,
    decide_mount_pod,
    plugin_nodes,
    track_absence,
    watched_nodes,
)
from juicefs_csi.kube.informer import Informer
from juicefs_csi.mountpod.names import FINALIZER

log = logging.getLogger("juicefs_csi.cleanup")

RETRY_SECONDS = 5.0
RESYNC_SECONDS = 300.0
CONCURRENT_WRITES = 8
NOT_FOUND, CONFLICT = 404, 409


def _no_fence() -> None:
    return None


class Cleaner:
    """Finalises mount pods on nodes without a node plugin and deletes finished helper Jobs.

    `run()` serves until cancelled or `stop()`; run it only on the leader (a fresh instance per term).
    """

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        *,
        grace: float = DEFAULT_GRACE_SECONDS,
        fence: Callable[[], None] = _no_fence,
        resync_seconds: float = RESYNC_SECONDS,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.grace = grace
        self.fence = fence
        self.resync_seconds = resync_seconds
        self.mount_pods: Informer[Pod] = Informer(
            client, Pod, namespace=namespace, labels=MOUNT_POD_LABELS, name="cleanup-mount-pods"
        )
        self.plugins: Informer[Pod] = Informer(
            client, Pod, namespace=namespace, labels=NODE_PLUGIN_LABELS, name="cleanup-node-plugins"
        )
        self.jobs: Informer[Job] = Informer(client, Job, namespace=namespace, labels=JOB_LABELS, name="cleanup-jobs")
        self.absent_since: dict[str, float] = {}
        self.passes = 0
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._retry: dict[tuple[str, str], float] = {}
        self._acted: dict[tuple[str, str], str] = {}
        for informer in (self.mount_pods, self.plugins, self.jobs):
            informer.add_handler(self._changed)

    def _changed(self, *_: Any) -> None:
        self._wake.set()

    async def run(self) -> None:
        informers = (self.mount_pods, self.plugins, self.jobs)
        self._stop.clear()
        try:
            for informer in informers:
                informer.start()
            waits = [asyncio.create_task(self._stopped()), asyncio.create_task(self._synced())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if self._stop.is_set():
                return
            self.ready.set()
            log.info("cleanup started", extra={"namespace": self.namespace, "grace_seconds": self.grace})
            while not self._stop.is_set():
                self._wake.clear()
                delay = await self.run_pass()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            for informer in informers:
                with contextlib.suppress(Exception):
                    await informer.stop()
            self.ready.clear()

    async def _stopped(self) -> None:
        await self._stop.wait()

    async def _synced(self) -> None:
        await asyncio.gather(*(i.wait_synced() for i in (self.mount_pods, self.plugins, self.jobs)))

    async def stop(self) -> None:
        """Ends `run()` after the pass in progress; the task running it returns."""
        self._stop.set()
        self._wake.set()

    async def run_pass(self) -> float:
        """Decide on everything cached, carry the decisions out; returns the seconds until a look is due."""
        self.passes += 1
        now, wall_now = time.monotonic(), datetime.now(UTC)
        pods, jobs = self.mount_pods.items(), self.jobs.items()
        present = plugin_nodes(self.plugins.items())
        self.absent_since = track_absence(self.absent_since, watched_nodes(pods, jobs), present, now)
        any_plugin = bool(present)
        if not any_plugin and (pods or jobs):
            log.debug("no node plugin pod found; not cleaning up by node", extra={"namespace": self.namespace})
        next_look = self.resync_seconds
        steps: list[Coroutine[Any, Any, None]] = []
        for pod in pods:
            decision = decide_mount_pod(
                pod, absent_since=self.absent_since, any_plugin=any_plugin, now=now, grace=self.grace
            )
            if decision.action is Action.WAIT:
                next_look = min(next_look, decision.after)
            elif decision.action is Action.FINALISE and self._due(pod, now):
                steps.append(self._finalise(pod, decision.reason))
        for job in jobs:
            decision = decide_job(
                job, absent_since=self.absent_since, any_plugin=any_plugin, now=now, wall_now=wall_now, grace=self.grace
            )
            if decision.action is Action.WAIT:
                next_look = min(next_look, decision.after)
            elif decision.action is Action.DELETE and self._due(job, now):
                steps.append(self._delete_job(job, decision.reason))
        cached = {self._key(pod) for pod in pods} | {self._key(job) for job in jobs}
        self._acted = {key: version for key, version in self._acted.items() if key in cached}
        self._retry = {key: at for key, at in self._retry.items() if key in cached}
        if steps:
            limit = asyncio.Semaphore(CONCURRENT_WRITES)

            async def bounded(step: Coroutine[Any, Any, None]) -> None:
                async with limit:
                    await step

            await asyncio.gather(*(bounded(step) for step in steps))
        if self._retry:
            next_look = min(next_look, max(0.0, min(self._retry.values()) - time.monotonic()))
        return max(0.0, next_look)

    def _due(self, obj: Pod | Job, now: float) -> bool:
        """Not again for the version already acted on (the cache may lag our own write), and a write
        that failed only after RETRY_SECONDS, not on every pass."""
        key = self._key(obj)
        version = obj.metadata.resourceVersion if obj.metadata is not None else None
        if version and self._acted.get(key) == version:
            return False
        at = self._retry.get(key)
        if at is not None and at > now:
            return False
        self._retry.pop(key, None)
        self._acted[key] = version or ""
        return True

    @staticmethod
    def _key(obj: Pod | Job) -> tuple[str, str]:
        meta = obj.metadata
        assert meta is not None
        return f"{type(obj).__name__}/{meta.namespace or ''}", meta.name or ""

    def _failed(self, obj: Pod | Job, what: str, exc: BaseException) -> None:
        key = self._key(obj)
        self._retry[key] = time.monotonic() + RETRY_SECONDS
        self._acted.pop(key, None)
        name = obj.metadata.name if obj.metadata is not None else ""
        log.warning(what, extra={"name": name, "namespace": self.namespace, "error": _describe(exc)})

    async def _finalise(self, pod: Pod, reason: str) -> None:
        """Drop our finalizer (conditional on the version decided on), then delete the pod if not deleting."""
        meta = pod.metadata
        assert meta is not None and meta.name
        try:
            finalizers = meta.finalizers or []
            if FINALIZER in finalizers:
                self.fence()
                remaining = [f for f in finalizers if f != FINALIZER]
                patch = {"metadata": {"finalizers": remaining or None, "resourceVersion": meta.resourceVersion}}
                await self.client.patch(Pod, meta.name, patch, namespace=meta.namespace, patch_type=PatchType.MERGE)
            if meta.deletionTimestamp is None:
                self.fence()
                await self.client.delete(Pod, meta.name, namespace=meta.namespace)
        except ApiError as exc:
            if exc.status.code == NOT_FOUND:
                return
            if exc.status.code == CONFLICT:
                return  # changed since we decided: the informer brings the new version, and another pass
            self._failed(pod, "cannot finalise mount pod", exc)
            return
        except (httpx.HTTPError, OSError) as exc:
            self._failed(pod, "cannot finalise mount pod", exc)
            return
        log.info(
            "finalised mount pod",
            extra={
                "pod": meta.name,
                "namespace": meta.namespace,
                "node": pod.spec.nodeName if pod.spec else "",
                "reason": reason,
            },
        )

    async def _delete_job(self, job: Job, reason: str) -> None:
        meta = job.metadata
        assert meta is not None and meta.name
        try:
            self.fence()
            await self.client.delete(Job, meta.name, namespace=meta.namespace, cascade=CascadeType.BACKGROUND)
        except ApiError as exc:
            if exc.status.code != NOT_FOUND:
                self._failed(job, "cannot delete job", exc)
            return
        except (httpx.HTTPError, OSError) as exc:
            self._failed(job, "cannot delete job", exc)
            return
        log.info("deleted job", extra={"job": meta.name, "namespace": meta.namespace, "reason": reason})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status.code} {exc.status.reason or ''}: {exc.status.message or ''}".strip()
    return str(exc) or type(exc).__name__
