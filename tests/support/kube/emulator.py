"""The in-process Kubernetes API emulator: lifecycle, bootstrap objects and test controls.

The server runs on its own event loop in a background thread so that sync and
async tests alike can talk to it over HTTP; test controls (request counts,
fault injection, pod logs, kubelet emulation) are thread-safe.

Manual use: ``python -m tests.support.kube.emulator --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self, TypeVar

from aiohttp import web

from .accounting import Accounting, Fault
from .controllers import Controllers, Reconciler
from .resources import REGISTRY, Obj
from .server import PodLogs, Server
from .store import Store
from .strategies import SYSTEM_PRIORITY_CLASSES
from .verbs import Api

T = TypeVar("T")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    """Bearer token required from clients; None accepts any (or no) token."""
    git_version: str = "v1.31.0"
    bookmark_interval: float = 5.0
    history_size: int = 10_000
    """Changes kept for watch/list from an older resourceVersion (the window is 1-2x this)."""
    watch_queue_limit: int = 10_000
    """Undelivered events after which a slow watch is closed."""
    tls: bool = False
    """Serve HTTPS with a fresh self-signed CA (``ca_pem``); client-go sends tokens only over TLS."""
    tls_cert_file: str | None = None
    """Serve HTTPS with this certificate (and ``tls_key_file``) instead of a generated one."""
    tls_key_file: str | None = None
    controllers: bool = True
    """Run garbage collection and namespace deletion, as kube-controller-manager does."""
    bootstrap: tuple[Obj, ...] = field(default=())
    """Extra objects created at start-up, before the watch history begins."""


def _bootstrap_objects() -> list[Obj]:
    objects: list[Obj] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in SYSTEM_NAMESPACES]
    objects += [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": n},
            "value": v,
            "description": "Used for system critical pods that must not be moved from their current node."
            if n.endswith("node-critical")
            else "Used for system critical pods that must run in the cluster, but can be moved to another node "
            "if necessary.",
        }
        for n, v in SYSTEM_PRIORITY_CLASSES.items()
    ]
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        }
    )
    return objects


class Emulator:
    """A Kubernetes API server emulator listening on ``url`` while started."""

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or EmulatorConfig(), **overrides)
        self.accounting = Accounting()
        self.logs = PodLogs()
        self.bookmark_interval = self.config.bookmark_interval
        self.url = ""
        self.ca_pem: bytes | None = None
        self._tls_dir: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.store = Store(self.config.history_size)
        self.api = Api(self.store, REGISTRY)
        self._controllers: Controllers | None = None

    # --- lifecycle ---------------------------------------------------------------------
    async def start_async(self) -> None:
        """Start on the running loop (used by the thread and by ``__main__``)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._controllers = Controllers(self.api, REGISTRY, loop, self.config.controllers)
        server = Server(
            self.api,
            REGISTRY,
            self.accounting,
            self.logs,
            token=self.config.token,
            git_version=self.config.git_version,
            bookmark_interval=lambda: self.bookmark_interval,
            watch_queue_limit=self.config.watch_queue_limit,
        )
        for obj in (*_bootstrap_objects(), *self.config.bootstrap):
            rt = REGISTRY.by_kind(obj["apiVersion"], obj["kind"])
            assert rt is not None, obj
            self.api.create(rt, obj["metadata"].get("namespace", ""), obj)
        self.store.compact()  # like a fresh watch cache: history starts after bootstrap
        self._runner = web.AppRunner(server.app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self._tls())
        await site.start()
        port = self._runner.addresses[0][1]  # the bound port when port=0
        scheme = "https" if self.config.tls or self.config.tls_cert_file else "http"
        self.url = f"{scheme}://{self.config.host}:{port}"

    def _tls(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert_file, self.config.tls_key_file
        if cert is None and self.config.tls:
            from . import certs  # noqa: PLC0415 - cryptography is only needed with TLS

            self._tls_dir = tempfile.mkdtemp(prefix="kube-emulator-tls-")
            pki = certs.generate(Path(self._tls_dir))
            self.ca_pem = pki.ca_pem
            cert, key = str(pki.serving_cert), str(pki.serving_key)
        if cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    async def stop_async(self) -> None:
        for watcher in self.store.all_watchers():
            watcher.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def start(self) -> Self:
        """Start in a background thread with its own event loop; returns once listening."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop_async())
                loop.close()

        self._thread = threading.Thread(target=run, name="kube-api-emulator", daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator loop (where the store lives) and return its result."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    # --- test controls ------------------------------------------------------------------
    def request_counts(self) -> dict[tuple[str, str], int]:
        """Requests served so far by (verb, resource), e.g. ``("list", "pods")``,
        ``("update", "leases.coordination.k8s.io")``, ``("patch", "pods/status")``;
        non-resource requests count as (method, path)."""
        return self.accounting.counts()

    def request_count(self, verb: str, resource: str) -> int:
        return self.accounting.counts().get((verb, _qualify(resource)), 0)

    def reset_counts(self) -> None:
        self.accounting.reset_counts()

    def inject_error(
        self,
        verb: str,
        resource: str,
        status: int = 500,
        times: int | None = 1,
        *,
        message: str | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests (None: all) with ``status`` and a Status body.

        ``verb``/``resource`` may be ``"*"``. A 410 injected into a watch arrives as an ERROR
        event in a 200 stream, the way a real server reports an expired resourceVersion.
        """
        self.accounting.add_fault(
            Fault(
                verb,
                _qualify(resource),
                status,
                times,
                message or f"injected failure ({status})",
                reason,
                retry_after,
                namespace=namespace,
                name=name,
            )
        )

    def inject_latency(self, verb: str, resource: str, seconds: float, times: int | None = 1) -> None:
        """Delay the next ``times`` matching requests by ``seconds`` before serving them."""
        self.accounting.add_fault(Fault(verb, _qualify(resource), None, times, "", delay=seconds))

    def clear_faults(self) -> None:
        self.accounting.clear_faults()

    def set_pod_log(self, namespace: str, pod: str, text: str, container: str = "") -> None:
        """Text served by ``pods/log`` for ``pod`` (and ``container``, or any container if empty)."""
        self.logs.set(namespace, pod, text, container)

    def set_kubelet(self, node: str = "*", *, running: bool = True, delay: float = 0.0) -> None:
        """Emulate (or stop emulating) the kubelet of ``node`` ("*": every node).

        Without a kubelet, a deleted pod bound to a node stays terminating until a delete
        with gracePeriodSeconds=0 arrives, as on a cluster whose node is down (and on
        envtest). A running kubelet sends that delete ``delay`` seconds after the request.
        """
        controllers = self._controllers
        if controllers is None:
            raise RuntimeError("the emulator is not running")

        def apply() -> None:
            if running:
                controllers.kubelets[node] = delay
            else:
                controllers.kubelets.pop(node, None)

        self.call(apply)

    def reset_kubelets(self) -> None:
        controllers = self._controllers
        if controllers is not None:
            self.call(controllers.kubelets.clear)

    def add_reconciler(self, reconciler: Reconciler) -> Callable[[], None]:
        """Run ``reconciler(change, api)`` on the emulator loop after every committed change.

        The hook for extra control loops a test needs (e.g. binding PVCs to PVs);
        returns a function that removes it.
        """
        controllers = self._controllers
        if controllers is None:
            raise RuntimeError("the emulator is not running")
        self.call(lambda: controllers.reconcilers.append(reconciler))
        return lambda: self.call(lambda: controllers.reconcilers.remove(reconciler))

    def compact(self) -> None:
        """Drop the watch history (etcd compaction): older resourceVersions now get 410 Expired."""
        self.call(self.store.compact)

    def close_watches(self) -> None:
        """End every open watch stream, as an API server restart or a load balancer would."""

        def close_all() -> None:
            for watcher in self.store.all_watchers():
                watcher.close()

        self.call(close_all)

    def resource_version(self) -> int:
        return self.call(lambda: self.store.rv)


def _qualify(resource: str) -> str:
    """``pods`` / ``leases`` / ``pods/status`` -> the counted name (``leases.coordination.k8s.io``)."""
    if resource == "*" or resource.startswith("/"):
        return resource
    base, _, sub = resource.partition("/")
    try:
        qualified = REGISTRY.resolve(base).qualified
    except KeyError:
        qualified = base
    return f"{qualified}/{sub}" if sub else qualified


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Kubernetes API emulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument("--git-version", default="v1.31.0")
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    parser.add_argument("--no-controllers", action="store_true", help="no garbage collector / namespace deletion")
    parser.add_argument("--tls-cert-file", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-private-key-file", help="private key of --tls-cert-file (PEM)")
    args = parser.parse_args(argv)
    emulator = Emulator(
        EmulatorConfig(
            host=args.host,
            port=args.port,
            token=args.token,
            git_version=args.git_version,
            bookmark_interval=args.bookmark_interval,
            controllers=not args.no_controllers,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_private_key_file,
        )
    )

    async def serve() -> None:
        await emulator.start_async()
        print(f"Kubernetes API emulator listening on {emulator.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emulator.stop_async()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
