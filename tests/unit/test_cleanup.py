"""The controller-side cleanup's pure rules: node plugin presence, grace period, mount pods, helper Jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from juicefs_csi.controller.cleanup import (
    Action,
    decide_job,
    decide_mount_pod,
    plugin_nodes,
    track_absence,
    watched_nodes,
)

GRACE = 60.0
NOW = 1000.0
WALL = datetime(2030, 1, 1, tzinfo=UTC)


def pod(
    name: str,
    node: str | None,
    *,
    labels: dict[str, str] | None = None,
    phase: str | None = None,
    finalizers: list[str] | None = None,
    deleting: bool = False,
) -> Pod:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "kube-system",
        "resourceVersion": "1",
        "labels": {"app.kubernetes.io/name": "juicefs-mount"} if labels is None else labels,
    }
    if finalizers is not None:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    body: dict[str, Any] = {"metadata": meta, "spec": {"containers": [{"name": "c"}]}}
    if node:
        body["spec"]["nodeName"] = node
    if phase:
        body["status"] = {"phase": phase}
    return cast(Pod, Pod.from_dict(body))


def plugin(node: str, phase: str | None = "Running") -> Pod:
    return pod(f"juicefs-csi-node-{node}", node, labels={"app": "juicefs-csi-node"}, phase=phase)


def mount_pod(node: str | None, **kwargs: Any) -> Pod:
    kwargs.setdefault("finalizers", ["juicefs.com/finalizer"])
    return pod(f"juicefs-{node}-pv", node, **kwargs)


def job(
    name: str = "juicefs-abc-delvol",
    *,
    node: str | None = None,
    conditions: tuple[str, ...] = (),
    ttl: int | None = None,
    completed: datetime | None = None,
    deleting: bool = False,
    labels: dict[str, str] | None = None,
) -> Job:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "kube-system",
        "labels": {"app.kubernetes.io/name": "juicefs-job"} if labels is None else labels,
    }
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    template: dict[str, Any] = {"spec": {"containers": [{"name": "c"}], "restartPolicy": "Never"}}
    if node:
        template["spec"]["nodeName"] = node
    spec: dict[str, Any] = {"template": template}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    status: dict[str, Any] = {"conditions": [{"type": c, "status": "True"} for c in conditions]}
    if completed is not None:
        status["completionTime"] = completed.strftime("%Y-%m-%dT%H:%M:%SZ")
    return cast(Job, Job.from_dict({"metadata": meta, "spec": spec, "status": status}))


def decide_pod(p: Pod, absent: dict[str, float], any_plugin: bool = True, now: float = NOW) -> Any:
    return decide_mount_pod(p, absent_since=absent, any_plugin=any_plugin, now=now, grace=GRACE)


def decide(j: Job, absent: dict[str, float] | None = None, any_plugin: bool = True, now: float = NOW) -> Any:
    return decide_job(j, absent_since=absent or {}, any_plugin=any_plugin, now=now, wall_now=WALL, grace=GRACE)


# --- node plugin presence -------------------------------------------------------------------------


def test_plugin_nodes_count_pending_and_running_pods_but_not_finished_or_unscheduled_ones() -> None:
    pods = [
        plugin("a"),
        plugin("b", phase="Pending"),
        plugin("c", phase=None),
        plugin("d", phase="Failed"),
        plugin("e", phase="Succeeded"),
        pod("unscheduled", None, labels={"app": "juicefs-csi-node"}),
    ]
    assert plugin_nodes(pods) == {"a", "b", "c"}


def test_watched_nodes_are_those_of_mount_pods_and_node_bound_jobs() -> None:
    assert watched_nodes([mount_pod("a"), mount_pod(None)], [job(node="b"), job("j2")]) == {"a", "b"}


def test_absence_starts_when_first_seen_and_is_kept_until_the_plugin_returns() -> None:
    absent = track_absence({}, {"a", "b"}, frozenset({"a"}), NOW)
    assert absent == {"b": NOW}
    later = track_absence(absent, {"a", "b", "c"}, frozenset({"a"}), NOW + 5)
    assert later == {"b": NOW, "c": NOW + 5}, "an absence keeps its start; a new one starts now"
    back = track_absence(later, {"a", "b", "c"}, frozenset({"a", "b"}), NOW + 6)
    assert back == {"c": NOW + 5}, "a returning plugin clears its node"
    assert track_absence(back, {"a"}, frozenset({"a"}), NOW + 7) == {}, "nodes without our pods are forgotten"


# --- mount pods ---------------------------------------------------------------------------------


def test_mount_pod_on_a_node_with_its_plugin_is_kept() -> None:
    assert decide_pod(mount_pod("a"), {}).action is Action.KEEP


def test_mount_pod_waits_out_the_grace_period_then_is_finalised() -> None:
    absent = {"b": NOW - 20}
    waiting = decide_pod(mount_pod("b"), absent)
    assert waiting.action is Action.WAIT
    assert waiting.after == pytest.approx(GRACE - 20)
    assert decide_pod(mount_pod("b"), absent, now=NOW - 20 + GRACE).action is Action.FINALISE
    finalise = decide_pod(mount_pod("b"), absent, now=NOW + GRACE)
    assert finalise.action is Action.FINALISE
    assert "node b" in finalise.reason


def test_nothing_is_decided_by_node_while_no_node_plugin_exists_at_all() -> None:
    """A wrong namespace, label or RBAC must not look like every node losing its plugin."""
    assert decide_pod(mount_pod("b"), {"b": 0.0}, any_plugin=False).action is Action.KEEP
    assert decide(job(node="b"), {"b": 0.0}, any_plugin=False).action is Action.KEEP


def test_deleting_mount_pod_with_our_finalizer_is_finalised_and_without_it_left_alone() -> None:
    absent = {"b": 0.0}
    assert decide_pod(mount_pod("b", deleting=True), absent).action is Action.FINALISE
    assert decide_pod(mount_pod("b", deleting=True, finalizers=["other/keep"]), absent).action is Action.KEEP
    assert decide_pod(mount_pod("b", finalizers=[]), absent).action is Action.FINALISE, "deleted even without it"


def test_pods_that_are_not_mount_pods_or_not_scheduled_are_kept() -> None:
    assert decide_pod(pod("app", "b", labels={"app": "web"}), {"b": 0.0}).action is Action.KEEP
    assert decide_pod(mount_pod(None), {"": 0.0}).action is Action.KEEP


# --- helper Jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", ["Complete", "Failed"])
def test_finished_job_without_ttl_is_deleted(condition: str) -> None:
    assert decide(job(conditions=(condition,))).action is Action.DELETE


def test_running_job_is_kept() -> None:
    assert decide(job()).action is Action.KEEP
    assert decide(job(node="a")).action is Action.KEEP, "its node has a plugin"


def test_job_with_ttl_waits_for_it_and_is_deleted_after_it() -> None:
    within = decide(job(conditions=("Complete",), ttl=100, completed=WALL - timedelta(seconds=40)))
    assert within.action is Action.WAIT
    assert within.after == pytest.approx(60)
    past = decide(job(conditions=("Complete",), ttl=100, completed=WALL - timedelta(seconds=101)))
    assert past.action is Action.DELETE


def test_failed_job_with_ttl_and_no_completion_time_is_left_to_the_ttl_controller() -> None:
    assert decide(job(conditions=("Failed",), ttl=100)).action is Action.KEEP


def test_job_on_a_node_without_plugin_is_deleted_after_the_grace_period_even_while_running() -> None:
    assert decide(job(node="b"), {"b": NOW - 10}).action is Action.WAIT
    assert decide(job(node="b"), {"b": NOW - GRACE}).action is Action.DELETE


def test_the_earlier_of_ttl_and_grace_decides_when_to_look_again() -> None:
    finished = job(node="b", conditions=("Complete",), ttl=3600, completed=WALL)
    decision = decide(finished, {"b": NOW - 10})
    assert decision.action is Action.WAIT
    assert decision.after == pytest.approx(GRACE - 10)


def test_deleting_or_foreign_jobs_are_kept() -> None:
    assert decide(job(conditions=("Complete",), deleting=True)).action is Action.KEEP
    assert decide(job(conditions=("Complete",), labels={"app.kubernetes.io/name": "other"})).action is Action.KEEP
