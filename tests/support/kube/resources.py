"""The kinds the emulator serves and how each behaves on a real API server.

Everything per-kind that the generic verbs need (scope, subresources, name
format, selectable fields, deletion defaults) lives here so that the verbs stay
kind-agnostic, like the generic registry of kube-apiserver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
FieldGetter = Callable[[Obj], str]


def _path(*keys: str) -> FieldGetter:
    """Return a getter reading a nested string field ("" when absent), as field selectors do."""

    def get(obj: Obj) -> str:
        cur: Any = obj
        for key in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(key)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (group/version/plural) with the behaviour of its registry strategy."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    status: bool = False
    """Has a ``/status`` subresource; the main endpoint then ignores ``.status``."""
    log: bool = False
    name_format: str = "subdomain"
    """``subdomain`` (RFC 1123), ``label`` (RFC 1123 label) or ``dns1035``."""
    fields: Mapping[str, FieldGetter] = field(default_factory=dict)
    """Selectable fields besides ``metadata.name``/``metadata.namespace``."""
    tracks_generation: bool = False
    create_on_update: bool = False
    """PUT of a missing object creates it (leases, events)."""
    return_deleted_object: bool = False
    """DELETE answers with the object instead of a ``Status`` (ReturnDeletedObject)."""
    orphan_by_default: bool = False
    """Default GC policy is OrphanDependents (batch/v1 jobs keep their pods)."""
    graceful: bool = False
    """Supports graceful deletion (pods)."""
    keeps_status_on_create: bool = False
    """Status given on create is stored (nodes); other kinds with /status reset it."""
    storage: str = ""
    """Storage shared with another resource (events.k8s.io events are core events)."""
    collection_delete: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural`` for core kinds, ``plural.group`` otherwise (kubectl's spelling)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> str:
        return self.storage or self.qualified

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def verbs(self) -> list[str]:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        if self.collection_delete:
            verbs.insert(1, "deletecollection")
        return verbs


_EVENT_FIELDS: dict[str, FieldGetter] = {
    "involvedObject.kind": _path("involvedObject", "kind"),
    "involvedObject.namespace": _path("involvedObject", "namespace"),
    "involvedObject.name": _path("involvedObject", "name"),
    "involvedObject.uid": _path("involvedObject", "uid"),
    "involvedObject.apiVersion": _path("involvedObject", "apiVersion"),
    "involvedObject.resourceVersion": _path("involvedObject", "resourceVersion"),
    "involvedObject.fieldPath": _path("involvedObject", "fieldPath"),
    "reason": _path("reason"),
    "reportingComponent": _path("reportingComponent"),
    "source": _path("source", "component"),
    "type": _path("type"),
}

# events.k8s.io/v1 shares storage with core events; its field labels are the
# v1 names, converted to the core ones (pkg/apis/events/v1 conversion).
_EVENTS_V1_FIELDS: dict[str, FieldGetter] = {
    **{k.replace("involvedObject", "regarding"): v for k, v in _EVENT_FIELDS.items() if "involved" in k},
    "reason": _EVENT_FIELDS["reason"],
    "reportingController": _EVENT_FIELDS["reportingComponent"],
    "deprecatedSource": _EVENT_FIELDS["source"],
    "type": _EVENT_FIELDS["type"],
}

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        "pod",
        ("po",),
        status=True,
        log=True,
        graceful=True,
        return_deleted_object=True,
        fields={
            "spec.nodeName": _path("spec", "nodeName"),
            "spec.restartPolicy": _path("spec", "restartPolicy"),
            "spec.schedulerName": _path("spec", "schedulerName"),
            "spec.serviceAccountName": _path("spec", "serviceAccountName"),
            "spec.hostNetwork": lambda o: "true" if o.get("spec", {}).get("hostNetwork") else "false",
            "status.phase": _path("status", "phase"),
            "status.podIP": _path("status", "podIP"),
            "status.nominatedNodeName": _path("status", "nominatedNodeName"),
        },
    ),
    ResourceType(
        "",
        "v1",
        "secrets",
        "Secret",
        True,
        "secret",
        fields={"type": _path("type")},
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        True,
        "event",
        ("ev",),
        fields=_EVENT_FIELDS,
        create_on_update=True,
    ),
    ResourceType(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        True,
        "serviceaccount",
        ("sa",),
        return_deleted_object=True,
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        True,
        "service",
        ("svc",),
        status=True,
        name_format="dns1035",
        return_deleted_object=True,
        collection_delete=False,
    ),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        "persistentvolumeclaim",
        ("pvc",),
        status=True,
        return_deleted_object=True,
    ),
    ResourceType(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        False,
        "persistentvolume",
        ("pv",),
        status=True,
        return_deleted_object=True,
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        False,
        "node",
        ("no",),
        status=True,
        keeps_status_on_create=True,
        fields={"spec.unschedulable": lambda o: "true" if o.get("spec", {}).get("unschedulable") else "false"},
    ),
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        "namespace",
        ("ns",),
        status=True,
        name_format="label",
        fields={"status.phase": _path("status", "phase")},
        return_deleted_object=True,
        collection_delete=False,
    ),
    ResourceType(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        False,
        "storageclass",
        ("sc",),
        return_deleted_object=True,
    ),
    ResourceType(
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        False,
        "csidriver",
        return_deleted_object=True,
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        True,
        "lease",
        create_on_update=True,
    ),
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "Job",
        True,
        "job",
        status=True,
        tracks_generation=True,
        orphan_by_default=True,
    ),
    ResourceType(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        False,
        "priorityclass",
        ("pc",),
    ),
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        "event",
        ("ev",),
        fields=_EVENTS_V1_FIELDS,
        create_on_update=True,
        storage="events",
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        "mutatingwebhookconfiguration",
        tracks_generation=True,
    ),
)


class Registry:
    """Look-ups over :data:`RESOURCES` by path, by kind and by the names tests use."""

    def __init__(self, resources: tuple[ResourceType, ...] = RESOURCES) -> None:
        self.resources = resources
        self._by_path = {(r.group, r.version, r.plural): r for r in resources}
        self._by_kind = {(r.api_version, r.kind): r for r in resources}
        self._by_name: dict[str, ResourceType] = {}
        # Core first so that a bare "events" means core/v1 events, as in kubectl.
        for r in sorted(resources, key=lambda r: r.group != ""):
            for alias in (
                r.qualified,
                f"{r.plural}.{r.version}.{r.group}" if r.group else "",
                r.plural,
                r.singular,
                *r.short_names,
            ):
                if alias:
                    self._by_name.setdefault(alias, r)

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def resolve(self, name: str) -> ResourceType:
        """Resolve ``pods``, ``po``, ``leases.coordination.k8s.io``, ... or raise ``KeyError``."""
        return self._by_name[name]

    def group_versions(self) -> dict[str, list[ResourceType]]:
        """Served resources by API group ("" is the legacy core group)."""
        out: dict[str, list[ResourceType]] = {}
        for r in self.resources:
            out.setdefault(r.group, []).append(r)
        return out

    def storage_peers(self, storage_key: str) -> list[ResourceType]:
        return [r for r in self.resources if r.storage_key == storage_key]


REGISTRY = Registry()
