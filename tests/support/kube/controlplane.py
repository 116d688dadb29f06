"""The one entry point tests use to get a Kubernetes API: the emulator or a real control plane.

``start_kube_api()`` starts a real control plane when ``KUBEBUILDER_ASSETS``
names a folder with ``kube-apiserver`` and ``etcd`` (envtest convention) and the
in-process emulator otherwise. Either way tests get a :class:`KubeAPI` with a
URL, a bearer token, a kubeconfig and helpers that only use plain HTTP.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import ssl
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from .client import HttpClient, KubeApiError, Response
from .emulator import Emulator, EmulatorConfig
from .envtest import RealControlPlane, assets_available, write_kubeconfig
from .kubelet import PollingKubelet
from .resources import REGISTRY, Obj

T = TypeVar("T")
ASSETS_ENV = "KUBEBUILDER_ASSETS"
PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class KubeAPI:
    """A running Kubernetes API (emulated or real) and backend-neutral helpers over HTTP."""

    def __init__(
        self,
        url: str,
        token: str | None,
        ca_pem: bytes | None,
        workdir: Path,
        *,
        emulator: Emulator | None,
        has_controllers: bool,
    ) -> None:
        self.url = url
        self.token = token
        self.ca_pem = ca_pem
        self.emulator = emulator
        """The emulator behind :attr:`url`, or None on a real control plane."""
        self.has_controllers = has_controllers
        """Whether garbage collection and namespace deletion happen (emulator, or a real kube-controller-manager)."""
        self.kubeconfig_path = write_kubeconfig(workdir / "kubeconfig", url, token, ca_pem)
        self.http = HttpClient(url, token, self.ssl_context())
        self._kubelet: PollingKubelet | None = None

    @property
    def is_real(self) -> bool:
        return self.emulator is None

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cadata=self.ca_pem.decode()) if self.ca_pem else None

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """An aiohttp session with base URL, token and CA set; paths like ``/api/v1/pods`` work."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(kwargs.pop("headers", {}))
        connector = aiohttp.TCPConnector(ssl=self.ssl_context() or False)
        return aiohttp.ClientSession(base_url=self.url, headers=headers, connector=connector, **kwargs)

    # --- paths and raw requests -------------------------------------------------------------
    @staticmethod
    def path(resource: str, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
        """REST path of ``resource`` ("pods", "leases", "jobs.batch", ...)."""
        rt = REGISTRY.resolve(resource)
        base = f"/apis/{rt.group}/{rt.version}" if rt.group else "/api/v1"
        if rt.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        path = f"{base}/{rt.plural}"
        if name is not None:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """Raw request; never raises for HTTP errors (see :class:`client.HttpClient`)."""
        return self.http.request(method, path, **kwargs)

    # --- object helpers ---------------------------------------------------------------------
    def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        rt = REGISTRY.by_kind(obj["apiVersion"], obj["kind"])
        if rt is None:
            raise KeyError(f"unknown kind {obj['apiVersion']}/{obj['kind']}")
        ns = namespace or obj.get("metadata", {}).get("namespace")
        result: Obj = self.http.call("POST", self.path(rt.qualified, ns), body=obj)
        return result

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        result: Obj = self.http.call("GET", self.path(resource, namespace, name))
        return result

    def get_or_none(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self.get(resource, name, namespace)
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        **params: Any,
    ) -> Obj:
        query = {"labelSelector": label_selector, "fieldSelector": field_selector, **params}
        result: Obj = self.http.call("GET", self.path(resource, namespace), params=query)
        return result

    def update(self, obj: Obj, subresource: str = "") -> Obj:
        rt = REGISTRY.by_kind(obj["apiVersion"], obj["kind"])
        if rt is None:
            raise KeyError(f"unknown kind {obj['apiVersion']}/{obj['kind']}")
        meta = obj["metadata"]
        result: Obj = self.http.call(
            "PUT", self.path(rt.qualified, meta.get("namespace"), meta["name"], subresource), body=obj
        )
        return result

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str = "",
    ) -> Obj:
        """``patch_type``: "merge", "json" or "strategic"."""
        result: Obj = self.http.call(
            "PATCH",
            self.path(resource, namespace, name, subresource),
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )
        return result

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Obj:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy is not None:
            body["propagationPolicy"] = propagation_policy
        if preconditions:
            body["preconditions"] = dict(preconditions)
        result: Obj = self.http.call("DELETE", self.path(resource, namespace, name), body=body)
        return result

    @staticmethod
    def wait_for(
        probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
    ) -> T:
        """Poll ``probe`` until it returns something other than None/False."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def wait_gone(self, resource: str, name: str, namespace: str | None = None, timeout: float = 10.0) -> None:
        self.wait_for(
            lambda: self.get_or_none(resource, name, namespace) is None,
            timeout,
            what=f"{resource} {namespace}/{name} to be deleted",
        )

    def create_namespace(self, prefix: str = "test-") -> str:
        created = self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"generateName": prefix}})
        return str(created["metadata"]["name"])

    def delete_namespace(self, name: str) -> None:
        """Start deleting ``name``; without a namespace controller it stays Terminating."""
        with contextlib.suppress(KubeApiError):
            self.delete("namespaces", name)

    def confirm_pod_deletion(self, name: str, namespace: str) -> None:
        """Do what a kubelet does once a terminating pod's containers stopped: delete with grace 0."""
        pod = self.get("pods", name, namespace)
        self.delete("pods", name, namespace, grace_period_seconds=0, preconditions={"uid": pod["metadata"]["uid"]})

    def set_kubelet(self, node: str = "*", *, running: bool = True, delay: float = 0.0) -> None:
        """Have a kubelet for ``node`` confirm pod deletions (emulated in-process, or over HTTP)."""
        if self.emulator is not None:
            self.emulator.set_kubelet(node, running=running, delay=delay)
            return
        if self._kubelet is None:
            self._kubelet = PollingKubelet(self.http)
        if running:
            self._kubelet.nodes[node] = delay
        else:
            self._kubelet.nodes.pop(node, None)

    def reset_kubelets(self) -> None:
        if self.emulator is not None:
            self.emulator.reset_kubelets()
        elif self._kubelet is not None:
            self._kubelet.nodes.clear()

    # --- emulator-only controls ----------------------------------------------------------
    def request_counts(self) -> dict[tuple[str, str], int] | None:
        """Requests by (verb, resource) on the emulator; None on a real control plane."""
        return self.emulator.request_counts() if self.emulator is not None else None

    def reset_counts(self) -> None:
        if self.emulator is not None:
            self.emulator.reset_counts()

    def close(self) -> None:
        if self._kubelet is not None:
            self._kubelet.stop()
            self._kubelet = None


@contextlib.contextmanager
def start_kube_api(assets: str | None = None, **emulator_options: Any) -> Iterator[KubeAPI]:
    """Start a Kubernetes API for tests and tear it down afterwards.

    ``assets`` defaults to ``$KUBEBUILDER_ASSETS``; with ``kube-apiserver`` and ``etcd``
    there it is a real control plane, else the emulator (configured by ``emulator_options``,
    see :class:`EmulatorConfig`).
    """
    assets = assets if assets is not None else os.environ.get(ASSETS_ENV)
    token = secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="kube-api-"))
    api: KubeAPI | None = None
    try:
        if assets_available(assets):
            plane = RealControlPlane(Path(str(assets)), workdir, token)
            plane.start()
            try:
                api = KubeAPI(
                    plane.url, token, plane.ca_pem, workdir, emulator=None, has_controllers=plane.has_controller_manager
                )
                yield api
            finally:
                plane.stop()
        else:
            if assets:
                warnings.warn(f"{ASSETS_ENV}={assets} has no kube-apiserver and etcd; using the emulator", stacklevel=3)
            options = {"bookmark_interval": 1.0, "tls": True, **emulator_options}
            with Emulator(EmulatorConfig(token=token), **options) as emulator:
                api = KubeAPI(
                    emulator.url,
                    token,
                    emulator.ca_pem,
                    workdir,
                    emulator=emulator,
                    has_controllers=emulator.config.controllers,
                )
                yield api
    finally:
        if api is not None:
            api.close()
        shutil.rmtree(workdir, ignore_errors=True)
