"""What the node reconciler must do about one mount pod: a pure function of what it sees.

The pod driver of the Go driver, as data: the reconciler executes the actions,
this module only decides them, so every rule is tested with plain values.

A mount pod's life, as decided here:

- live, with references: re-bind targets whose bind went dead (REBIND);
- live, no references left: delete it, at once or after its delete delay (MARK_DELETE_AT, then DELETE);
- failed or unschedulable for lack of CPU or memory: replace it with zero requests (RECREATE_WITHOUT_REQUESTS);
- failed for another reason (evicted, ...) with references: replace it as it was (RECREATE);
- deleted with references left: a replacement takes them over (RECREATE);
- deleted, once the kubelet has stopped its containers: clean its mount up, then drop the finalizer (FINALIZE);
- deleted, but still not stopped long after its grace period: abort its FUSE connection (ABORT), then FINALIZE.
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
# A pod that terminates for longer than this after its grace period ended is stuck (the Go driver: 1 min).
STUCK_AFTER_SECONDS = 60.0
FINISHED_PHASES = ("Failed", "Succeeded")


class Action(Enum):
    REBIND = "rebind targets"
    DROP_REFS = "drop references of gone pods"
    MARK_DELETE_AT = "annotate delete-at"
    CLEAR_DELETE_AT = "clear delete-at"
    DELETE = "delete mount pod"
    RECREATE = "recreate mount pod"
    RECREATE_WITHOUT_REQUESTS = "recreate mount pod without resource requests"
    ABORT = "abort the FUSE connection of a stuck mount pod"
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
    deletion_at: datetime | None = None
    """`metadata.deletionTimestamp`: when the grace period of a deleted pod ends."""
    stopped: bool = False
    """`deletionGracePeriodSeconds` is 0: the kubelet confirmed that the containers stopped."""
    unschedulable: str = ""
    """The message of a `PodScheduled=False` condition with reason `Unschedulable`."""


@dataclass(frozen=True)
class Policy:
    """The switches of the global ConfigMap that change decisions, and the stuck timeout."""

    remove_requests: bool = True
    """`enableAutoRemoveRequestResources`."""
    abort_stuck: bool = True
    """`enableAutoAbortStuckMountPod`."""
    stuck_after: float = STUCK_AFTER_SECONDS


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    gone_refs: tuple[str, ...] = ()
    delete_at: datetime | None = None
    requeue_at: datetime | None = None
    """Look again then, even if nothing changes: a delete deadline, or when a terminating pod counts as stuck."""


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
    """The Go driver's IsPodResourceError: the kubelet refused the pod for CPU or memory, or the scheduler did."""
    if pod.phase == "Failed" and (
        "OutOf" in pod.reason or (pod.reason == "UnexpectedAdmissionError" and "to reclaim resources" in pod.message)
    ):
        return True
    return "Insufficient cpu" in pod.unschedulable or "Insufficient memory" in pod.unschedulable


def stale_references(
    annotations: Mapping[str, str], live_pod_uids: Collection[str] | None, bound_targets: Collection[str]
) -> tuple[str, ...]:
    """References whose app pod is gone AND whose target is no longer bound; none while the pod list is unknown."""
    if live_pod_uids is None:
        return ()
    return tuple(
        key
        for key, target in references(annotations).items()
        if (uid := pod_uid_of_target(target)) is not None and uid not in live_pod_uids and target not in bound_targets
    )


def decide(
    pod: PodView,
    live_pod_uids: Collection[str] | None,
    bound_targets: Collection[str],
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
) -> Decision:
    """`live_pod_uids` is None until the node's pod list is known: never drop references on a guess.

    A reference is stale only when its app pod is gone AND its target is no longer bound:
    a pod cache that lags behind a fresh publish must never cost a workload its mount.
    """
    gone = stale_references(pod.annotations, live_pod_uids, bound_targets)
    remaining = len(references(pod.annotations)) - len(gone)
    if pod.deleting:
        return _deleted(pod, remaining, gone, now, policy)
    actions: list[Action] = [Action.DROP_REFS] if gone else []
    if remaining == 0:
        return _unused(pod, actions, gone, now)
    if ANN_DELETE_AT in pod.annotations:
        actions.append(Action.CLEAR_DELETE_AT)  # a publish raced the mark: the pod is in use again
    if is_resource_error(pod):
        if policy.remove_requests:
            actions.append(Action.RECREATE_WITHOUT_REQUESTS)
        return Decision(tuple(actions), gone)
    if pod.phase in FINISHED_PHASES:
        # With restartPolicy Always only the kubelet ends a mount pod (eviction, admission): replace it.
        return Decision((*actions, Action.RECREATE), gone)
    if pod.ready:
        actions.append(Action.REBIND)
    return Decision(tuple(actions), gone)


def _deleted(pod: PodView, remaining: int, gone: tuple[str, ...], now: datetime, policy: Policy) -> Decision:
    """References left move to a replacement at once; the old mount is cleaned only once its client is gone."""
    actions: list[Action] = [Action.RECREATE] if remaining else []
    if pod.stopped:
        if pod.has_finalizer:
            actions.append(Action.FINALIZE)
        return Decision(tuple(actions), gone)
    if not pod.has_finalizer:
        return Decision(tuple(actions), gone)  # already cleaned up (by this driver, or given up by the controller)
    stuck_at = (pod.deletion_at or now) + timedelta(seconds=policy.stuck_after)
    if now < stuck_at:
        return Decision(tuple(actions), gone, requeue_at=stuck_at)
    abort = [Action.ABORT] if policy.abort_stuck else []
    return Decision((*actions, *abort, Action.FINALIZE), gone)


def _unused(pod: PodView, actions: list[Action], gone: tuple[str, ...], now: datetime) -> Decision:
    """No references: delete now, or once the delete delay has run out (a failed pod is never worth keeping)."""
    delay = delete_delay(pod.annotations)
    deadline = parse_time(pod.annotations.get(ANN_DELETE_AT, ""))
    if delay <= 0 or pod.phase in FINISHED_PHASES or (deadline is not None and deadline <= now):
        return Decision((*actions, Action.DELETE), gone)
    if deadline is None:
        delete_at = now + timedelta(seconds=delay)
        return Decision((*actions, Action.MARK_DELETE_AT), gone, delete_at, requeue_at=delete_at)
    return Decision(tuple(actions), gone, deadline, requeue_at=deadline)
