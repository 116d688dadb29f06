"""Pure decisions of the controller-side cleanup: which mount pods and helper Jobs nobody else will clean up.

The Go driver's controller runs a mount controller and a job controller for this (inventory M21); the
rules here follow them, with a grace period added so that a node plugin being restarted or rolled is
never raced:

- **Node plugin presence.** A node runs the node plugin while a pod labelled `app=juicefs-csi-node`
  (the Go driver's `CSINodeLabelKey`/`CSINodeLabelValue`, set by the Helm chart and the kustomize
  manifests on the node DaemonSet) is bound to it and has not terminated. A Pending or crash-looping
  plugin pod still counts: it will come back and manage its mount pods. A Node object that is deleted
  takes its pods with it (pod garbage collection), so "node gone" needs no separate rule.
- **Mount pods** (`app.kubernetes.io/name=juicefs-mount`) bound to a node that has had no node plugin
  for `grace` seconds are finalised: our finalizer `juicefs.com/finalizer` is removed and the pod is
  deleted. Only the node plugin ever removes that finalizer otherwise, so without this such pods would
  stay forever (node scale-down, issues #340/#460 of the Go driver).
- **Helper Jobs** (`app.kubernetes.io/name=juicefs-job`) are deleted, with propagation `Background`
  so their pods go too, once they finished (condition `Complete` or `Failed`) and either have no
  `ttlSecondsAfterFinished` or that TTL has passed since `completionTime`; and, like mount pods,
  when they are bound to a node (`spec.template.spec.nodeName`) without a node plugin for `grace`.
- **Safety valve.** While no node plugin pod exists at all, nothing is decided by node: a wrong
  namespace, label or missing RBAC must not look like "every node lost its plugin".

Everything here is a function of its arguments; `controller/cleaner.py` feeds it from informers and
carries the decisions out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from juicefs_csi.mountpod.names import APP_NAME_MOUNT, FINALIZER, LABEL_APP_NAME

# The Go driver's `config.CSINodeLabelKey` / `CSINodeLabelValue`: how node plugin pods are found.
NODE_PLUGIN_LABELS: Mapping[str, str] = {"app": "juicefs-csi-node"}
MOUNT_POD_LABELS: Mapping[str, str] = {LABEL_APP_NAME: APP_NAME_MOUNT}
# The Go driver's helper Jobs (delvol, createvol, cleancache, abort-fuse, ...) carry this label.
APP_NAME_JOB = "juicefs-job"
JOB_LABELS: Mapping[str, str] = {LABEL_APP_NAME: APP_NAME_JOB}
DEFAULT_GRACE_SECONDS = 120.0
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class Action(Enum):
    KEEP = "keep"  # nothing to do, now or later (until something changes)
    WAIT = "wait"  # look again after `Decision.after` seconds
    FINALISE = "finalise"  # mount pod: remove our finalizer, delete it unless it is being deleted
    DELETE = "delete"  # Job: delete with propagation Background


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    after: float = 0.0


KEEP = Decision(Action.KEEP)


def _node_of_pod(pod: Pod) -> str:
    return (pod.spec.nodeName if pod.spec is not None else None) or ""


def _node_of_job(job: Job) -> str:
    spec = job.spec
    template = spec.template.spec if spec is not None and spec.template is not None else None
    return (template.nodeName if template is not None else None) or ""


def plugin_nodes(pods: Iterable[Pod]) -> frozenset[str]:
    """Nodes with a node plugin pod that has not terminated (Pending and restarting pods count)."""
    nodes: set[str] = set()
    for pod in pods:
        node = _node_of_pod(pod)
        phase = pod.status.phase if pod.status is not None else None
        if node and phase not in TERMINAL_PHASES:
            nodes.add(node)
    return frozenset(nodes)


def watched_nodes(mount_pods: Iterable[Pod], jobs: Iterable[Job]) -> frozenset[str]:
    """Nodes whose node plugin matters: those with a mount pod or a node-bound Job of ours."""
    nodes = {_node_of_pod(pod) for pod in mount_pods} | {_node_of_job(job) for job in jobs}
    nodes.discard("")
    return frozenset(nodes)


def track_absence(
    absent_since: Mapping[str, float], watched: Iterable[str], present: frozenset[str], now: float
) -> dict[str, float]:
    """Since when (monotonic, by our clock) each watched node has been seen without a node plugin.

    A node whose plugin is back, or that no longer matters, is forgotten: its next absence starts a
    fresh grace period. A new leader starts with an empty map, so it waits a full grace period too.
    """
    return {node: absent_since.get(node, now) for node in watched if node not in present}


def _orphaned_for(node: str, absent_since: Mapping[str, float], now: float, grace: float) -> Decision | None:
    """None when the node has its plugin; else WAIT until the grace period ran out, or FINALISE/DELETE."""
    since = absent_since.get(node)
    if since is None:
        return None
    remaining = since + grace - now
    if remaining > 0:
        return Decision(Action.WAIT, f"node {node} has no node plugin; waiting out the grace period", remaining)
    return Decision(Action.FINALISE, f"node {node} has had no node plugin for {now - since:.0f}s")


def decide_mount_pod(
    pod: Pod, *, absent_since: Mapping[str, float], any_plugin: bool, now: float, grace: float
) -> Decision:
    """A mount pod is ours to finalise only when its node has been without a node plugin for `grace`."""
    meta = pod.metadata
    if meta is None or (meta.labels or {}).get(LABEL_APP_NAME) != APP_NAME_MOUNT:
        return KEEP
    node = _node_of_pod(pod)
    if not node or not any_plugin:
        return KEEP
    deleting = meta.deletionTimestamp is not None
    if deleting and FINALIZER not in (meta.finalizers or []):
        return KEEP  # already on its way out, nothing of ours holds it
    decision = _orphaned_for(node, absent_since, now, grace)
    return decision if decision is not None else KEEP


def job_finished(job: Job) -> bool:
    conditions = (job.status.conditions if job.status is not None else None) or []
    return any(c.status == "True" and c.type in ("Complete", "Failed") for c in conditions)


def decide_job(
    job: Job, *, absent_since: Mapping[str, float], any_plugin: bool, now: float, wall_now: datetime, grace: float
) -> Decision:
    """The Go job controller's rule: finished and past its TTL (or without one), or on a node without a plugin.

    `wall_now` is compared with the Job's `completionTime` (written by the API server's clock): the TTL
    controller does the same, and a wrong clock here only moves an already finished Job's deletion.
    """
    meta = job.metadata
    if meta is None or meta.deletionTimestamp is not None:
        return KEEP
    if (meta.labels or {}).get(LABEL_APP_NAME) != APP_NAME_JOB:
        return KEEP
    if job_finished(job):
        ttl = job.spec.ttlSecondsAfterFinished if job.spec is not None else None
        if ttl is None:
            return Decision(Action.DELETE, "finished, no ttlSecondsAfterFinished")
        completed = job.status.completionTime if job.status is not None else None
        if completed is not None:
            remaining = (completed.timestamp() + ttl) - wall_now.timestamp()
            if remaining < 0:
                return Decision(Action.DELETE, "finished and past its ttlSecondsAfterFinished")
            ttl_wait: Decision | None = Decision(Action.WAIT, "finished, within its TTL", remaining)
        else:
            ttl_wait = None  # failed without a completion time: the TTL controller's business, as in Go
    else:
        ttl_wait = None
    node = _node_of_job(job)
    if node and any_plugin:
        orphaned = _orphaned_for(node, absent_since, now, grace)
        if orphaned is not None:
            if orphaned.action is Action.FINALISE:
                return Decision(Action.DELETE, orphaned.reason)
            if ttl_wait is None or orphaned.after < ttl_wait.after:
                return orphaned
    return ttl_wait if ttl_wait is not None else KEEP
