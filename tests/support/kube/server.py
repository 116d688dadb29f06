"""HTTP routing of the emulator: path parsing, authentication, discovery and verb dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import watch
from .accounting import Accounting
from .errors import ApiError, bad_request, path_not_found
from .resources import Obj, Registry, ResourceType
from .store import Store, Stored
from .verbs import Api, DeleteOptions, ListOptions, Result

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset(("/version", "/healthz", "/readyz", "/livez"))


def _has_subresource(rt: ResourceType, sub: str) -> bool:
    return (
        (sub == "status" and rt.status)
        or (sub == "log" and rt.log)
        or (sub == "finalize" and rt.qualified == "namespaces")
    )


@dataclass
class Target:
    """A parsed resource request."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str
    verb: str

    @property
    def resource(self) -> str:
        """The name requests are counted under: ``plural[.group][/subresource]``."""
        return self.rt.qualified + (f"/{self.subresource}" if self.subresource else "")


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _error(err: ApiError) -> web.Response:
    return _json(err.code, err.encode(), err.headers)


class PodLogs:
    """Container log text tests set for the ``pods/log`` subresource."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text: dict[tuple[str, str, str], str] = {}

    def set(self, namespace: str, pod: str, text: str, container: str = "") -> None:
        with self._lock:
            self._text[(namespace, pod, container)] = text

    def get(self, namespace: str, pod: str, container: str) -> str:
        with self._lock:
            return self._text.get((namespace, pod, container), self._text.get((namespace, pod, ""), ""))


class Server:
    """The aiohttp application of one emulator instance; runs on the emulator's event loop."""

    def __init__(
        self,
        api: Api,
        registry: Registry,
        accounting: Accounting,
        logs: PodLogs,
        *,
        token: str | None,
        git_version: str,
        bookmark_interval: Callable[[], float],
        watch_queue_limit: int,
    ) -> None:
        self.api = api
        self.store: Store = api.store
        self.registry = registry
        self.accounting = accounting
        self.logs = logs
        self.token = token
        self.git_version = git_version
        self.bookmark_interval = bookmark_interval
        self.watch_queue_limit = watch_queue_limit
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as err:
            return _error(err)
        except Exception as exc:  # a bug in the emulator must look like a server error, not hang a client
            log.exception("emulator failed on %s %s", request.method, request.path)
            return _error(ApiError(500, f"Internal error occurred: {exc!r}"))

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if header:
            if self.token is not None and header != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized")
        elif self.token is not None and request.path not in PUBLIC_PATHS:
            raise ApiError(
                403,
                f'forbidden: User "system:anonymous" cannot {request.method.lower()} path "{request.path}"',
                "Forbidden",
                {},
            )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self._authenticate(request)
        parts = [p for p in request.path.split("/") if p]
        target = self._parse(request, parts)
        if target is None:
            self.accounting.record(request.method.lower(), request.path)
            return self._non_resource(request, parts)
        self.accounting.record(target.verb, target.resource)
        for fault in self.accounting.take_faults(target.verb, target.resource, target.namespace, target.name):
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                if target.verb == "watch" and fault.status == 410:
                    return await watch.error_stream(request, fault.error())
                raise fault.error()
        return await self._serve(request, target)

    # --- routing ------------------------------------------------------------------------
    def _parse(self, request: web.Request, parts: list[str]) -> Target | None:
        if parts[:2] == ["api", "v1"] and len(parts) > 2:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) > 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            scoped = self.registry.by_path(group, version, rest[2])
            if scoped is not None and scoped.namespaced:
                namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise path_not_found()
        rt = self.registry.by_path(group, version, rest[0])
        if rt is None or (rt.namespaced and namespace is None and len(rest) > 1):
            raise path_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not _has_subresource(rt, sub):
            raise path_not_found()
        return Target(rt, namespace, name, sub, self._verb(request, rt, namespace, name, sub))

    @staticmethod
    def _verb(request: web.Request, rt: ResourceType, namespace: str | None, name: str | None, sub: str) -> str:
        method = request.method
        if name is None:
            if method == "GET":
                return "watch" if request.query.get("watch", "").lower() in ("true", "1") else "list"
            writable = not (rt.namespaced and namespace is None)  # all-namespaces collections only read
            if writable and method == "POST":
                return "create"
            if writable and method == "DELETE" and rt.collection_delete:
                return "deletecollection"
        else:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if (
                verb is not None
                and (not sub or verb in ("get", "update", "patch"))
                and (sub != "log" or verb == "get")
                and (sub != "finalize" or verb == "update")
            ):
                return verb
        raise ApiError(405, f"the server does not allow this method on the requested resource ({method})", details={})

    # --- non-resource endpoints -----------------------------------------------------------------
    def _non_resource(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        if request.method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource", details={})
        if request.path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok", content_type="text/plain")
        if request.path == "/version":
            major, minor = self.git_version.lstrip("v").split(".")[:2]
            return _json(
                200,
                _encode(
                    {
                        "major": major,
                        "minor": minor,
                        "gitVersion": self.git_version,
                        "gitCommit": "emulator",
                        "gitTreeState": "clean",
                        "buildDate": "2024-08-13T07:28:49Z",
                        "goVersion": "go1.22.5",
                        "compiler": "gc",
                        "platform": "linux/amd64",
                    }
                ),
            )
        groups = self.registry.group_versions()
        if parts == ["api"]:
            address = f"{request.host}"
            return _json(
                200,
                _encode(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
                    }
                ),
            )
        if parts == ["api", "v1"]:
            return _json(200, _encode(self._resource_list("", "v1", groups[""])))
        if parts == ["apis"]:
            return _json(
                200,
                _encode(
                    {
                        "kind": "APIGroupList",
                        "apiVersion": "v1",
                        "groups": [self._group(g, rts) for g, rts in groups.items() if g],
                    }
                ),
            )
        if len(parts) in (2, 3) and parts[0] == "apis" and parts[1] in groups and parts[1]:
            rts = groups[parts[1]]
            if len(parts) == 2:
                return _json(200, _encode({"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1], rts)}))
            if parts[2] == rts[0].version:
                return _json(200, _encode(self._resource_list(parts[1], parts[2], rts)))
        raise path_not_found()

    @staticmethod
    def _group(group: str, rts: list[ResourceType]) -> Obj:
        version = {"groupVersion": rts[0].api_version, "version": rts[0].version}
        return {"name": group, "versions": [version], "preferredVersion": version}

    @staticmethod
    def _resource_list(group: str, version: str, rts: list[ResourceType]) -> Obj:
        resources: list[Obj] = []
        for rt in rts:
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": rt.verbs(),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            for sub, verbs in (("status", ["get", "patch", "update"]), ("log", ["get"]), ("finalize", ["update"])):
                if _has_subresource(rt, sub):
                    resources.append(
                        {
                            "name": f"{rt.plural}/{sub}",
                            "singularName": "",
                            "namespaced": rt.namespaced,
                            "kind": rt.kind,
                            "verbs": verbs,
                        }
                    )
        body: Obj = {
            "kind": "APIResourceList",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }
        if group:
            body["apiVersion"] = "v1"
        return body

    # --- resource verbs ------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        content_type = request.content_type
        if content_type not in ("application/json", "application/octet-stream", ""):
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json (got {content_type})",
            )
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise bad_request(f"error decoding request body: {exc}") from exc

    def _respond(self, status: int, result: Result, rt: ResourceType) -> web.Response:
        body = result.raw(rt) if isinstance(result, Stored) else _encode(result)
        return _json(status, body)

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        value = request.query.get("dryRun")
        if value not in (None, "", "All"):
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return value == "All"

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        rt, api = t.rt, self.api
        namespace = t.namespace or ""
        if t.verb == "watch":
            return await watch.serve(
                request,
                self.store,
                rt,
                t.namespace,
                bookmark_interval=self.bookmark_interval(),
                queue_limit=self.watch_queue_limit,
            )
        if t.verb == "list":
            return self._list(rt, t.namespace, ListOptions.parse(rt, request.query))
        if t.verb == "create":
            return self._respond(201, api.create(rt, namespace, await self._body(request), self._dry_run(request)), rt)
        assert t.name is not None or t.verb == "deletecollection"
        name = t.name or ""
        if t.verb == "get":
            if t.subresource == "log":
                return self._log(request, rt, namespace, name)
            return self._respond(200, api.get(rt, namespace, name), rt)
        if t.verb == "update":
            result, created = api.update(
                rt,
                namespace,
                name,
                await self._body(request),
                subresource=t.subresource,
                dry_run=self._dry_run(request),
            )
            return self._respond(201 if created else 200, result, rt)
        if t.verb == "patch":
            result = api.patch(
                rt,
                namespace,
                name,
                request.content_type,
                await request.read(),
                subresource=t.subresource,
                dry_run=self._dry_run(request),
            )
            return self._respond(200, result, rt)
        body = await self._body(request)
        opts = DeleteOptions.parse(request.query, body if isinstance(body, dict) else None)
        opts.dry_run = opts.dry_run or self._dry_run(request)
        if t.verb == "delete":
            result, deleted = api.delete(rt, namespace, name, opts)
            accepted = not deleted and opts.orphan_dependents is False
            return self._respond(202 if accepted else 200, result, rt)
        items = api.delete_collection(rt, t.namespace, ListOptions.parse(rt, request.query), opts)
        raws = [r.raw(rt) if isinstance(r, Stored) else _encode(r) for r in items]
        return _json(200, self._list_body(rt, self.store.rv, raws, "", None))

    def _list(self, rt: ResourceType, namespace: str | None, opts: ListOptions) -> web.Response:
        result = self.api.list_objects(rt, namespace, opts)
        raws = [s.raw(rt) for s in result.items]
        return _json(200, self._list_body(rt, result.resource_version, raws, result.continue_token, result.remaining))

    @staticmethod
    def _list_body(rt: ResourceType, rv: int, raws: list[bytes], token: str, remaining: int | None) -> bytes:
        meta: Obj = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        head = _encode({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        return head[:-1] + b',"items":[' + b",".join(raws) + b"]}"

    def _log(self, request: web.Request, rt: ResourceType, namespace: str, name: str) -> web.Response:
        pod = self.api.get(rt, namespace, name).obj
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        inits = [c.get("name", "") for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = request.query.get("container", "")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        elif container not in containers + inits:
            raise bad_request(f"container {container} is not valid for pod {name}")
        text = self.logs.get(namespace, name, container)
        tail = request.query.get("tailLines")
        if tail is not None:
            try:
                keep = int(tail)
            except ValueError as exc:
                raise bad_request(f"invalid tailLines: {tail!r}") from exc
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-keep:]) if keep > 0 else ""
        limit = request.query.get("limitBytes")
        data = text.encode()
        if limit is not None and limit.isdigit():
            data = data[: int(limit)]
        return web.Response(body=data, content_type="text/plain", charset="utf-8")
