"""Secrets read by name, one GET shared by every caller within a few seconds.

A burst of claims of one StorageClass all need the same provisioner Secret; reading it once per claim
spent half of the provisioner's token bucket (KUBE_QPS) on identical GETs. Watching Secrets instead
would mirror every Secret of the cluster in memory, which a controller must not do. So only Secrets
actually asked for are kept, for `ttl` seconds, and concurrent callers share the GET in flight.
Failures are never kept: a Secret that is created or fixed is seen on the next retry.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import time
from collections.abc import Callable

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Secret

SECRET_TTL_SECONDS = 5.0

SecretData = dict[str, str]


def decoded(secret: Secret) -> SecretData:
    """`data` decoded, with `stringData` on top (as the API server merges them on write)."""
    data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()}
    data.update(secret.stringData or {})
    return data


class SecretReader:
    def __init__(
        self,
        client: AsyncClient,
        ttl: float = SECRET_TTL_SECONDS,
        size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._recent: collections.OrderedDict[tuple[str, str], tuple[float, SecretData]] = collections.OrderedDict()
        self._in_flight: dict[tuple[str, str], asyncio.Task[SecretData]] = {}

    async def read(self, namespace: str, name: str) -> SecretData:
        """The Secret's decoded data; raises what `AsyncClient.get` raises (ApiError 404, ...)."""
        key = (namespace, name)
        recent = self._recent.get(key)
        if recent is not None and self.clock() - recent[0] < self.ttl:
            return dict(recent[1])
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key), name=f"secret-{namespace}/{name}")
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # A caller cancelled while waiting must not cancel the GET the others wait for.
        return dict(await asyncio.shield(task))

    async def _fetch(self, key: tuple[str, str]) -> SecretData:
        started = self.clock()
        data = decoded(await self.client.get(Secret, key[1], namespace=key[0]))
        self._recent[key] = (started, data)
        self._recent.move_to_end(key)
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)
        return data
