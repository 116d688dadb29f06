"""The one way every component talks to the Kubernetes API.

A lightkube `AsyncClient` whose HTTP transport is wrapped, so that every request,
whatever code path sends it, passes one seam that:
- waits for a token of a client-side token bucket (`KUBE_QPS` / `KUBE_BURST`);
- counts it by verb and resource in `/metrics`;
- sends lists to the API server's watch cache (`resourceVersion=0`) when
  `ENABLE_APISERVER_LIST_CACHE=true`, and asks watches for bookmarks.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
from lightkube import AsyncClient
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from prometheus_client import CollectorRegistry, Counter

DEFAULT_QPS = 20.0
DEFAULT_BURST = 30
REQUEST_TIMEOUT_SECONDS = 10.0
FIELD_MANAGER = "juicefs-csi"


@dataclass(frozen=True)
class KubeSettings:
    qps: float = DEFAULT_QPS
    burst: int = DEFAULT_BURST
    list_from_cache: bool = False
    kubeconfig: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> KubeSettings:
        env = os.environ if environ is None else environ
        qps = float(env.get("KUBE_QPS") or DEFAULT_QPS)
        burst = int(env.get("KUBE_BURST") or DEFAULT_BURST)
        if qps <= 0 or burst <= 0:
            raise ValueError("KUBE_QPS and KUBE_BURST must be positive")
        return cls(
            qps=qps,
            burst=burst,
            list_from_cache=env.get("ENABLE_APISERVER_LIST_CACHE", "").lower() == "true",
            kubeconfig=env.get("KUBECONFIG") or None,
        )


class TokenBucket:
    """client-go's flowcontrol: `burst` requests at once, refilled at `qps` per second."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.qps)
            self._updated = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.qps
                await asyncio.sleep(wait)
                self._tokens = 1.0
                self._updated = time.monotonic()
            self._tokens -= 1


@dataclass(frozen=True)
class RequestKind:
    verb: str
    resource: str
    subresource: str = ""


def classify(method: str, path: str, query: dict[str, str]) -> RequestKind:
    """REST method + path → the verb and resource Kubernetes audit logs would name."""
    segments = [s for s in path.split("/") if s]
    if segments[:1] == ["api"]:
        segments = segments[2:]
    elif segments[:1] == ["apis"]:
        segments = segments[3:]
    else:
        return RequestKind(method.lower(), "/".join(segments) or "/")
    if len(segments) >= 3 and segments[0] == "namespaces":
        segments = segments[2:]
    resource = segments[0] if segments else ""
    named = len(segments) >= 2
    subresource = segments[2] if len(segments) >= 3 else ""
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if named else "list")
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    return RequestKind(verb, resource, subresource)


class ApiTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, inner: httpx.AsyncBaseTransport, bucket: TokenBucket, requests: Counter, list_from_cache: bool
    ) -> None:
        self.inner = inner
        self.bucket = bucket
        self.requests = requests
        self.list_from_cache = list_from_cache

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        kind = classify(request.method, request.url.path, query)
        if kind.verb == "list" and self.list_from_cache and "resourceVersion" not in query:
            request.url = request.url.copy_merge_params({"resourceVersion": "0"})
        elif kind.verb == "watch" and "allowWatchBookmarks" not in query:
            request.url = request.url.copy_merge_params({"allowWatchBookmarks": "true"})
        await self.bucket.acquire()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError:
            self.requests.labels(kind.verb, kind.resource, kind.subresource, "error").inc()
            raise
        self.requests.labels(kind.verb, kind.resource, kind.subresource, str(response.status_code)).inc()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def request_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "juicefs_kube_requests",
        "Requests sent to the Kubernetes API server, by verb, resource and HTTP status.",
        ["verb", "resource", "subresource", "code"],
        registry=registry,
    )


def load_config(settings: KubeSettings) -> SingleConfig:
    """In-cluster service account first, then KUBECONFIG, as client-go does."""
    loaded = KubeConfig.from_file(Path(settings.kubeconfig)) if settings.kubeconfig else KubeConfig.from_env()
    config = loaded.get()
    if config is None:
        raise ValueError("the kubeconfig names no current context")
    return config


def make_client(settings: KubeSettings, requests: Counter, namespace: str | None = None) -> AsyncClient:
    config = load_config(settings)
    assert config.user is not None
    verify = verify_cluster(config.cluster, config.user, config.abs_file)
    inner = httpx.AsyncHTTPTransport(verify=verify)
    transport = ApiTransport(inner, TokenBucket(settings.qps, settings.burst), requests, settings.list_from_cache)
    return AsyncClient(
        config,
        namespace=namespace,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
        field_manager=FIELD_MANAGER,
        transport=transport,
    )
