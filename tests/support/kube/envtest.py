"""A real control plane from ``KUBEBUILDER_ASSETS`` binaries, started like controller-runtime's envtest.

etcd and kube-apiserver (plus kube-controller-manager when the folder has it)
run as child processes on random loopback ports with a throw-away data dir,
self-signed serving certs, static token authentication (the token's user is in
system:masters) and RBAC authorization.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .client import HttpClient

BINARIES = ("etcd", "kube-apiserver")
START_TIMEOUT = 60.0


def assets_available(assets: str | None) -> bool:
    return bool(assets) and all(os.access(Path(str(assets)) / b, os.X_OK) for b in BINARIES)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, url: str, token: str | None, ca_pem: bytes | None) -> Path:
    """A kubeconfig for standard clients (JSON is valid YAML, so no YAML writer is needed)."""
    cluster: dict[str, str] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user = {"token": token} if token else {}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": cluster}],
                "users": [{"name": "test", "user": user}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}],
            },
            indent=2,
        )
    )
    return path


class RealControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) child processes."""

    def __init__(self, assets: Path, workdir: Path, token: str) -> None:
        self.assets = assets
        self.workdir = workdir
        self.token = token
        self.url = ""
        self.ca_pem = b""
        self.has_controller_manager = os.access(assets / "kube-controller-manager", os.X_OK)
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(self.assets / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append((name, proc))

    def _fail(self, what: str) -> RuntimeError:
        tails = []
        for name, _ in self._procs:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
            tails.append(f"--- {name}.log ---\n{text[-3000:]}")
        self.stop()
        return RuntimeError(f"{what}\n" + "\n".join(tails))

    def _wait(self, what: str, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise self._fail(f"{name} exited with {proc.returncode} while waiting for {what}")
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise self._fail(f"timed out waiting for {what}")

    def start(self) -> None:
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        etcd_help = subprocess.run([str(self.assets / "etcd"), "--help"], capture_output=True, check=False)
        etcd_args = [
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
        ]
        if b"unsafe-no-fsync" in etcd_help.stdout + etcd_help.stderr:
            etcd_args.append("--unsafe-no-fsync=true")
        self._spawn("etcd", etcd_args)
        etcd_client = HttpClient(etcd_url, None, None)
        self._wait("etcd", lambda: etcd_client.request("GET", "/health", timeout=2).status == 200)

        from . import certs  # noqa: PLC0415 - cryptography is only needed for a real control plane

        pki = certs.generate(self.workdir)
        self.ca_pem = pki.ca_pem
        token_file = self.workdir / "tokens.csv"
        token_file.write_text(f'{self.token},admin,admin,"system:masters"\n')
        self.url = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={self.workdir}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer={self.url}/",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
            ],
        )
        api = HttpClient(self.url, self.token, self.ssl_context())
        self._wait("kube-apiserver /readyz", lambda: api.request("GET", "/readyz", timeout=5).status == 200)
        for namespace in ("default", "kube-system", "kube-public"):
            path = f"/api/v1/namespaces/{namespace}"
            self._wait(f"namespace {namespace}", functools.partial(self._exists, api, path))
        if self.has_controller_manager:
            kubeconfig = write_kubeconfig(self.workdir / "kcm.kubeconfig", self.url, self.token, self.ca_pem)
            self._spawn(
                "kube-controller-manager",
                [
                    f"--kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    "--controllers=*",
                    f"--service-account-private-key-file={pki.sa_private_key}",
                    f"--root-ca-file={pki.ca_cert}",
                    "--use-service-account-credentials=false",
                    "--service-cluster-ip-range=10.0.0.0/24",
                ],
            )
            self._wait(
                "kube-controller-manager",
                lambda: (
                    self._procs[-1][1].poll() is None
                    and api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default").status == 200
                ),
            )

    @staticmethod
    def _exists(api: HttpClient, path: str) -> bool:
        return api.request("GET", path).status == 200

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def stop(self) -> None:
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
