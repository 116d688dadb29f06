"""Emulated control-plane loops: garbage collector, namespace lifecycle and kubelet pod deletion.

A real cluster runs these in kube-controller-manager and the kubelet; the
emulator runs them on its event loop, after each commit (never inside it),
through the same verbs as HTTP clients, so clients observe the same sequence of
watch events as against a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable

from .errors import ApiError
from .resources import Obj, Registry, ResourceType
from .store import Change, Key, Stored
from .verbs import Api, DeleteOptions

Reconciler = Callable[[Change, Api], None]


class Controllers:
    """Reacts to committed changes; GC and namespace deletion only when ``enabled``."""

    def __init__(self, api: Api, registry: Registry, loop: asyncio.AbstractEventLoop, enabled: bool) -> None:
        self.api = api
        self.registry = registry
        self.loop = loop
        self.enabled = enabled
        self.kubelets: dict[str, float] = {}
        """Node name (or "*") -> seconds after which the emulated kubelet confirms a pod deletion."""
        self.reconcilers: list[Reconciler] = []
        api.store.listeners.append(self._on_change)

    def _on_change(self, change: Change) -> None:
        self.loop.call_soon(self._handle, change)

    def _rt(self, storage: str) -> ResourceType:
        return self.registry.storage_peers(storage)[0]

    def _handle(self, change: Change) -> None:
        for reconciler in list(self.reconcilers):
            reconciler(change, self.api)
        rt = self._rt(change.storage)
        obj = change.obj.obj
        meta = obj["metadata"]
        if rt.qualified == "pods" and change.type == "MODIFIED":
            self._kubelet(obj)
        if not self.enabled:
            return
        try:
            if change.type == "DELETED":
                self._after_delete(rt, obj)
                return
            finalizers = meta.get("finalizers") or []
            if meta.get("deletionTimestamp"):
                if "orphan" in finalizers:
                    self._orphan(change.obj)
                if "foregroundDeletion" in finalizers:
                    self._delete_dependents(change.obj)
                if rt.qualified == "namespaces":
                    self._sync_namespace(meta["name"], sweep=True)
            if meta.get("ownerReferences"):
                self._collect(rt.storage_key, change.obj.key)
        except ApiError:
            pass  # the object changed or vanished meanwhile; a later change brings us back

    # --- garbage collector ---------------------------------------------------------
    def _dangling(self, ref: Obj) -> bool:
        """An owner is gone if its kind is served and no object has its uid (unknown kinds never are)."""
        known = self.registry.by_kind(str(ref.get("apiVersion")), str(ref.get("kind"))) is not None
        return known and self.api.store.by_uid_lookup(str(ref.get("uid"))) is None

    def _collect(self, storage: str, key: Key) -> None:
        """Delete a dependent whose owners are all gone, or drop its dangling references."""
        stored = self.api.store.get(storage, key)
        if stored is None:
            return
        rt = self._rt(storage)
        meta = stored.obj["metadata"]
        refs = meta.get("ownerReferences") or []
        solid = [r for r in refs if not self._dangling(r)]
        if not solid:
            if not meta.get("deletionTimestamp"):
                self.api.delete(
                    rt,
                    meta.get("namespace", ""),
                    meta["name"],
                    DeleteOptions(propagation_policy="Background", preconditions={"uid": meta["uid"]}),
                )
        elif len(solid) < len(refs):
            self._set_owner_refs(rt, stored, solid)

    def _set_owner_refs(self, rt: ResourceType, stored: Stored, refs: list[Obj]) -> None:
        new = copy.deepcopy(stored.obj)
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences")
        self.api.apply_update(rt, stored, new)

    def _remove_finalizer(self, stored: Stored, finalizer: str) -> None:
        rt = self._rt(self._storage_of(stored))
        new = copy.deepcopy(stored.obj)
        new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
        self.api.apply_update(rt, stored, new)

    def _storage_of(self, stored: Stored) -> str:
        return self.api.store.by_uid[stored.obj["metadata"]["uid"]][0]

    def _dependents(self, uid: str) -> list[tuple[str, Stored]]:
        out = []
        for storage, key in sorted(self.api.store.dependents.get(uid, ())):
            stored = self.api.store.get(storage, key)
            if stored is not None:
                out.append((storage, stored))
        return out

    def _orphan(self, owner: Stored) -> None:
        uid = owner.obj["metadata"]["uid"]
        for storage, dep in self._dependents(uid):
            refs = [r for r in dep.obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            self._set_owner_refs(self._rt(storage), dep, refs)
        current = self.api.store.by_uid_lookup(uid)
        if current is not None:
            self._remove_finalizer(current, "orphan")

    def _delete_dependents(self, owner: Stored) -> None:
        uid = owner.obj["metadata"]["uid"]
        for storage, dep in self._dependents(uid):
            meta = dep.obj["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            refs = meta.get("ownerReferences") or []
            blocking = any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs)
            self.api.delete(
                self._rt(storage),
                meta.get("namespace", ""),
                meta["name"],
                DeleteOptions(
                    propagation_policy="Foreground" if blocking else "Background", preconditions={"uid": meta["uid"]}
                ),
            )
        self._finish_foreground(uid)

    def _finish_foreground(self, uid: str) -> None:
        """Drop ``foregroundDeletion`` once no dependent blocks the owner's deletion."""
        owner = self.api.store.by_uid_lookup(uid)
        if owner is None or "foregroundDeletion" not in (owner.obj["metadata"].get("finalizers") or []):
            return
        for _, dep in self._dependents(uid):
            if any(
                r.get("uid") == uid and r.get("blockOwnerDeletion")
                for r in dep.obj["metadata"].get("ownerReferences") or []
            ):
                return
        self._remove_finalizer(owner, "foregroundDeletion")

    def _after_delete(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        for storage, dep in self._dependents(meta["uid"]):
            self._collect(storage, dep.key)
        for ref in meta.get("ownerReferences") or []:
            self._finish_foreground(str(ref.get("uid")))
        if rt.namespaced:
            self._sync_namespace(meta["namespace"], sweep=False)

    # --- namespace lifecycle ------------------------------------------------------------
    def _sync_namespace(self, name: str, sweep: bool) -> None:
        """Delete a terminating namespace's content; purge the namespace once it is empty."""
        ns_rt = self.registry.resolve("namespaces")
        ns = self.api.store.get(ns_rt.storage_key, ("", name))
        if ns is None or not ns.obj["metadata"].get("deletionTimestamp"):
            return
        storages = {r.storage_key: r for r in reversed(self.registry.resources) if r.namespaced}
        if sweep:
            for storage, rt in storages.items():
                for stored in list(self.api.store.table(storage).by_ns.get(name, {}).values()):
                    if not stored.obj["metadata"].get("deletionTimestamp"):
                        self.api.delete(rt, name, stored.obj["metadata"]["name"], DeleteOptions())
        if any(self.api.store.table(s).by_ns.get(name) for s in storages):
            return
        ns = self.api.store.get(ns_rt.storage_key, ("", name))
        if ns is None:
            return
        if (ns.obj.get("spec") or {}).get("finalizers"):
            self.api.apply_update(ns_rt, ns, {**ns.obj, "spec": {}}, subresource="finalize")
        if self.api.store.get(ns_rt.storage_key, ("", name)) is not None:
            self.api.delete(ns_rt, "", name, DeleteOptions())

    # --- kubelet ---------------------------------------------------------------------------
    def _kubelet(self, pod: Obj) -> None:
        """A running kubelet confirms a graceful pod deletion with a grace-0 delete once containers stop."""
        meta, node = pod["metadata"], (pod.get("spec") or {}).get("nodeName")
        if not meta.get("deletionTimestamp") or not meta.get("deletionGracePeriodSeconds") or not node:
            return
        delay = self.kubelets.get(node, self.kubelets.get("*"))
        if delay is not None:
            self.loop.call_later(delay, self._confirm_deletion, meta["namespace"], meta["name"], meta["uid"])

    def _confirm_deletion(self, namespace: str, name: str, uid: str) -> None:
        pods = self.registry.resolve("pods")
        with contextlib.suppress(ApiError):  # already gone, or replaced by a new pod of the same name
            self.api.delete(pods, namespace, name, DeleteOptions(grace_period_seconds=0, preconditions={"uid": uid}))
