"""Watch streams: history replay, selector-aware event types, bookmarks, timeouts.

Matches the watch cache of kube-apiserver: newline-delimited JSON events; an
expired resourceVersion is a 200 response carrying one ERROR event with a 410
Status; bookmarks carry only ``metadata.resourceVersion`` and are sent
periodically and 2 s before the watch's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping

from aiohttp import web

from .errors import ApiError, bad_request
from .resources import FieldGetter, Obj, ResourceType
from .selectors import field_getters
from .store import Change, Store
from .verbs import ListOptions, parse_rv

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_FUTURE_RV_WAIT = 3.0  # the watch cache waits this long for a resourceVersion it has not seen yet


def event_line(event_type: str, raw_object: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + raw_object + b"}\n"


def _encode(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Watcher:
    """One watch's filter and outgoing queue; fed synchronously by the store on every commit."""

    def __init__(self, view: ResourceType, namespace: str | None, opts: ListOptions, queue_limit: int) -> None:
        self.view = view
        self.namespace = namespace
        self.opts = opts
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queue_limit = queue_limit
        self.closed = False

    def index(self) -> tuple[str, str, FieldGetter] | None:
        """The exact field value this watch selects on (most selective first), for the store's index."""
        exact = self.opts.field.exact
        getters = field_getters(self.view.fields, self.view.namespaced)
        for field in ("metadata.name", "spec.nodeName", *sorted(exact)):
            if field in exact:
                return field, exact[field], getters[field]
        if self.namespace is not None:
            return "metadata.namespace", self.namespace, getters["metadata.namespace"]
        return None

    def visible(self, obj: Obj) -> bool:
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.opts.matches(obj)

    def event_type(self, change: Change) -> str | None:
        """The type this watcher sees: objects entering or leaving the selection are ADDED/DELETED."""
        now = self.visible(change.obj.obj)
        if change.type != "MODIFIED":
            return change.type if now else None
        before = change.prev is not None and self.visible(change.prev.obj)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    def offer(self, change: Change) -> None:
        if self.closed:
            return
        event_type = self.event_type(change)
        if event_type is None:
            return
        if self.queue.qsize() >= self.queue_limit:
            self.close()  # a consumer this slow is dropped, like the watch cache does
            return
        self.queue.put_nowait(event_line(event_type, change.obj.raw(self.view)))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


def bookmark(view: ResourceType, rv: int, initial_events_end: bool = False) -> bytes:
    meta: Obj = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_events_end:
        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
    return event_line("BOOKMARK", _encode({"kind": view.kind, "apiVersion": view.api_version, "metadata": meta}))


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


async def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
    )
    await response.prepare(request)
    return response


async def error_stream(request: web.Request, error: ApiError) -> web.StreamResponse:
    """A watch that fails after being accepted: 200 with a single ERROR event."""
    response = await _start(request)
    await response.write(event_line("ERROR", error.encode()))
    await response.write_eof()
    return response


async def serve(
    request: web.Request,
    store: Store,
    view: ResourceType,
    namespace: str | None,
    *,
    bookmark_interval: float,
    queue_limit: int,
) -> web.StreamResponse:
    """Serve ``?watch=true`` for ``view`` until timeout, client disconnect or emulator shutdown."""
    query = request.query
    opts = ListOptions.parse(view, query)
    bookmarks = _flag(query, "allowWatchBookmarks")
    initial_events = query.get("sendInitialEvents")
    rv_text = opts.resource_version
    if (
        initial_events is not None
        and initial_events.lower() == "true"
        and (opts.resource_version_match != "NotOlderThan" or not bookmarks)
    ):
        raise ApiError(
            422, "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan", "Invalid"
        )
    if opts.resource_version_match and initial_events is None:
        raise bad_request("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")
    try:
        timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
    except ValueError as exc:
        raise bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']!r}") from exc
    deadline = time.monotonic() + timeout if timeout is not None else None

    start_rv = parse_rv(rv_text) if rv_text and rv_text != "0" else None
    if start_rv is not None and start_rv > store.rv:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(store.reached(start_rv), _FUTURE_RV_WAIT)
        if store.rv < start_rv:
            return await error_stream(
                request, ApiError(504, f"Too large resource version: {start_rv}, current: {store.rv}", "Timeout")
            )

    # From here to subscribe() nothing awaits, so no change can slip between replay and live events.
    watcher = Watcher(view, namespace, opts, queue_limit)
    initial: list[bytes] = []
    send_state = start_rv is None or (initial_events or "").lower() == "true"
    if send_state:
        table = store.table(view.storage_key)
        initial = [event_line("ADDED", s.raw(view)) for s in table.ordered(namespace) if watcher.visible(s.obj)]
        if (initial_events or "").lower() == "true":
            initial.append(bookmark(view, store.rv, initial_events_end=True))
    else:
        assert start_rv is not None
        try:
            changes = store.changes_since(
                start_rv, view.storage_key, f"too old resource version: {start_rv} ({store.compacted + 1})"
            )
        except ApiError as exc:
            return await error_stream(request, exc)
        for change in changes:
            event_type = watcher.event_type(change)
            if event_type is not None:
                initial.append(event_line(event_type, change.obj.raw(view)))
    store.subscribe(view.storage_key, watcher, watcher.index())
    try:
        response = await _start(request)
        if initial:
            await response.write(b"".join(initial))
        await _pump(response, watcher, store, bookmarks=bookmarks, interval=bookmark_interval, deadline=deadline)
        await response.write_eof()
        return response
    finally:
        store.unsubscribe(view.storage_key, watcher)
        watcher.closed = True


async def _pump(
    response: web.StreamResponse,
    watcher: Watcher,
    store: Store,
    *,
    bookmarks: bool,
    interval: float,
    deadline: float | None,
) -> None:
    next_bookmark = time.monotonic() + interval if bookmarks else None
    # Like the watch cache: one bookmark 2 s before the deadline, if the watch lives that long.
    pre_timeout_bookmark = bookmarks and deadline is not None and deadline - 2 > time.monotonic()
    while True:
        now = time.monotonic()
        wake = min(
            t
            for t in (next_bookmark, deadline - 2 if pre_timeout_bookmark and deadline else None, deadline, now + 3600)
            if t is not None
        )
        try:
            line = await asyncio.wait_for(watcher.queue.get(), max(wake - now, 0))
        except TimeoutError:
            line = b""
        if line is None:
            return
        batch = [line] if line else []
        while not watcher.queue.empty():
            more = watcher.queue.get_nowait()
            if more is None:
                if batch:
                    await response.write(b"".join(batch))
                return
            batch.append(more)
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if batch:
                await response.write(b"".join(batch))
            return
        due_pre_timeout = pre_timeout_bookmark and deadline is not None and now >= deadline - 2
        if next_bookmark is not None and (now >= next_bookmark or due_pre_timeout):
            batch.append(bookmark(watcher.view, store.rv))
            next_bookmark = now + interval
            if due_pre_timeout:
                pre_timeout_bookmark = False
        if batch:
            await response.write(b"".join(batch))
