"""core/v1 Events, written as client-go's recorder writes them; shared by the provisioner and the node plugin.

A repeat of the same Event (same object, type, reason and message) within 10 minutes bumps the
existing Event's `count` and `lastTimestamp` instead of creating another one, so a failure that is
retried (a provisioning attempt, a kubelet retrying NodePublishVolume) costs one object, not one per
attempt. Like client-go's spam filter, each involved object has a token bucket (25 Events at once,
then one per 5 minutes): a pod whose every retry fails with a new message cannot flood etcd. Recording
never raises: an Event that cannot be written is logged, and the work it describes
goes on. Writes go through the caller's client, so they share its token bucket (KUBE_QPS/KUBE_BURST).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx2 as httpx
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from juicefs_csi.locks import KeyedLocks

log = logging.getLogger("juicefs_csi.events")

NORMAL, WARNING = "Normal", "Warning"
EVENT_MESSAGE_LIMIT = 1024
EVENT_AGGREGATE_SECONDS = 600.0
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0

Recorder = Callable[[ObjectReference, str, str, str], Awaitable[None]]
"""(involved object, type, reason, message) → a core/v1 Event; must never raise."""


def pod_reference(namespace: str, name: str, uid: str = "") -> ObjectReference:
    """An app pod as an Event's involvedObject (the uid may be unknown: Events only refer to it)."""
    return ObjectReference(apiVersion="v1", kind="Pod", namespace=namespace, name=name, uid=uid or None)


@dataclass
class _Recorded:
    name: str
    namespace: str
    count: int
    last: float


class _SpamFilter:
    """One token bucket per involved object, least recently used forgotten beyond `size` objects."""

    def __init__(self, size: int, burst: int = SPAM_BURST, refill_seconds: float = SPAM_REFILL_SECONDS) -> None:
        self.size = size
        self.burst = burst
        self.refill_seconds = refill_seconds
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        tokens, since = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - since) / self.refill_seconds)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return allowed


class EventRecorder:
    """Writes Events for one component; see the module docstring for the aggregation rule.

    Concurrent calls with the same key are serialised, so two at once make one Event with count 2.
    """

    def __init__(
        self,
        client: AsyncClient,
        component: str,
        host: str | None = None,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.clock = clock
        self.component = component
        self.host = host or socket.gethostname()
        self.cache_size = cache_size
        self._seen: collections.OrderedDict[tuple[str, str, str, str], _Recorded] = collections.OrderedDict()
        self._locks: KeyedLocks[tuple[str, str, str, str]] = KeyedLocks()
        self._spam = _SpamFilter(cache_size)
        self.filtered = 0

    async def __call__(self, involved: ObjectReference, type_: str, reason: str, message: str) -> None:
        message = message[:EVENT_MESSAGE_LIMIT]
        namespace = involved.namespace or "default"  # cluster-scoped objects: client-go uses "default"
        subject = involved.uid or f"{involved.kind}/{namespace}/{involved.name}"
        if not self._spam.allow(subject, self.clock()):
            self.filtered += 1
            log.debug("event dropped by the per-object rate limit", extra={"reason": reason, "object": involved.name})
            return
        key = (subject, type_, reason, message)
        try:
            async with self._locks.hold(key):
                await self._record(
                    key, involved=involved, namespace=namespace, type_=type_, reason=reason, message=message
                )
        except (ApiError, httpx.HTTPError, OSError) as exc:
            log.warning("cannot record event", extra={"reason": reason, "object": involved.name, "error": str(exc)})

    async def _record(
        self,
        key: tuple[str, str, str, str],
        *,
        involved: ObjectReference,
        namespace: str,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        now = datetime.now(UTC)
        seen = self._seen.get(key)
        if seen is not None and self.clock() - seen.last < EVENT_AGGREGATE_SECONDS:
            seen.count += 1
            seen.last = self.clock()
            self._seen.move_to_end(key)
            try:
                patch = {"count": seen.count, "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
                await self.client.patch(Event, seen.name, patch, namespace=seen.namespace, patch_type=PatchType.MERGE)
                return
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
        name = f"{involved.name}.{time.time_ns():x}"
        event = Event(
            metadata=ObjectMeta(name=name, namespace=namespace),
            involvedObject=involved,
            type=type_,
            reason=reason,
            message=message,
            count=1,
            firstTimestamp=now,
            lastTimestamp=now,
            source=EventSource(component=self.component, host=self.host),
            reportingComponent=self.component,
            reportingInstance=self.host,
        )
        await self.client.create(event)
        self._seen[key] = _Recorded(name, namespace, 1, self.clock())
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)


class BackgroundRecorder:
    """Records without making the caller wait, as client-go's broadcaster does: a burst of provisioning
    must not queue its PV writes behind its own Events. At most `limit` Events are in flight; beyond
    that they are dropped (and counted in the log), never the work they describe."""

    def __init__(self, record: Recorder, limit: int = 1000) -> None:
        self._record = record
        self.limit = limit
        self.dropped = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def __call__(self, involved: ObjectReference, type_: str, reason: str, message: str) -> None:
        if len(self._pending) >= self.limit:
            self.dropped += 1
            log.warning("too many events in flight; dropped one", extra={"reason": reason, "dropped": self.dropped})
            return
        task = asyncio.create_task(self._send(involved, type_, reason, message), name=f"event-{reason}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, involved: ObjectReference, type_: str, reason: str, message: str) -> None:
        await self._record(involved, type_, reason, message)

    async def flush(self, timeout: float = 5.0) -> None:
        """Let the Events in flight land (on an orderly stop); whatever is left after `timeout` is cancelled."""
        pending = set(self._pending)
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
