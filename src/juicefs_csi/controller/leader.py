"""The controller work that must run exactly once in the cluster: the provisioner and the cleanup.

With `--leader-election` it is the elector's `on_started_leading`: every leadership term builds a
fresh Provisioner and Cleaner (fresh caches, fresh queues: nothing a previous term saw is trusted),
and losing leadership cancels them at once. Without election it simply runs, restarted if it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lightkube import AsyncClient

from juicefs_csi import DRIVER_NAME
from juicefs_csi.controller.cleaner import Cleaner
from juicefs_csi.controller.cleanup import DEFAULT_GRACE_SECONDS
from juicefs_csi.controller.provisioner import COMPONENT as PROVISIONER_COMPONENT
from juicefs_csi.controller.provisioner import DEFAULT_WORKERS, STOP_GRACE_SECONDS, Files, Provisioner
from juicefs_csi.kube.election import LeadershipLost
from juicefs_csi.kube.events import BackgroundRecorder, EventRecorder

log = logging.getLogger("juicefs_csi.controller")

RESTART_SECONDS = 5.0


def _no_fence() -> None:
    return None


@dataclass(frozen=True)
class LeaderWorkConfig:
    driver_name: str = DRIVER_NAME
    provisioner: bool = False
    workers: int = DEFAULT_WORKERS
    # The namespace of mount pods, node plugin pods and helper Jobs; None turns the cleanup off.
    cleanup_namespace: str | None = None
    cleanup_grace: float = DEFAULT_GRACE_SECONDS


class LeaderWork:
    """One term of leader work at a time: `run()` until cancelled or `stop()`."""

    def __init__(
        self,
        client: AsyncClient,
        files: Files | None,
        config: LeaderWorkConfig,
        events_client: AsyncClient | None = None,
    ) -> None:
        if config.provisioner and files is None:
            raise ValueError("the provisioner needs the controller's volume files")
        self.client = client
        # Events go out in the background on a client (token bucket) of their own: they describe the
        # provisioning, they must not halve its rate.
        self.events_client = events_client or client
        self.files = files
        self.config = config
        # Set to `elector.check` under leader election: every irreversible step is fenced by it.
        self.fence: Callable[[], None] = _no_fence
        self.provisioner: Provisioner | None = None
        self.cleaner: Cleaner | None = None
        self.terms = 0
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.config.provisioner or self.config.cleanup_namespace is not None

    async def run(self) -> None:
        """One term. Returns after `stop()`; raises if a part fails (the elector then hands the lease over)."""
        if self._stopping:
            return
        config = self.config
        events = BackgroundRecorder(EventRecorder(self.events_client, PROVISIONER_COMPONENT))
        provisioner = (
            Provisioner(self.client, self.files, config.driver_name, config.workers, events, fence=self.fence)
            if config.provisioner and self.files is not None
            else None
        )
        cleaner = (
            Cleaner(self.client, config.cleanup_namespace, grace=config.cleanup_grace, fence=self.fence)
            if config.cleanup_namespace is not None
            else None
        )
        self.provisioner, self.cleaner = provisioner, cleaner
        self.terms += 1
        log.info(
            "controller work started",
            extra={"term": self.terms, "provisioner": provisioner is not None, "cleanup": cleaner is not None},
        )
        try:
            async with asyncio.TaskGroup() as group:
                if provisioner is not None:
                    group.create_task(provisioner.run(), name="provisioner")
                if cleaner is not None:
                    group.create_task(cleaner.run(), name="cleanup")
        except* LeadershipLost:
            # The fence saw the deadline pass before the elector's timer did; it cancels us within moments.
            # Failing here instead would make the elector "release" a lease it may no longer hold.
            await asyncio.Event().wait()
        finally:
            await events.flush()
            self.provisioner = self.cleaner = None
            log.info("controller work stopped", extra={"term": self.terms})

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Let the current term end gracefully: in-flight provisioning gets `grace` seconds."""
        self._stopping = True
        provisioner, cleaner = self.provisioner, self.cleaner
        if cleaner is not None:
            await cleaner.stop()
        if provisioner is not None:
            await provisioner.stop(grace)

    async def run_unelected(self) -> None:
        """Without leader election: run, and start again after a failure until stopped or cancelled."""
        while not self._stopping:
            try:
                await self.run()
            except Exception:
                log.exception("controller work failed; restarting", extra={"after_seconds": RESTART_SECONDS})
                await asyncio.sleep(RESTART_SECONDS)
            else:
                return
