"""A minimal synchronous HTTP client for test helpers, working against both backends."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class KubeApiError(Exception):
    """A non-2xx answer; ``body`` is the ``Status`` object when the server sent one."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.body.get('message', body)}")

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))


class HttpClient:
    """Bearer-token HTTP(S) to one API server."""

    def __init__(self, url: str, token: str | None, ssl_context: ssl.SSLContext | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.ssl_context = ssl_context

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        url = self.url + path
        if params:
            query = {
                k: ("true" if v is True else "false" if v is False else str(v))
                for k, v in params.items()
                if v is not None
            }
            url += "?" + urllib.parse.urlencode(query)
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        all_headers = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = content_type
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`request`, returning the decoded body or raising :class:`KubeApiError`."""
        resp = self.request(method, path, **kwargs)
        try:
            decoded = resp.json()
        except ValueError:
            decoded = resp.body.decode(errors="replace")
        if resp.status >= 300:
            raise KubeApiError(resp.status, decoded, method, path)
        return decoded
