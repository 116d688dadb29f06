"""The semantics of the REST verbs, shared by the HTTP layer and the emulated controllers.

This is the generic registry of kube-apiserver in small: optimistic
concurrency, system metadata, generateName, namespace lifecycle admission,
status subresource rules, finalizers, graceful deletion, GC finalizers for
propagation policies and list consistency (resourceVersion, pagination).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import conversion, strategies
from .errors import (
    STALE,
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    too_large_rv,
)
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import REGISTRY, Obj, Registry, ResourceType
from .selectors import FieldSelector, LabelSelector, field_getters
from .store import Key, Store, Stored

Result = Stored | Obj
"""A stored object (encoded from cache) or a body built for this response (Status, dry-run)."""

GC_FINALIZERS = ("orphan", "foregroundDeletion")
UNDELETABLE_NAMESPACES = frozenset(("default", "kube-system", "kube-public"))
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of "
    "the results. Continuing with the provided token results in an inconsistent list - objects that were "
    "created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
)
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def timestamp(at: datetime | None = None) -> str:
    """RFC 3339 with second precision, as metav1.Time marshals."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    orphan_dependents: bool | None = None
    preconditions: Obj = field(default_factory=dict)
    dry_run: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str], body: Obj | None) -> DeleteOptions:
        """Merge query parameters and a DeleteOptions body (the body wins, as in the real handler)."""
        body = body or {}
        opts = cls()
        grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if grace is not None:
            try:
                opts.grace_period_seconds = int(grace)
            except (TypeError, ValueError) as exc:
                raise bad_request(f"invalid gracePeriodSeconds: {grace!r}") from exc
        opts.propagation_policy = body.get("propagationPolicy", query.get("propagationPolicy"))
        orphan = body.get("orphanDependents", query.get("orphanDependents"))
        if orphan is not None:
            opts.orphan_dependents = orphan in (True, "true", "True", "1")
        if opts.propagation_policy not in (None, "Orphan", "Background", "Foreground"):
            raise invalid_delete_options(
                FieldError(
                    "NotSupported",
                    "propagationPolicy",
                    'supported values: "Foreground", "Background", "Orphan", "nil"',
                    opts.propagation_policy,
                )
            )
        if opts.propagation_policy is not None and opts.orphan_dependents is not None:
            raise invalid_delete_options(
                FieldError(
                    "Invalid",
                    "propagationPolicy",
                    "orphanDependents and deletionPropagation cannot be both set",
                    opts.propagation_policy,
                )
            )
        opts.preconditions = body.get("preconditions") or {}
        dry = body.get("dryRun") or query.get("dryRun")
        opts.dry_run = bool(dry)
        return opts


def invalid_delete_options(error: FieldError) -> ApiError:
    return ApiError(
        422,
        f'DeleteOptions.meta.k8s.io "" is invalid: {error.field}: {error.body()}',
        "Invalid",
        {"group": "meta.k8s.io", "kind": "DeleteOptions", "causes": [error.cause()]},
    )


@dataclass
class ListOptions:
    label: LabelSelector
    field: FieldSelector
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""

    @classmethod
    def parse(cls, rt: ResourceType, query: Mapping[str, str]) -> ListOptions:
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise bad_request(f"invalid limit: {query.get('limit')!r}") from exc
        return cls(
            LabelSelector(query.get("labelSelector")),
            FieldSelector(query.get("fieldSelector"), field_getters(rt.fields, rt.namespaced)),
            limit=max(limit, 0),
            continue_token=query.get("continue", ""),
            resource_version=query.get("resourceVersion", ""),
            resource_version_match=query.get("resourceVersionMatch", ""),
        )

    def matches(self, obj: Obj) -> bool:
        return self.label.matches(obj) and self.field.matches(obj)


@dataclass
class ListResult:
    items: list[Stored]
    resource_version: int
    continue_token: str = ""
    remaining: int | None = None


def parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise bad_request(f'resourceVersion: Invalid value: "{text}": must be a valid unsigned integer') from exc
    if value < 0:
        raise bad_request(f'resourceVersion: Invalid value: "{text}": must be a valid unsigned integer')
    return value


class Api:
    """Verb implementations over a :class:`Store`; raises :class:`ApiError` like the real server."""

    def __init__(self, store: Store, registry: Registry = REGISTRY) -> None:
        self.store = store
        self.registry = registry

    # --- strategies.Context ------------------------------------------------
    def objects(self, qualified: str) -> list[Obj]:
        return [s.obj for s in self.store.table(self.registry.resolve(qualified).storage_key).items.values()]

    def lookup(self, qualified: str, namespace: str, name: str) -> Obj | None:
        stored = self.store.get(self.registry.resolve(qualified).storage_key, (namespace, name))
        return stored.obj if stored else None

    # --- reads ----------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> Stored:
        stored = self.store.get(rt.storage_key, (namespace, name))
        if stored is None:
            raise not_found(rt, name)
        return stored

    def list_objects(self, rt: ResourceType, namespace: str | None, opts: ListOptions) -> ListResult:
        rv_text, match = opts.resource_version, opts.resource_version_match
        if match and not rv_text:
            raise bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
            )
        if match not in ("", "Exact", "NotOlderThan"):
            raise bad_request(
                f'resourceVersionMatch: Unsupported value: "{match}": supported values: "Exact", "NotOlderThan", ""'
            )
        if opts.continue_token and (rv_text or match):
            raise bad_request(
                "resourceVersion: Forbidden: specifying resource version is not allowed when using continue"
            )
        if match == "Exact" and rv_text == "0":
            raise bad_request(
                'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
            )
        start: Key | None = None
        if opts.continue_token:
            at, start = self._decode_continue(opts.continue_token)
            items = self.store.snapshot(rt.storage_key, namespace, at, _CONTINUE_TOO_OLD)
        else:
            at = self.store.rv
            if rv_text and rv_text != "0":
                requested = parse_rv(rv_text)
                if requested > self.store.rv:
                    raise too_large_rv(requested, self.store.rv)
                if match == "Exact":
                    at = requested
            items = self.store.snapshot(
                rt.storage_key, namespace, at, "The resourceVersion for the provided list is too old."
            )
        if opts.label or opts.field:
            items = [s for s in items if opts.matches(s.obj)]
        if start is not None:
            items = [s for s in items if s.key > start]
        # Served from the watch cache, resourceVersion=0 ignores limit like kube-apiserver 1.31.
        if not opts.limit or rv_text == "0" or len(items) <= opts.limit:
            return ListResult(items, at)
        page = items[: opts.limit]
        token = self._encode_continue(at, page[-1].key)
        remaining = None if (opts.label or opts.field) else len(items) - len(page)
        return ListResult(page, at, token, remaining)

    @staticmethod
    def _encode_continue(rv: int, key: Key) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{key[0]}/{key[1]}\x00"})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, Key]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            namespace, _, name = str(data["start"]).rstrip("\x00").partition("/")
            if data.get("v") != "meta.k8s.io/v1":
                raise ValueError("unsupported version")
            return int(data["rv"]), (namespace, name)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise bad_request(f"continue key is not valid: {exc}") from exc

    # --- writes ---------------------------------------------------------------
    def _decode(self, rt: ResourceType, body: Any) -> Obj:
        """Check the body's type against the endpoint and return its stored form."""
        if not isinstance(body, dict):
            raise bad_request(
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json (decoding {type(body).__name__} as {rt.kind})"
            )
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version not in (None, "", rt.api_version) or kind not in (None, "", rt.kind):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
                if api_version not in (None, "", rt.api_version)
                else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        obj = {"apiVersion": rt.api_version, "kind": rt.kind, **body}
        meta = obj.get("metadata")
        if meta is None:
            obj["metadata"] = {}
        elif not isinstance(meta, dict):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: metadata must be an object'
            )
        obj["metadata"] = dict(obj["metadata"])
        return conversion.to_storage(rt, obj)

    def _scope(self, rt: ResourceType, meta: Obj, namespace: str) -> None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        given = meta.get("namespace")
        if given and given != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        """NamespaceLifecycle admission: no creates in missing or terminating namespaces."""
        ns_rt = self.registry.resolve("namespaces")
        ns = self.store.get(ns_rt.storage_key, ("", namespace))
        if ns is None:
            raise not_found(ns_rt, namespace)
        if ns.obj["metadata"].get("deletionTimestamp"):
            why = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise forbidden(
                rt, name, why, [{"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"}]
            )

    def _generate_name(self, rt: ResourceType, namespace: str, base: str) -> str:
        limit = 63 if rt.name_format != "subdomain" else 253
        base = base[: limit - 5]
        while True:
            name = base + "".join(random.choices(_NAME_CHARS, k=5))
            if self.store.get(rt.storage_key, (namespace, name)) is None:
                return name

    def create(self, rt: ResourceType, namespace: str, body: Any, dry_run: bool = False) -> Result:
        obj = self._decode(rt, body)
        meta = obj["metadata"]
        self._scope(rt, meta, namespace)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        name = meta.get("name") or ""
        if not name:
            if not meta.get("generateName"):
                raise invalid(rt, "", [FieldError("Required", "metadata.name", "name or generateName is required")])
            name = meta["name"] = self._generate_name(rt, namespace, str(meta["generateName"]))
        errors = strategies.name_errors(rt, name)
        if errors:
            raise invalid(rt, name, errors)
        if rt.namespaced:
            self._check_namespace(rt, namespace, name)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        if rt.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        errors = strategies.prepare_create(rt, obj, self)
        if errors:
            raise invalid(rt, name, errors)
        if self.store.get(rt.storage_key, (meta.get("namespace", ""), name)) is not None:
            raise already_exists(rt, name)
        if dry_run:
            return conversion.to_view(rt, obj)
        return self.store.put(rt.storage_key, obj, None)

    def update(
        self, rt: ResourceType, namespace: str, name: str, body: Any, *, subresource: str = "", dry_run: bool = False
    ) -> tuple[Result, bool]:
        """PUT; returns (result, created) since leases and events may be created by PUT."""
        obj = self._decode(rt, body)
        meta = obj["metadata"]
        if meta.get("name", "") != name:
            raise bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match the name on the URL ({name})"
            )
        self._scope(rt, meta, namespace)
        cur = self.store.get(rt.storage_key, (namespace if rt.namespaced else "", name))
        if cur is None:
            if rt.create_on_update and not subresource and not meta.get("resourceVersion"):
                return self.create(rt, namespace, conversion.to_view(rt, obj), dry_run), True
            raise not_found(rt, name)
        return self.apply_update(rt, cur, obj, subresource=subresource, dry_run=dry_run), False

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Result:
        if content_type == "application/apply-patch+yaml":
            raise ApiError(415, "the emulator does not implement server-side apply (application/apply-patch+yaml)")
        if content_type not in PATCH_TYPES:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(PATCH_TYPES)}, application/apply-patch+yaml",
            )
        cur = self.get(rt, namespace if rt.namespaced else "", name)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from exc
        base = copy.deepcopy(cur.view(rt))
        try:
            if content_type == "application/json-patch+json":
                result = json_patch(base, doc)
            elif not isinstance(doc, dict):
                raise bad_request("patch must be a JSON object")
            elif content_type == "application/merge-patch+json":
                result = merge_patch(base, doc)
            else:
                result = strategic_merge_patch(base, doc)
        except PatchError as exc:
            raise ApiError(422, str(exc)) from exc
        if not isinstance(result, dict) or not isinstance(result.get("metadata"), dict):
            raise bad_request("the patched object is not a valid object")
        if result["metadata"].get("name") != name:
            raise invalid(
                rt, name, [FieldError("Invalid", "metadata.name", "field is immutable", result["metadata"].get("name"))]
            )
        obj = self._decode(rt, result)
        self._scope(rt, obj["metadata"], namespace)
        return self.apply_update(rt, cur, obj, subresource=subresource, dry_run=dry_run)

    def apply_update(
        self, rt: ResourceType, cur: Stored, obj: Obj, *, subresource: str = "", dry_run: bool = False
    ) -> Result:
        """Store ``obj`` as the next version of ``cur`` with update semantics.

        ``obj`` may share nested values with stored objects (e.g. ``{**stored.obj, ...}``): only its
        top level and metadata are modified, on copies.
        """
        obj = {**obj, "metadata": dict(obj["metadata"])}
        old = cur.obj
        old_meta, name = old["metadata"], old["metadata"]["name"]
        meta = obj["metadata"]
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise conflict(rt, name, STALE)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {old_meta['uid']}, UID in object meta: {meta['uid']}",
            )
        new = self._merge_subresource(rt, old, obj, subresource)
        meta = new["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "namespace",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("resourceVersion", None)
        meta.pop("managedFields", None)
        if old_meta.get("deletionTimestamp"):
            added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
            if added:
                raise invalid(
                    rt,
                    name,
                    [
                        FieldError(
                            "Forbidden",
                            "metadata.finalizers",
                            "no new finalizers can be "
                            f"added if the object is being deleted, found new finalizers "
                            f"{json.dumps(added)}",
                        )
                    ],
                )
        # Subresources keep the stored spec, so only metadata can be invalid there.
        errors = strategies.metadata_errors(meta) if subresource else strategies.prepare_update(rt, new, old, self)
        if errors:
            raise invalid(rt, name, errors)
        if rt.tracks_generation and strategies.spec_of(new) != strategies.spec_of(old):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        if (
            old_meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and old_meta.get("deletionGracePeriodSeconds") == 0
        ):
            return conversion.to_view(rt, new) if dry_run else self.store.remove(rt.storage_key, cur)
        if {**new, "metadata": {**meta, "resourceVersion": old_meta["resourceVersion"]}} == old:
            return cur
        if dry_run:
            meta["resourceVersion"] = old_meta["resourceVersion"]
            return conversion.to_view(rt, new)
        return self.store.put(rt.storage_key, new, cur)

    @staticmethod
    def _merge_subresource(rt: ResourceType, old: Obj, obj: Obj, subresource: str) -> Obj:
        """Which parts of the request body count: status only via /status, spec only via the main path."""
        if subresource == "status":
            new = {**old, "metadata": obj["metadata"]}
            new["status"] = obj.get("status", {})
            if rt.qualified == "pods":  # pods/status must not touch owner references (PrepareForUpdate)
                refs = old["metadata"].get("ownerReferences")
                new["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}
                if refs is not None:
                    new["metadata"]["ownerReferences"] = refs
            return new
        if subresource == "finalize":
            spec = {**old.get("spec", {}), "finalizers": (obj.get("spec") or {}).get("finalizers") or []}
            return {**old, "metadata": dict(old["metadata"]), "spec": spec}
        if rt.status:
            if "status" in old:
                obj["status"] = old["status"]
            else:
                obj.pop("status", None)
        return obj

    # --- deletion ---------------------------------------------------------------
    def delete(self, rt: ResourceType, namespace: str, name: str, opts: DeleteOptions) -> tuple[Result, bool]:
        """DELETE; returns (body, deleted_now)."""
        cur = self.get(rt, namespace if rt.namespaced else "", name)
        if rt.qualified == "namespaces":
            return self._delete_namespace(rt, cur, opts)
        return self._delete(rt, cur, opts)

    def _check_preconditions(self, rt: ResourceType, meta: Obj, opts: DeleteOptions) -> None:
        want_uid = opts.preconditions.get("uid")
        if want_uid and want_uid != meta["uid"]:
            raise conflict(
                rt,
                meta["name"],
                f"Precondition failed: UID in precondition: {want_uid}, UID in object meta: {meta['uid']}",
            )
        want_rv = opts.preconditions.get("resourceVersion")
        if want_rv and want_rv != meta["resourceVersion"]:
            raise conflict(
                rt,
                meta["name"],
                f"Precondition failed: ResourceVersion in precondition: {want_rv}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )

    def _delete(self, rt: ResourceType, cur: Stored, opts: DeleteOptions) -> tuple[Result, bool]:
        obj, meta = cur.obj, cur.obj["metadata"]
        self._check_preconditions(rt, meta, opts)
        grace = opts.grace_period_seconds
        if grace is not None and grace < 0:
            grace = 1
        graceful, new_deadline, new_grace = False, "", 0
        if rt.graceful:
            current_grace = meta.get("deletionGracePeriodSeconds")
            if meta.get("deletionTimestamp"):
                if current_grace:
                    if grace is None or grace >= current_grace:
                        return self._finalize(rt, cur), False  # graceful deletion already pending
                    start = parse_timestamp(meta["deletionTimestamp"]) - timedelta(seconds=current_grace)
                    graceful, new_grace = True, grace
                    new_deadline = timestamp(start + timedelta(seconds=grace))
            else:
                graceful, new_grace = True, self._pod_grace(obj, grace)
                new_deadline = timestamp(datetime.now(UTC) + timedelta(seconds=new_grace))
        finalizers = self._gc_finalizers(rt, list(meta.get("finalizers") or []), opts)
        pending = bool(finalizers)
        if graceful or pending or finalizers != list(meta.get("finalizers") or []):
            new = {**obj, "metadata": {**meta}}
            new_meta = new["metadata"]
            if finalizers:
                new_meta["finalizers"] = finalizers
            else:
                new_meta.pop("finalizers", None)
            if graceful:
                new_meta["deletionTimestamp"] = new_deadline
                new_meta["deletionGracePeriodSeconds"] = new_grace
                if not meta.get("deletionTimestamp") and meta.get("generation"):
                    new_meta["generation"] = meta["generation"] + 1
            elif pending:
                if not meta.get("deletionTimestamp") and meta.get("generation"):
                    new_meta["generation"] = meta["generation"] + 1
                new_meta.setdefault("deletionTimestamp", timestamp())
                new_meta["deletionGracePeriodSeconds"] = 0
            changed = new != obj
            if opts.dry_run:
                result: Result = conversion.to_view(rt, new)
            else:
                result = self.store.put(rt.storage_key, new, cur) if changed else cur
            if pending or (graceful and new_grace > 0):
                return result, False
            if isinstance(result, Stored):
                cur = result
        if opts.dry_run:
            return conversion.to_view(rt, obj), True
        return self._finalize(rt, self.store.remove(rt.storage_key, cur)), True

    @staticmethod
    def _pod_grace(pod: Obj, requested: int | None) -> int:
        """podStrategy.CheckGracefulDelete: unscheduled or finished pods go at once."""
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        period = requested if requested is not None else int(spec.get("terminationGracePeriodSeconds", 30))
        if not spec.get("nodeName") or status.get("phase") in ("Failed", "Succeeded"):
            period = 0
        return 1 if period < 0 else period

    @staticmethod
    def _gc_finalizers(rt: ResourceType, finalizers: list[str], opts: DeleteOptions) -> list[str]:
        """deletionFinalizersForGarbageCollection: the finalizers a propagation policy implies."""
        policy = opts.propagation_policy
        if policy is None and opts.orphan_dependents is not None:
            policy = "Orphan" if opts.orphan_dependents else "Background"
        if policy is None:
            if any(f in GC_FINALIZERS for f in finalizers):
                return finalizers
            policy = "Orphan" if rt.orphan_by_default else "Background"
        out = [f for f in finalizers if f not in GC_FINALIZERS]
        if policy == "Orphan":
            out.append("orphan")
        elif policy == "Foreground":
            out.append("foregroundDeletion")
        return out

    def _finalize(self, rt: ResourceType, stored: Stored) -> Result:
        if rt.return_deleted_object:
            return stored
        meta = stored.obj["metadata"]
        details: Obj = {"name": meta["name"]}
        if rt.group:
            details["group"] = rt.group
        details.update({"kind": rt.plural, "uid": meta["uid"]})
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _delete_namespace(self, rt: ResourceType, cur: Stored, opts: DeleteOptions) -> tuple[Result, bool]:
        meta = cur.obj["metadata"]
        if meta["name"] in UNDELETABLE_NAMESPACES:
            raise forbidden(rt, meta["name"], "this namespace may not be deleted")
        self._check_preconditions(rt, meta, opts)
        if not meta.get("deletionTimestamp"):
            new = {
                **cur.obj,
                "metadata": {**meta, "deletionTimestamp": timestamp()},
                "status": {**cur.obj.get("status", {}), "phase": "Terminating"},
            }
            finalizers = self._gc_finalizers(rt, list(meta.get("finalizers") or []), opts)
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            if opts.dry_run:
                return conversion.to_view(rt, new), False
            return self.store.put(rt.storage_key, new, cur), False
        if (cur.obj.get("spec") or {}).get("finalizers"):
            raise conflict(
                rt,
                meta["name"],
                "The system is ensuring all content is removed from this namespace.  "
                "Upon completion, this namespace will automatically be purged by the "
                "system.",
            )
        return self._delete(rt, cur, opts)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, opts: ListOptions, delete_opts: DeleteOptions
    ) -> list[Result]:
        out = []
        for listed in self.list_objects(rt, namespace, opts).items:
            current = self.store.get(rt.storage_key, listed.key)
            if current is not None:  # may be gone already, e.g. through a propagation chain
                out.append(self._delete(rt, current, delete_opts)[0])
        return out
