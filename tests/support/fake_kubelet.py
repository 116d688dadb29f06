"""A stand-in kubelet `/pods` endpoint for tests, backed by the Kubernetes API fixture.

It serves HTTPS on 127.0.0.1 with a throw-away self-signed certificate (the
product skips verification, as against a real kubelet), requires a bearer
token or a client certificate, and answers `/pods` with a PodList of the pods
the API (emulator or real) has bound to its node, as a kubelet would. Tests
switch it at runtime to 401/403/500 or make it slow.

It runs on its own event loop in a background thread, like the emulator, so a
test that blocks its own loop on synchronous `kube_api` calls cannot stall it.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.kube import KubeAPI, certs

FAILURE_BODIES = {
    401: "Unauthorized",
    403: "Forbidden (user=system:serviceaccount:kube-system:juicefs-csi-node-sa, verb=get, resource=nodes, "
    "subresource=proxy)",
}


class FakeKubelet:
    """`GET /pods` for ``node`` over HTTPS; control it with `fail_with`, `recover` and `delay`."""

    def __init__(
        self,
        kube_api: KubeAPI,
        node: str,
        *,
        token: str = "kubelet-test-token",
        port: int = 0,
        client_certs: bool = False,
    ) -> None:
        self.kube_api = kube_api
        self.node = node
        self.token = token
        self.port = port
        self.delay = 0.0
        """Seconds to wait before answering (for timeouts)."""
        self._failure: int | None = None
        self._lock = threading.Lock()
        self._served: dict[int, int] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="fake-kubelet-"))
        self.token_file = self._dir / "token"
        self.token_file.write_text(token + "\n")
        self._client_certs = client_certs
        self.client_cert: Path | None = None
        self.client_key: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- controls (thread-safe) -----------------------------------------------------------
    def fail_with(self, status: int) -> None:
        """Answer every request with ``status`` (401, 403, 500, ...) until `recover`."""
        self._failure = status

    def recover(self) -> None:
        self._failure = None

    def served(self, status: int | None = None) -> int:
        """Requests answered, all or with one status."""
        with self._lock:
            return sum(self._served.values()) if status is None else self._served.get(status, 0)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def env(self) -> dict[str, str]:
        """The environment a node plugin next to this kubelet would get."""
        env = {"HOST_IP": self.host, "KUBELET_PORT": str(self.port)}
        if self.client_cert is not None and self.client_key is not None:
            env |= {"KUBELET_CLIENT_CERT": str(self.client_cert), "KUBELET_CLIENT_KEY": str(self.client_key)}
        return env

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_async())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-kubelet-{self.node}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_async(self) -> None:
        app = web.Application()
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/pods/", self._pods)  # the Go driver asks for `/pods/`
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._tls())
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers still sleeping in `delay` must not outlive the loop.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _tls(self) -> ssl.SSLContext:
        pki = certs.generate(self._dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.serving_cert, pki.serving_key)
        if self._client_certs:
            ca = self._client_pki()
            context.verify_mode = ssl.CERT_OPTIONAL  # a token is fine too, as on a kubelet
            context.load_verify_locations(cafile=str(ca))
        return context

    def _client_pki(self) -> Path:
        """A client CA (the kubelet's --client-ca-file) and one client certificate signed by it."""
        now = datetime.datetime.now(datetime.UTC)
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name, ca = certs.self_signed_ca(ca_key, "fake-kubelet-client-ca", datetime.timedelta(days=1))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "juicefs-csi-node")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        ca_path = self._dir / "client-ca.crt"
        ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.client_cert = self._dir / "client.crt"
        self.client_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.client_key = self._dir / "client.key"
        self.client_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.client_key.chmod(0o600)
        return ca_path

    # --- the endpoint -------------------------------------------------------------------
    async def _pods(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        with self._lock:
            self._served[response.status] = self._served.get(response.status, 0) + 1
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        failure = self._failure
        if failure is not None:
            return web.Response(status=failure, text=FAILURE_BODIES.get(failure, "Internal Server Error"))
        if not self._authenticated(request):
            return web.Response(status=401, text="Unauthorized")
        listing: dict[str, Any] = await asyncio.to_thread(
            self.kube_api.list, "pods", field_selector=f"spec.nodeName={self.node}"
        )
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": listing.get("items") or []}
        )

    def _authenticated(self, request: web.Request) -> bool:
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
        return bool(peer)  # only present when it chained to the client CA
