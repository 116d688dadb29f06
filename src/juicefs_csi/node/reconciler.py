"""Drives the mount pod reconciliation: at once on every change of a mount pod, and periodically."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lightkube.resources.core_v1 import Pod

from juicefs_csi.kube.informer import Event
from juicefs_csi.mount.pod import PodMounter
from juicefs_csi.mountpod.names import APP_NAME_MOUNT, LABEL_APP_NAME

log = logging.getLogger("juicefs_csi.reconciler")
SAFETY_PASS_SECONDS = 10.0


class Reconciler:
    def __init__(self, mounter: PodMounter, interval: float = SAFETY_PASS_SECONDS) -> None:
        self.mounter = mounter
        self.interval = interval
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        mounter.pods.add_handler(self._on_pod)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mount-pod-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_pod(self, event: Event, pod: Pod) -> None:
        """Any change of a mount pod, and any app pod leaving (its references may now be stale)."""
        metadata = pod.metadata
        if metadata is None or not metadata.name:
            return
        if (metadata.labels or {}).get(LABEL_APP_NAME) == APP_NAME_MOUNT:
            if event is not Event.DELETED:
                self._pending.add(metadata.name)
                self._wake.set()
        elif event is Event.DELETED:
            self._pending.update(self.mounter.mount_pod_names())
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            names, self._pending = self._pending, set()
            try:
                if names:
                    await self.mounter.reconcile_many(sorted(names))
                else:
                    await self.mounter.reconcile_all()
            except Exception:
                log.exception("reconcile pass failed")
