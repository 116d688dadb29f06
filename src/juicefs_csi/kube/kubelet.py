"""A client for the local kubelet's read-only `/pods` endpoint.

Asking the kubelet instead of the API server keeps the cost of "which pods run
on this node" on the node: a cluster of N nodes polling every few seconds would
otherwise be N list requests against the API server. The settings and their
environment names follow the Go driver (`pkg/k8sclient/kubelet_client.go`).

The kubelet's serving certificate is NOT verified, as in the Go driver: kubelet
serving certificates are usually self-signed by the kubelet itself, and the
address is the node's own IP from the downward API. See docs/kubelet.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
from lightkube.resources.core_v1 import Pod

log = logging.getLogger("juicefs_csi.kubelet")

DEFAULT_PORT = 10250
DEFAULT_TIMEOUT_SECONDS = 10.0
SERVICE_ACCOUNT_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
UNAUTHORIZED = (401, 403)
_BODY_EXCERPT = 200


class KubeletError(Exception):
    """A failed `/pods` request that is worth retrying: unreachable, timed out, 5xx, unreadable answer.

    `reason` is a short, bounded label for metrics: timeout, connection, status or decode.
    """

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class KubeletUnauthorized(KubeletError):
    """The kubelet refused us (401/403), or we have no credentials to offer it.

    Retrying does not help: the kubelet's authn/authz (webhook mode, `nodes/proxy`
    RBAC) or our credentials must change. Callers fall back to the API server.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, reason="unauthorized", status=status)


@dataclass(frozen=True)
class KubeletConfig:
    host: str
    port: int = DEFAULT_PORT
    client_cert: str | None = None
    client_key: str | None = None
    token_file: Path = SERVICE_ACCOUNT_TOKEN_FILE
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def url(self) -> str:
        return f"https://{_host_for_url(self.host)}:{self.port}/pods"

    @property
    def uses_client_cert(self) -> bool:
        return self.client_cert is not None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, token_file: Path = SERVICE_ACCOUNT_TOKEN_FILE
    ) -> KubeletConfig | None:
        """The kubelet to poll, or None without `HOST_IP` (then only the API server is used).

        Invalid values raise ValueError naming the variable: a typo in a DaemonSet
        should stop the rollout, not silently move load to the API server.
        """
        env = os.environ if environ is None else environ
        host = env.get("HOST_IP", "").strip()
        if not host:
            return None
        cert = env.get("KUBELET_CLIENT_CERT", "").strip() or None
        key = env.get("KUBELET_CLIENT_KEY", "").strip() or None
        if (cert is None) != (key is None):
            raise ValueError("KUBELET_CLIENT_CERT and KUBELET_CLIENT_KEY must be set together")
        return cls(
            host=host,
            port=_port(env.get("KUBELET_PORT", "")),
            client_cert=cert,
            client_key=key,
            token_file=token_file,
            timeout=_timeout(env.get("KUBELET_TIMEOUT", "")),
        )


def _port(raw: str) -> int:
    raw = raw.strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"KUBELET_PORT must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"KUBELET_PORT must be between 1 and 65535, got {port}")
    return port


def _timeout(raw: str) -> float:
    """Seconds, as the Go driver reads it; fractions are accepted."""
    raw = raw.strip()
    if not raw:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"KUBELET_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"KUBELET_TIMEOUT must be positive, got {raw!r}")
    return seconds


def _host_for_url(host: str) -> str:
    """IPv6 literals need brackets in a URL (`HOST_IP` is `status.hostIP`, which may be IPv6)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]" if address.version == 6 else host


def insecure_tls_context(config: KubeletConfig) -> ssl.SSLContext:
    """TLS without server verification (see the module docstring), with our client certificate if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if config.client_cert is not None:
        context.load_cert_chain(config.client_cert, config.client_key)
    return context


def parse_pod_list(body: bytes) -> list[Pod]:
    """A PodList JSON document → lightkube Pods; anything else is a KubeletError."""
    try:
        document: Any = json.loads(body)
    except ValueError as exc:
        raise KubeletError(f"kubelet answered with invalid JSON: {exc}", reason="decode") from None
    if not isinstance(document, dict) or document.get("kind", "PodList") != "PodList":
        raise KubeletError("kubelet answered with something other than a PodList", reason="decode")
    items = document.get("items")
    if items is None:  # Go encodes an empty pod list as `"items": null`
        return []
    if not isinstance(items, list):
        raise KubeletError("kubelet PodList has no item list", reason="decode")
    pods: list[Pod] = []
    for item in items:
        try:
            pods.append(cast(Pod, Pod.from_dict(item)))
        except (ValueError, TypeError) as exc:  # msgspec.ValidationError is a ValueError
            raise KubeletError(f"kubelet PodList has an invalid pod: {exc}", reason="decode") from None
    return pods


class KubeletClient:
    """GET `https://HOST_IP:KUBELET_PORT/pods` with a client certificate or the service account token."""

    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        """Built on first use so a broken client certificate surfaces as KubeletUnauthorized, like a 401."""
        if self._http is None:
            try:
                context = insecure_tls_context(self.config)
            except (OSError, ssl.SSLError) as exc:
                raise KubeletUnauthorized(f"kubelet client certificate unusable: {exc}") from None
            # trust_env=False: HTTPS_PROXY is meant for the outside world, never for the node's own kubelet.
            self._http = httpx.AsyncClient(verify=context, timeout=httpx.Timeout(self.config.timeout), trust_env=False)
        return self._http

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.uses_client_cert:
            return headers
        # Re-read each time: projected service account tokens are rotated by the kubelet.
        try:
            token = self.config.token_file.read_text().strip()
        except OSError as exc:
            raise KubeletUnauthorized(f"service account token unreadable: {exc}") from None
        if not token:
            raise KubeletUnauthorized(f"service account token file {self.config.token_file} is empty")
        headers["Authorization"] = f"Bearer {token}"
        return headers

    async def pods(self) -> list[Pod]:
        """The pods the kubelet runs. Raises KubeletUnauthorized (401/403) or KubeletError."""
        client = self._client()
        headers = self._headers()
        try:
            # httpx timeouts are per phase; the Go driver's is for the whole request.
            async with asyncio.timeout(self.config.timeout):
                response = await client.get(self.config.url, headers=headers)
        except TimeoutError:
            raise KubeletError(f"kubelet did not answer within {self.config.timeout:g}s", reason="timeout") from None
        except httpx.TimeoutException as exc:
            raise KubeletError(f"kubelet timed out: {exc!r}", reason="timeout") from None
        except httpx.HTTPError as exc:
            raise KubeletError(f"kubelet unreachable: {exc!r}", reason="connection") from None
        except OSError as exc:
            raise KubeletError(f"kubelet unreachable: {exc!r}", reason="connection") from None
        if response.status_code in UNAUTHORIZED:
            raise KubeletUnauthorized(
                f"kubelet answered {response.status_code}: {_excerpt(response.content)}", status=response.status_code
            )
        if response.status_code != 200:
            raise KubeletError(
                f"kubelet answered {response.status_code}: {_excerpt(response.content)}",
                reason="status",
                status=response.status_code,
            )
        return parse_pod_list(response.content)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "..."
