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
        """Changed pods at once; pods that asked for a later look (a delete deadline, a stuck timeout) then;
        every pod once per interval, however busy the event stream is."""
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while True:
            delay = self.interval - (loop.time() - last_full)
            requeue = self.mounter.next_requeue()
            if requeue is not None:
                delay = min(delay, requeue)
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that meets a wake-up, and stop() hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._wake.wait()
            self._wake.clear()
            names, self._pending = self._pending, set()
            try:
                if loop.time() - last_full >= self.interval:
                    last_full = loop.time()
                    await self.mounter.reconcile_all()
                elif names := names | set(self.mounter.due()):
                    await self.mounter.reconcile_many(sorted(names))
            except Exception:
                log.exception("reconcile pass failed")
