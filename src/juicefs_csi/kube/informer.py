"""List-watch caches: one LIST, then a watch resumed from the last seen resourceVersion.

Components read from these caches instead of asking the API server again. A
watch that ends (timeout, dropped connection) resumes from the last
resourceVersion, bookmarks included; only `410 Gone` costs a new LIST, after
which the cache is reconciled so handlers see the deletions they missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, Generic, TypeVar

import httpx2 as httpx
from lightkube import ALL_NS, AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

log = logging.getLogger("juicefs_csi.informer")

T = TypeVar("T")
R = TypeVar("R")
Key = tuple[str, str]
GONE = 410
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
WATCH_TIMEOUT_SECONDS = 300


class Event(Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


Handler = Callable[[Event, Any], None]


def key_of(obj: Any) -> Key:
    return obj.metadata.namespace or "", obj.metadata.name


class Informer(Generic[T]):
    def __init__(
        self,
        client: AsyncClient,
        resource: type[T],
        *,
        namespace: str | None = None,
        labels: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        name: str = "",
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.labels = dict(labels or {})
        self.fields = dict(fields or {})
        self.name = name or resource.__name__
        self.store: dict[Key, T] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0
        self._handlers: list[Handler] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def _namespace(self) -> str | None:
        """lightkube spells "all namespaces" as `*`; cluster-scoped kinds take none."""
        if self.namespace is not None:
            return self.namespace
        return ALL_NS if issubclass(self.resource, NamespacedResource) else None

    def add_handler(self, handler: Handler) -> None:
        """Called for every change, after the cache holds it; handlers must not block."""
        self._handlers.append(handler)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_synced(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self.synced.wait()

    def get(self, name: str, namespace: str = "") -> T | None:
        return self.store.get((namespace, name))

    def items(self) -> Iterable[T]:
        return list(self.store.values())

    async def wait_for(self, predicate: Callable[[], R | None], timeout: float) -> R:
        """Wait on cache changes, not on a timer, until `predicate` returns an object."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                found = predicate()
                if found is not None:
                    return found
                await self._changed.wait()

    async def _run(self) -> None:
        failures = 0
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                failures = 0
            except ApiError as exc:
                if exc.status.code == GONE:
                    log.info("watch expired, relisting", extra={"informer": self.name})
                    need_list = True
                    self.relists += 1
                    continue
                failures += 1
                log.warning("watch failed", extra={"informer": self.name, "error": str(exc)})
            except (httpx.HTTPError, OSError) as exc:
                failures += 1
                log.warning("watch connection failed", extra={"informer": self.name, "error": str(exc)})
            except Exception as exc:
                # e.g. a bookmark of a kind with required fields that lightkube cannot decode:
                # resume from the last resourceVersion rather than let the cache go stale.
                failures += 1
                log.warning("watch stream failed", extra={"informer": self.name, "error": repr(exc)})
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1] if failures else 0)

    async def _list(self) -> None:
        resource: Any = self.resource
        listing = self.client.list(
            resource,
            namespace=self._namespace,
            labels=self.labels or None,
            fields=self.fields or None,
        )
        fresh: dict[Key, T] = {}
        async for obj in listing:
            drop_managed_fields(obj)
            fresh[key_of(obj)] = obj
        self.resource_version = listing.resourceVersion
        old, self.store = self.store, fresh
        for key, obj in fresh.items():
            previous = old.get(key)
            if previous is None:
                self._emit(Event.ADDED, obj)
            elif _version(previous) != _version(obj):
                self._emit(Event.MODIFIED, obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit(Event.DELETED, obj)
        self.synced.set()
        await self._notify()

    async def _watch(self) -> None:
        resource: Any = self.resource
        stream = self.client.watch(
            resource,
            namespace=self._namespace,
            labels=self.labels or None,
            fields=self.fields or None,
            resource_version=self.resource_version,
            server_timeout=WATCH_TIMEOUT_SECONDS,
        )
        async for kind, obj in stream:
            version = _version(obj)
            if version:
                self.resource_version = version
            if kind == "BOOKMARK":
                continue
            drop_managed_fields(obj)
            key = key_of(obj)
            if kind == "DELETED":
                self.store.pop(key, None)
                self._emit(Event.DELETED, obj)
            else:
                existed = key in self.store
                self.store[key] = obj
                self._emit(Event.MODIFIED if existed else Event.ADDED, obj)
            await self._notify()

    def _emit(self, event: Event, obj: T) -> None:
        for handler in self._handlers:
            try:
                handler(event, obj)
            except Exception:
                log.exception("informer handler failed", extra={"informer": self.name})

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def drop_managed_fields(obj: object) -> None:
    """Drop managedFields (server-side apply bookkeeping, often half an object) before caching, as
    controller-runtime does: no component reads it, and 10,000 cached objects would carry it all."""
    metadata = getattr(obj, "metadata", None)
    if metadata is not None and getattr(metadata, "managedFields", None):
        metadata.managedFields = None


def _version(obj: Any) -> str:
    metadata = getattr(obj, "metadata", None)
    return (getattr(metadata, "resourceVersion", None) or "") if metadata else ""
