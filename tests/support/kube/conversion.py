"""Conversion between API versions sharing one storage: events.k8s.io/v1 over core/v1 Event.

A real server stores both as one object, so an event written through one API is
visible through the other; the emulator keeps the core form and converts.
"""

from __future__ import annotations

from .resources import Obj, ResourceType

# events.k8s.io/v1 field -> core/v1 field (pkg/apis/events/v1/conversion.go)
_EVENTS_V1_TO_CORE = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_CORE_TO_EVENTS_V1 = {v: k for k, v in _EVENTS_V1_TO_CORE.items()}
_CONVERTED = frozenset(("events.k8s.io",))


def to_storage(view: ResourceType, obj: Obj) -> Obj:
    """The stored (core) form of ``obj`` received through ``view``."""
    if view.group not in _CONVERTED:
        return obj
    out = {_EVENTS_V1_TO_CORE.get(k, k): v for k, v in obj.items()}
    out["apiVersion"], out["kind"] = "v1", "Event"
    return out


def to_view(view: ResourceType, obj: Obj) -> Obj:
    """``obj`` (stored form) as served by ``view``."""
    if view.group not in _CONVERTED:
        return obj
    out = {_CORE_TO_EVENTS_V1.get(k, k): v for k, v in obj.items()}
    out["apiVersion"], out["kind"] = view.api_version, view.kind
    return out
