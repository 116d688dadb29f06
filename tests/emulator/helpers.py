"""Small builders and watch readers shared by the emulator tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

Obj = dict[str, Any]


def pod(name: str, node: str | None = None, *, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec},
    }
    if node:
        body["spec"]["nodeName"] = node
    return body


def configmap(name: str, labels: dict[str, str] | None = None, **extra: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}, **extra},
        "data": {"k": "v"},
    }


async def next_event(resp: aiohttp.ClientResponse, timeout: float = 10.0) -> Obj:
    """The next watch event; raises EOFError when the server ends the stream."""
    line = await asyncio.wait_for(resp.content.readline(), timeout)
    if not line:
        raise EOFError("watch stream ended")
    event: Obj = json.loads(line)
    return event


async def read_until_closed(resp: aiohttp.ClientResponse, timeout: float = 15.0) -> list[Obj]:
    events = []
    while True:
        try:
            events.append(await next_event(resp, timeout))
        except EOFError:
            return events


async def json_body(resp: aiohttp.ClientResponse) -> Obj:
    body: Obj = await resp.json(content_type=None)
    return body
