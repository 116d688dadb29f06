"""What the node reconciler must do about one mount pod: a pure function of what it sees.

The pod driver of the Go driver, as data: the reconciler executes the actions,
this module only decides them, so every rule is tested with plain values.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from juicefs_csi.errors import DriverError
from juicefs_csi.mountpod.names import ANN_DELETE_AT, ANN_DELETE_DELAY, is_reference_key
from juicefs_csi.volume.settings import parse_duration

# kubelet's layout: <kubelet dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<pv>/mount
_POD_UID_IN_TARGET = re.compile(r"/pods/([0-9a-fA-F-]{36})/volumes/")
RESOURCE_ERROR_HINTS = ("OutOf", "Insufficient cpu", "Insufficient memory", "to reclaim resources")


class Action(Enum):
    REBIND = "rebind targets"
    DROP_REFS = "drop references of gone pods"
    MARK_DELETE_AT = "annotate delete-at"
    DELETE = "delete mount pod"
    RECREATE = "recreate mount pod"
    RECREATE_WITHOUT_REQUESTS = "recreate mount pod without resource requests"
    FINALIZE = "clean up and remove finalizer"


@dataclass(frozen=True)
class PodView:
    """The parts of a mount pod a decision needs."""

    name: str
    annotations: Mapping[str, str]
    deleting: bool
    phase: str
    ready: bool
    reason: str = ""
    message: str = ""
    has_finalizer: bool = True


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    gone_refs: tuple[str, ...] = ()
    delete_at: datetime | None = None


def references(annotations: Mapping[str, str]) -> dict[str, str]:
    """Reference annotation key -> target path; their number is the mount pod's reference count."""
    return {key: value for key, value in annotations.items() if is_reference_key(key)}


def pod_uid_of_target(target: str) -> str | None:
    match = _POD_UID_IN_TARGET.search(target)
    return match.group(1) if match else None


def delete_delay(annotations: Mapping[str, str]) -> float:
    raw = annotations.get(ANN_DELETE_DELAY, "")
    try:
        return parse_duration(raw, ANN_DELETE_DELAY) if raw else 0.0
    except DriverError:
        return 0.0


def parse_time(raw: str) -> datetime | None:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_resource_error(pod: PodView) -> bool:
    text = f"{pod.reason} {pod.message}"
    return pod.phase in ("Failed", "Pending") and any(hint in text for hint in RESOURCE_ERROR_HINTS)


def decide(
    pod: PodView, live_pod_uids: Collection[str] | None, bound_targets: Collection[str], now: datetime
) -> Decision:
    """`live_pod_uids` is None until the node's pod list is known: never drop references on a guess.

    A reference is stale only when its app pod is gone AND its target is no longer bound:
    a pod cache that lags behind a fresh publish must never cost a workload its mount.
    """
    refs = references(pod.annotations)
    if pod.deleting:
        on_delete = [Action.RECREATE] if refs else []
        if pod.has_finalizer:
            on_delete.append(Action.FINALIZE)
        return Decision(tuple(on_delete))
    gone: tuple[str, ...] = ()
    if live_pod_uids is not None:
        gone = tuple(
            key
            for key, target in refs.items()
            if (uid := pod_uid_of_target(target)) is not None
            and uid not in live_pod_uids
            and target not in bound_targets
        )
    remaining = len(refs) - len(gone)
    actions: list[Action] = [Action.DROP_REFS] if gone else []
    if remaining == 0:
        delay = delete_delay(pod.annotations)
        deadline = parse_time(pod.annotations.get(ANN_DELETE_AT, ""))
        if delay <= 0 or (deadline is not None and deadline <= now):
            return Decision((*actions, Action.DELETE), gone)
        if deadline is None:
            return Decision((*actions, Action.MARK_DELETE_AT), gone, now + timedelta(seconds=delay))
        return Decision(tuple(actions), gone, deadline)
    if is_resource_error(pod):
        return Decision((*actions, Action.RECREATE_WITHOUT_REQUESTS), gone)
    if pod.ready:
        actions.append(Action.REBIND)
    return Decision(tuple(actions), gone)
