"""What kube-controller-manager's PV controller does around an external provisioner, for tests.

- A pending claim whose StorageClass names a provisioner gets
  `volume.kubernetes.io/storage-provisioner` (and the beta key) — for `WaitForFirstConsumer` only
  once `volume.kubernetes.io/selected-node` is set — which is what tells the provisioner to act.
- A claim and the PV whose `claimRef` names it are bound: PV `status.phase=Bound`; claim
  `spec.volumeName`, the bind annotations, `status.phase=Bound`, `status.capacity`, `status.accessModes`.
- A PV whose claim is gone (or was replaced: another uid) becomes `Released`.
- Without kube-controller-manager, the pvc-/pv-protection finalizers a real API server adds are
  removed once nothing needs them, so deletions complete.

On the emulator this runs as a reconciler on its loop (`emulator.add_reconciler`); on a real
control plane with kube-controller-manager it does nothing (the real controller does it), and
without one it is a small HTTP poller thread.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from .client import KubeApiError
from .controlplane import KubeAPI
from .errors import ApiError
from .resources import REGISTRY, Obj
from .store import Change
from .verbs import Api

ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
KINDS = frozenset({"PersistentVolumeClaim", "PersistentVolume", "StorageClass"})

Mutation = Callable[[Obj], Obj | None]
"""Returns the changed copy, or None when the change no longer applies to the current object."""


@dataclass(frozen=True)
class Write:
    resource: str
    namespace: str
    name: str
    subresource: str
    mutate: Mutation


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.setdefault("metadata", {})
    return meta


def _class_of(pvc: Obj) -> str:
    spec_class = (pvc.get("spec") or {}).get("storageClassName")
    if spec_class is not None:
        return str(spec_class)
    return str((_meta(pvc).get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class", ""))


def _pending(pvc: Obj) -> bool:
    return not (pvc.get("spec") or {}).get("volumeName") and not _meta(pvc).get("deletionTimestamp")


def plan(pvcs: list[Obj], pvs: list[Obj], classes: list[Obj]) -> list[Write]:
    """The writes the PV controller would make now; each re-checks the object it is applied to."""
    writes: list[Write] = []
    by_class = {_meta(sc).get("name"): sc for sc in classes}
    claims = {(_meta(c).get("namespace", ""), _meta(c).get("name")): c for c in pvcs}
    for pvc in pvcs:
        meta = _meta(pvc)
        key = (meta.get("namespace", ""), str(meta.get("name")))
        if _pending(pvc):
            sc = by_class.get(_class_of(pvc))
            if sc is not None:
                writes.append(Write("persistentvolumeclaims", *key, "", _annotate_provisioner(sc)))
        if PVC_PROTECTION in (meta.get("finalizers") or []) and meta.get("deletionTimestamp"):
            writes.append(Write("persistentvolumeclaims", *key, "", _drop_finalizer(PVC_PROTECTION)))
    for pv in pvs:
        meta, spec = _meta(pv), pv.get("spec") or {}
        name = str(meta.get("name"))
        phase = (pv.get("status") or {}).get("phase")
        if PV_PROTECTION in (meta.get("finalizers") or []) and meta.get("deletionTimestamp") and phase != "Bound":
            writes.append(Write("persistentvolumes", "", name, "", _drop_finalizer(PV_PROTECTION)))
        ref = spec.get("claimRef")
        if not ref or phase in ("Released", "Failed"):
            continue
        claim = claims.get((ref.get("namespace", ""), ref.get("name")))
        if claim is None or (ref.get("uid") and _meta(claim).get("uid") != ref.get("uid")):
            writes.append(Write("persistentvolumes", "", name, "status", _set_phase("Released")))
            continue
        claim_key = (ref.get("namespace", ""), str(ref.get("name")))
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name and not _meta(claim).get("deletionTimestamp"):
            writes.append(Write("persistentvolumeclaims", *claim_key, "", _bind_claim(name)))
            writes.append(Write("persistentvolumeclaims", *claim_key, "status", _claim_bound(pv)))
        elif volume_name == name:
            if phase != "Bound":
                writes.append(Write("persistentvolumes", "", name, "status", _set_phase("Bound")))
            if (claim.get("status") or {}).get("phase") != "Bound":
                writes.append(Write("persistentvolumeclaims", *claim_key, "status", _claim_bound(pv)))
    return writes


def _annotate_provisioner(sc: Obj) -> Mutation:
    provisioner = sc.get("provisioner")
    delayed = sc.get("volumeBindingMode") == "WaitForFirstConsumer"

    def mutate(pvc: Obj) -> Obj | None:
        annotations = _meta(pvc).get("annotations") or {}
        if not _pending(pvc) or not provisioner or annotations.get(ANN_STORAGE_PROVISIONER) == provisioner:
            return None
        if delayed and not annotations.get(ANN_SELECTED_NODE):
            return None
        _meta(pvc)["annotations"] = {
            **annotations,
            ANN_STORAGE_PROVISIONER: provisioner,
            ANN_BETA_STORAGE_PROVISIONER: provisioner,
        }
        return pvc

    return mutate


def _bind_claim(pv_name: str) -> Mutation:
    def mutate(pvc: Obj) -> Obj | None:
        if (pvc.get("spec") or {}).get("volumeName") or _meta(pvc).get("deletionTimestamp"):
            return None
        pvc.setdefault("spec", {})["volumeName"] = pv_name
        annotations = _meta(pvc).get("annotations") or {}
        _meta(pvc)["annotations"] = {**annotations, ANN_BIND_COMPLETED: "yes", ANN_BOUND_BY_CONTROLLER: "yes"}
        return pvc

    return mutate


def _claim_bound(pv: Obj) -> Mutation:
    name = _meta(pv).get("name")
    spec = pv.get("spec") or {}

    def mutate(pvc: Obj) -> Obj | None:
        if (pvc.get("spec") or {}).get("volumeName") != name:
            return None
        status = pvc.get("status") or {}
        if status.get("phase") == "Bound":
            return None
        pvc["status"] = {
            **status,
            "phase": "Bound",
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": dict(spec.get("capacity") or {}),
        }
        return pvc

    return mutate


def _set_phase(phase: str) -> Mutation:
    def mutate(pv: Obj) -> Obj | None:
        status = pv.get("status") or {}
        if status.get("phase") == phase:
            return None
        pv["status"] = {**status, "phase": phase}
        return pv

    return mutate


def _drop_finalizer(finalizer: str) -> Mutation:
    def mutate(obj: Obj) -> Obj | None:
        finalizers = _meta(obj).get("finalizers") or []
        if finalizer not in finalizers:
            return None
        _meta(obj)["finalizers"] = [f for f in finalizers if f != finalizer]
        return obj

    return mutate


class PVBinder:
    """Binds claims to their provisioned PVs while started; see the module docstring."""

    def __init__(self, kube_api: KubeAPI, interval: float = 0.1) -> None:
        self.kube_api = kube_api
        self.interval = interval
        self._remove: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """False on a real control plane with kube-controller-manager: the real PV controller binds."""
        return self.kube_api.emulator is not None or not self.kube_api.has_controllers

    def start(self) -> Self:
        emulator = self.kube_api.emulator
        if emulator is not None:
            self._remove = emulator.add_reconciler(self._reconcile)
            emulator.call(lambda: self._sweep_emulator(emulator.api))  # objects that exist already
        elif not self.kube_api.has_controllers:
            self._thread = threading.Thread(target=self._poll, name="pv-binder", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- emulator: a reconciler on the emulator's loop ---------------------------------------------

    def _reconcile(self, change: Change, api: Api) -> None:
        if change.obj.obj.get("kind") in KINDS:
            self._sweep_emulator(api)

    @staticmethod
    def _sweep_emulator(api: Api) -> None:
        writes = plan(
            api.objects("persistentvolumeclaims"),
            api.objects("persistentvolumes"),
            api.objects("storageclasses.storage.k8s.io"),
        )
        for write in writes:
            rt = REGISTRY.resolve(write.resource)
            current = api.store.get(rt.storage_key, (write.namespace, write.name))
            if current is None:
                continue
            changed = write.mutate(copy.deepcopy(current.obj))
            if changed is not None:
                with contextlib.suppress(ApiError):  # changed meanwhile: the next commit brings us back
                    api.apply_update(rt, current, changed, subresource=write.subresource)

    # -- real control plane without kube-controller-manager: poll over HTTP ------------------------

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, KubeApiError):
                self._sweep_http()

    def _sweep_http(self) -> None:
        api = self.kube_api
        items: dict[str, list[Obj]] = {
            resource: api.list(resource)["items"]
            for resource in ("persistentvolumeclaims", "persistentvolumes", "storageclasses.storage.k8s.io")
        }
        writes = plan(
            items["persistentvolumeclaims"], items["persistentvolumes"], items["storageclasses.storage.k8s.io"]
        )
        for write in writes:
            namespace = write.namespace or None
            current: Any = api.get_or_none(write.resource, write.name, namespace)
            if current is None:
                continue
            changed = write.mutate(copy.deepcopy(current))
            if changed is not None:
                with contextlib.suppress(KubeApiError):  # 409: stale; the next sweep retries
                    api.update(changed, subresource=write.subresource)
