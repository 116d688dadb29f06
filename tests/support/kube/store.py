"""Object storage: one global resourceVersion, per-resource tables, indexes and history.

Plays the part of etcd plus the watch cache. Stored objects are never mutated
after they are written (writers always store a new dict), so reads, lists and
watch fan-out share them without copying, and each object's JSON is encoded at
most once per API version.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from . import conversion
from .errors import expired
from .resources import FieldGetter, Obj, ResourceType

Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""


class Stored:
    """One immutable object version with its lazily encoded JSON per served API version."""

    __slots__ = ("_raw", "obj")

    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        self._raw: dict[str, bytes] = {}

    @property
    def key(self) -> Key:
        meta = self.obj["metadata"]
        return meta.get("namespace", ""), meta["name"]

    @property
    def rv(self) -> int:
        return int(self.obj["metadata"]["resourceVersion"])

    def raw(self, view: ResourceType) -> bytes:
        cached = self._raw.get(view.qualified)
        if cached is None:
            cached = json.dumps(conversion.to_view(view, self.obj), separators=(",", ":")).encode()
            self._raw[view.qualified] = cached
        return cached

    def view(self, view: ResourceType) -> Obj:
        return conversion.to_view(view, self.obj)


@dataclass(slots=True)
class Change:
    """A committed write, as kept in history and fanned out to watchers."""

    rv: int
    storage: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Stored
    prev: Stored | None


class Listener(Protocol):
    """A watch: fed every change of its storage, closed when the emulator ends all streams."""

    def offer(self, change: Change) -> None: ...

    def close(self) -> None: ...


IndexKey = tuple[str, str]
"""(field, value) a watch selects exactly on, e.g. ("spec.nodeName", "node-1")."""


class Watchers:
    """Watches of one storage key, indexed by an exact field value so a write reaches only candidates.

    kube-apiserver's watch cache does the same for pods' spec.nodeName (trigger functions);
    without it every write would run every watch's selectors.
    """

    def __init__(self) -> None:
        self.unindexed: set[Listener] = set()
        self.indexed: dict[IndexKey, set[Listener]] = {}
        self.getters: dict[str, FieldGetter] = {}
        self._keys: dict[Listener, IndexKey] = {}

    def add(self, watcher: Listener, index: tuple[str, str, FieldGetter] | None) -> None:
        if index is None:
            self.unindexed.add(watcher)
            return
        field, value, getter = index
        self.getters.setdefault(field, getter)
        self.indexed.setdefault((field, value), set()).add(watcher)
        self._keys[watcher] = (field, value)

    def discard(self, watcher: Listener) -> None:
        self.unindexed.discard(watcher)
        key = self._keys.pop(watcher, None)
        if key is not None:
            group = self.indexed.get(key)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self.indexed[key]

    def candidates(self, change: Change) -> list[Listener]:
        found = list(self.unindexed)
        if self.indexed:
            extra: set[Listener] = set()
            for field, getter in self.getters.items():
                for stored in (change.obj, change.prev):
                    if stored is not None:
                        extra.update(self.indexed.get((field, getter(stored.obj)), ()))
            found.extend(extra)
        return found

    def all(self) -> list[Listener]:
        return [*self.unindexed, *self._keys]


class Table:
    """Objects of one storage key with a namespace index and a cached sort order."""

    def __init__(self) -> None:
        self.items: dict[Key, Stored] = {}
        self.by_ns: dict[str, dict[str, Stored]] = {}
        self._sorted: list[Key] | None = None

    def set(self, stored: Stored) -> None:
        key = stored.key
        if key not in self.items:
            self._sorted = None
        self.items[key] = stored
        self.by_ns.setdefault(key[0], {})[key[1]] = stored

    def drop(self, key: Key) -> None:
        del self.items[key]
        names = self.by_ns[key[0]]
        del names[key[1]]
        if not names:
            del self.by_ns[key[0]]
        self._sorted = None

    def ordered(self, namespace: str | None) -> list[Stored]:
        """Objects in etcd key order (namespace, then name)."""
        if namespace is not None:
            names = self.by_ns.get(namespace, {})
            return [names[n] for n in sorted(names)]
        if self._sorted is None:
            self._sorted = sorted(self.items)
        return [self.items[k] for k in self._sorted]


class Store:
    """All objects, the global resourceVersion counter and a bounded change history."""

    def __init__(self, history_size: int) -> None:
        self.rv = 0
        self.tables: dict[str, Table] = {}
        self.by_uid: dict[str, tuple[str, Key]] = {}
        self.dependents: dict[str, set[tuple[str, Key]]] = {}
        self.watchers: dict[str, Watchers] = {}
        self.listeners: list[Callable[[Change], None]] = []
        self.history_size = history_size
        self._history: list[Change] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.compacted = 0
        """Changes with rv <= compacted are gone: watching or listing from there is 410 Expired."""

    def table(self, storage: str) -> Table:
        table = self.tables.get(storage)
        if table is None:
            table = self.tables[storage] = Table()
        return table

    def get(self, storage: str, key: Key) -> Stored | None:
        table = self.tables.get(storage)
        return table.items.get(key) if table else None

    def by_uid_lookup(self, uid: str) -> Stored | None:
        where = self.by_uid.get(uid)
        return self.get(*where) if where else None

    def put(self, storage: str, obj: Obj, prev: Stored | None) -> Stored:
        """Store a new version of ``obj`` (owned by the store from now on) under the next RV."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        stored = Stored(obj)
        self.table(storage).set(stored)
        uid = obj["metadata"]["uid"]
        self.by_uid[uid] = (storage, stored.key)
        self._index_owners(storage, stored.key, prev.obj if prev else None, obj)
        self._commit(Change(self.rv, storage, "MODIFIED" if prev else "ADDED", stored, prev))
        return stored

    def remove(self, storage: str, prev: Stored) -> Stored:
        """Delete ``prev``; the returned final state carries the deletion RV, as in a DELETED event."""
        self.rv += 1
        obj = dict(prev.obj)
        obj["metadata"] = {**prev.obj["metadata"], "resourceVersion": str(self.rv)}
        stored = Stored(obj)
        self.table(storage).drop(prev.key)
        self.by_uid.pop(obj["metadata"]["uid"], None)
        self._index_owners(storage, prev.key, prev.obj, None)
        self._commit(Change(self.rv, storage, "DELETED", stored, prev))
        return stored

    def _index_owners(self, storage: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        before = {r.get("uid") for r in (old or {}).get("metadata", {}).get("ownerReferences") or []}
        after = {r.get("uid") for r in (new or {}).get("metadata", {}).get("ownerReferences") or []}
        for uid in before - after:
            deps = self.dependents.get(str(uid))
            if deps is not None:
                deps.discard((storage, key))
                if not deps:
                    del self.dependents[str(uid)]
        for uid in after - before:
            self.dependents.setdefault(str(uid), set()).add((storage, key))

    def _commit(self, change: Change) -> None:
        history = self._history
        history.append(change)
        if len(history) > 2 * self.history_size:
            drop = len(history) - self.history_size
            self.compacted = history[drop - 1].rv
            del history[:drop]
        if self._waiters:
            for _, future in [w for w in self._waiters if w[0] <= self.rv]:
                if not future.done():
                    future.set_result(None)
            self._waiters = [w for w in self._waiters if w[0] > self.rv]
        watchers = self.watchers.get(change.storage)
        if watchers is not None:
            for watcher in watchers.candidates(change):
                watcher.offer(change)
        for listener in self.listeners:
            listener(change)

    def reached(self, rv: int) -> asyncio.Future[None]:
        """Resolves once the store's resourceVersion is at least ``rv`` (must run on the store's loop)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.rv >= rv:
            future.set_result(None)
        else:
            self._waiters.append((rv, future))
        return future

    def compact(self) -> None:
        """Forget all history, like an etcd compaction at the current revision."""
        self._history.clear()
        self.compacted = self.rv

    def changes_since(self, rv: int, storage: str, too_old: str) -> list[Change]:
        """Changes of ``storage`` after ``rv``; 410 Expired (``too_old`` message) if compacted away."""
        if rv < self.compacted:
            raise expired(too_old)
        start = bisect.bisect_right(self._history, rv, key=lambda c: c.rv)
        return [c for c in self._history[start:] if c.storage == storage]

    def snapshot(self, storage: str, namespace: str | None, rv: int, too_old: str) -> list[Stored]:
        """The objects of ``storage`` as they were at ``rv`` (rolled back through history)."""
        table = self.table(storage)
        if rv >= self.rv:
            return table.ordered(namespace)
        changes = self.changes_since(rv, storage, too_old)
        items = {s.key: s for s in table.ordered(namespace)}
        for change in reversed(changes):
            key = change.obj.key
            if namespace is not None and key[0] != namespace:
                continue
            if change.type == "ADDED":
                items.pop(key, None)
            elif change.prev is not None:
                items[key] = change.prev
        return [items[k] for k in sorted(items)]

    def subscribe(self, storage: str, watcher: Listener, index: tuple[str, str, FieldGetter] | None = None) -> None:
        """Feed ``watcher`` the changes of ``storage``; ``index`` narrows it to one exact field value."""
        self.watchers.setdefault(storage, Watchers()).add(watcher, index)

    def unsubscribe(self, storage: str, watcher: Listener) -> None:
        watchers = self.watchers.get(storage)
        if watchers is not None:
            watchers.discard(watcher)

    def all_watchers(self) -> Iterable[Listener]:
        for watchers in list(self.watchers.values()):
            yield from watchers.all()
