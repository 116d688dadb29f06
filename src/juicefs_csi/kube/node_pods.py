"""The node plugin's view of "the pods on this node": the kubelet first, the API server when refused.

Polling the local kubelet costs the API server nothing, which matters with
thousands of nodes. Kubelets that refuse us (webhook authn/authz without
`nodes/proxy` RBAC, no anonymous access) are common, so a 401/403 switches this
source for good to a list-watch of `spec.nodeName=<node>` pods through the API
server; the rest of the node plugin sees the same interface either way.
Transient kubelet trouble (down, restarting, 5xx, slow) is retried with backoff
and never switches modes: one kubelet restart must not move a node's load onto
the API server forever. See docs/kubelet.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod
from prometheus_client import CollectorRegistry, Counter, Gauge

from .informer import Event, Informer
from .kubelet import SERVICE_ACCOUNT_TOKEN_FILE, KubeletClient, KubeletConfig, KubeletError, KubeletUnauthorized

log = logging.getLogger("juicefs_csi.node_pods")

T = TypeVar("T")
Mode = Literal["kubelet", "apiserver"]
PodHandler = Callable[[Event, Pod], None]
Key = tuple[str, str]

DEFAULT_INTERVAL_SECONDS = 5.0
DEFAULT_FAST_INTERVAL_SECONDS = 0.5
DEFAULT_MAX_BACKOFF_SECONDS = 60.0
API_SYNC_WAIT_SECONDS = 10.0
WARN_EVERY_FAILURES = 10


def uid_of(pod: Pod) -> str:
    """Pods are told apart by uid: a replacement with the same name is a different pod."""
    meta = pod.metadata
    if meta is None:
        return ""
    return meta.uid or f"{meta.namespace or ''}/{meta.name or ''}"


def key_of(pod: Pod) -> Key:
    meta = pod.metadata
    return (meta.namespace or "", meta.name or "") if meta is not None else ("", "")


def version_of(pod: Pod) -> str:
    return (pod.metadata.resourceVersion or "") if pod.metadata is not None else ""


def _terminating(pod: Pod) -> bool:
    return pod.metadata is not None and pod.metadata.deletionTimestamp is not None


class PodCache:
    """Pods by uid, with a (namespace, name) index that tolerates two pods of one name.

    The kubelet can briefly report a terminating pod and its same-named replacement together.
    """

    def __init__(self) -> None:
        self.by_uid: dict[str, Pod] = {}
        self._by_key: dict[Key, dict[str, Pod]] = {}

    def put(self, pod: Pod) -> Pod | None:
        uid = uid_of(pod)
        previous = self.by_uid.get(uid)
        if previous is not None and key_of(previous) != key_of(pod):
            self._unindex(uid, previous)
        self.by_uid[uid] = pod
        self._by_key.setdefault(key_of(pod), {})[uid] = pod
        return previous

    def remove(self, uid: str) -> Pod | None:
        previous = self.by_uid.pop(uid, None)
        if previous is not None:
            self._unindex(uid, previous)
        return previous

    def _unindex(self, uid: str, pod: Pod) -> None:
        same_name = self._by_key.get(key_of(pod))
        if same_name is not None:
            same_name.pop(uid, None)
            if not same_name:
                del self._by_key[key_of(pod)]

    def others_with_key(self, pod: Pod) -> list[str]:
        uid = uid_of(pod)
        return [other for other in self._by_key.get(key_of(pod), {}) if other != uid]

    def get(self, namespace: str, name: str) -> Pod | None:
        """The live pod of that name; a terminating one only if there is no other."""
        candidates = list(self._by_key.get((namespace, name), {}).values())
        for pod in candidates:
            if not _terminating(pod):
                return pod
        return candidates[-1] if candidates else None


class NodePods:
    """The pods bound to one node, from a cache fed by kubelet polls or an API-server watch.

    Reads (`pods`, `get`, `find_by_uid`) never send a request. Handlers get
    (Event, Pod) after the cache holds the change, in both modes.
    """

    def __init__(
        self,
        node_name: str,
        client: AsyncClient,
        registry: CollectorRegistry,
        kubelet: KubeletClient | None = None,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        fast_interval: float = DEFAULT_FAST_INTERVAL_SECONDS,
        max_backoff: float = DEFAULT_MAX_BACKOFF_SECONDS,
    ) -> None:
        if not node_name:
            raise ValueError("node name is required: it selects this node's pods")
        if interval <= 0 or fast_interval <= 0 or max_backoff <= 0:
            raise ValueError("interval, fast_interval and max_backoff must be positive")
        self.node_name = node_name
        self.interval = interval
        self.fast_interval = fast_interval
        self.max_backoff = max_backoff
        self._client = client
        self._kubelet = kubelet
        self._mode: Mode = "kubelet" if kubelet is not None else "apiserver"
        self._fallback_reason: str | None = None
        self._cache = PodCache()
        self._handlers: list[PodHandler] = []
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()
        self._api_synced = asyncio.Event()
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._polls_started = 0
        self._last_poll_ok = False
        self._failures = 0
        self._waiters = 0
        self._started = False
        self._stopped = False
        self._node_mismatch_logged = False
        self._informer: Informer[Pod] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.fallback_gauge = Gauge(
            "juicefs_kubelet_fallback",
            "1 once the kubelet refused the pod list (401/403) and this node's pods come from the API server.",
            registry=registry,
        )
        self.errors = Counter(
            "juicefs_kubelet_errors",
            "Failed kubelet /pods requests, by reason (timeout, connection, status, decode, unauthorized).",
            ["reason"],
            registry=registry,
        )

    @classmethod
    def from_env(
        cls,
        node_name: str,
        client: AsyncClient,
        registry: CollectorRegistry,
        environ: Mapping[str, str] | None = None,
        *,
        token_file: Path = SERVICE_ACCOUNT_TOKEN_FILE,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        fast_interval: float = DEFAULT_FAST_INTERVAL_SECONDS,
        max_backoff: float = DEFAULT_MAX_BACKOFF_SECONDS,
    ) -> NodePods:
        """Kubelet polling when `HOST_IP` is set (see KubeletConfig.from_env), else the API server."""
        config = KubeletConfig.from_env(environ, token_file=token_file)
        kubelet = KubeletClient(config) if config is not None else None
        return cls(
            node_name,
            client,
            registry,
            kubelet,
            interval=interval,
            fast_interval=fast_interval,
            max_backoff=max_backoff,
        )

    # --- the interface ---------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def fallback_reason(self) -> str | None:
        """Why the kubelet was given up (None while polling it, or when it was never configured)."""
        return self._fallback_reason

    @property
    def synced(self) -> bool:
        """Whether the cache was filled at least once; before that an empty `pods()` means "unknown"."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    def pods(self) -> list[Pod]:
        return list(self._cache.by_uid.values())

    def get(self, namespace: str, name: str) -> Pod | None:
        return self._cache.get(namespace, name)

    def find_by_uid(self, uid: str) -> Pod | None:
        return self._cache.by_uid.get(uid)

    def add_handler(self, handler: PodHandler) -> None:
        """Called with (event, pod) for every change; handlers must not block."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Decide the mode: one kubelet request (bounded by KUBELET_TIMEOUT), then poll or watch.

        A transient failure here keeps kubelet mode and retries in the background;
        check `synced` before treating an empty pod list as truth.
        """
        if self._started:
            return
        self._started = True
        if self._kubelet is None:
            self._start_informer()
            return
        await self._poll()
        if self._mode == "kubelet":
            self._spawn(self._poll_loop(), "node-pods-kubelet")

    async def stop(self) -> None:
        """Final: a stopped source is not restarted (a refresh racing with stop starts nothing)."""
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._informer is not None:
            await self._informer.stop()
        if self._kubelet is not None:
            await self._kubelet.aclose()

    async def refresh(self) -> bool:
        """Make the cache current now, for a caller that just created a pod and wants to see it.

        Kubelet mode: polls at once (concurrent callers share one request, and
        a poll that started after the call counts) and returns whether it worked.
        API-server mode: the watch keeps the cache current, so this only waits
        for the initial list; use `wait_for` to see a particular change.
        """
        if self._mode == "kubelet":
            ok = await self._poll(newer_than=self._polls_started)
            if self._mode == "kubelet":
                return ok
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(API_SYNC_WAIT_SECONDS):
                await self._api_synced.wait()
        return self._api_synced.is_set()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float) -> T:
        """Wait on cache changes until `predicate` returns something other than None or False.

        In kubelet mode a waiter makes the poller ask every `fast_interval`
        (not during error backoff). Raises TimeoutError.
        """
        found = predicate()
        if found is not None and found is not False:
            return found
        self._waiters += 1
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    found = predicate()
                    if found is not None and found is not False:
                        return found
                    await changed.wait()
        finally:
            self._waiters -= 1

    # --- kubelet mode ----------------------------------------------------------------------
    async def _poll(self, newer_than: int | None = None) -> bool:
        """One kubelet request at a time; with `newer_than`, reuse a poll that started after it."""
        async with self._poll_lock:
            if newer_than is not None and self._polls_started > newer_than:
                return self._last_poll_ok
            if self._mode != "kubelet" or self._kubelet is None or self._stopped:
                return False
            self._polls_started += 1
            self._last_poll_ok = False
            try:
                pods = await self._kubelet.pods()
            except KubeletUnauthorized as exc:
                self.errors.labels(exc.reason).inc()
                self._fall_back(str(exc))
                await self._kubelet.aclose()
                return False
            except KubeletError as exc:
                self._failed(exc.reason, str(exc))
                return False
            if self._failures:
                log.info("kubelet answers again", extra={"node": self.node_name, "failed_requests": self._failures})
                self._failures = 0
            self._apply_poll(pods)
            self._last_poll_ok = True
            return True

    def _failed(self, reason: str, message: str) -> None:
        self.errors.labels(reason).inc()
        self._failures += 1
        fields = {"node": self.node_name, "error": message, "failed_requests": self._failures}
        if self._failures == 1 or self._failures % WARN_EVERY_FAILURES == 0:
            log.warning("kubelet pod list failed; keeping the last known pods and retrying", extra=fields)
        else:
            log.debug("kubelet pod list failed again", extra=fields)

    def _next_delay(self) -> float:
        if self._failures:
            doubled = self.interval * 2.0 ** min(self._failures - 1, 32)  # bounded: days of failures must not overflow
            return min(doubled, max(self.max_backoff, self.interval))
        return min(self.interval, self.fast_interval) if self._waiters else self.interval

    async def _pause(self, delay: float) -> None:
        """Sleep `delay`, cut short by a waiter or a mode switch, but not while backing off from errors."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                return
            if self._mode != "kubelet" or not self._failures:
                return
            self._wake.clear()

    async def _poll_loop(self) -> None:
        while self._mode == "kubelet":
            await self._pause(self._next_delay())
            if self._mode != "kubelet":
                return
            self._wake.clear()
            try:
                await self._poll()
            except Exception as exc:  # a bug must not end polling: the node plugin would go blind
                log.exception("kubelet poll crashed", extra={"node": self.node_name})
                self._failed("internal", repr(exc))

    def _apply_poll(self, pods: list[Pod]) -> None:
        """Diff successive polls by uid + resourceVersion into the events an informer would send."""
        fresh = {uid_of(pod): pod for pod in pods}
        self._check_node(pods)
        gone = [uid for uid in self._cache.by_uid if uid not in fresh]
        deleted = [pod for uid in gone if (pod := self._cache.remove(uid)) is not None]
        changes: list[tuple[Event, Pod]] = [(Event.DELETED, pod) for pod in deleted]
        for pod in fresh.values():
            previous = self._cache.put(pod)
            if previous is None:
                changes.append((Event.ADDED, pod))
            elif version_of(previous) != version_of(pod):
                changes.append((Event.MODIFIED, pod))
        for event, pod in changes:
            self._emit(event, pod)
        self._synced.set()
        self._notify()

    def _check_node(self, pods: list[Pod]) -> None:
        """Say once if HOST_IP's kubelet runs another node's pods: the modes would then disagree."""
        if self._node_mismatch_logged:
            return
        other = next((p.spec.nodeName for p in pods if p.spec and p.spec.nodeName not in (None, self.node_name)), None)
        if other is not None:
            self._node_mismatch_logged = True
            log.warning(
                "the kubelet at HOST_IP runs pods of another node; check HOST_IP and the node name",
                extra={"node": self.node_name, "kubelet_node": other},
            )

    # --- API-server mode -------------------------------------------------------------------
    def _fall_back(self, reason: str) -> None:
        if self._mode == "apiserver":
            return
        self._mode = "apiserver"
        self._fallback_reason = reason
        self.fallback_gauge.set(1)
        log.warning(
            "kubelet refused the pod list; watching this node's pods through the API server from now on",
            extra={"node": self.node_name, "reason": reason},
        )
        self._wake.set()
        self._start_informer()
        self._notify()

    def _start_informer(self) -> None:
        if self._stopped:
            return
        informer: Informer[Pod] = Informer(
            self._client, Pod, fields={"spec.nodeName": self.node_name}, name=f"node-pods-{self.node_name}"
        )
        informer.add_handler(self._on_watch_event)
        informer.start()
        self._informer = informer
        self._spawn(self._reconcile_after_list(informer), "node-pods-sync")

    def _on_watch_event(self, event: Event, pod: Pod) -> None:
        """Mirror the informer into the cache, re-deriving events so a switch does not re-ADD known pods."""
        uid = uid_of(pod)
        changes: list[tuple[Event, Pod]] = []
        if event is Event.DELETED:
            previous = self._cache.remove(uid)
            if previous is not None:
                changes.append((Event.DELETED, pod))
        else:
            # The API server holds one pod per name: any other uid under this name is gone
            # (a replacement seen through a relist, or a terminating pod the kubelet still had).
            for other in self._cache.others_with_key(pod):
                replaced = self._cache.remove(other)
                if replaced is not None:
                    changes.append((Event.DELETED, replaced))
            previous = self._cache.put(pod)
            if previous is None:
                changes.append((Event.ADDED, pod))
            elif version_of(previous) != version_of(pod):
                changes.append((Event.MODIFIED, pod))
        for change, changed_pod in changes:
            self._emit(change, changed_pod)
        if changes:
            self._notify()

    async def _reconcile_after_list(self, informer: Informer[Pod]) -> None:
        """After the first list, drop pods only the kubelet knew of (gone while we switched)."""
        await informer.synced.wait()
        live = {uid_of(pod) for pod in informer.items()}
        for uid in [uid for uid in self._cache.by_uid if uid not in live]:
            pod = self._cache.remove(uid)
            if pod is not None:
                self._emit(Event.DELETED, pod)
        self._api_synced.set()
        self._synced.set()
        self._notify()

    # --- plumbing --------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _emit(self, event: Event, pod: Pod) -> None:
        for handler in self._handlers:
            try:
                handler(event, pod)
            except Exception:
                log.exception("node pods handler failed", extra={"node": self.node_name, "event": event.value})

    def _notify(self) -> None:
        """Wake every `wait_for`: they hold the old event, a new one serves the next change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
