"""The mount pod state machine, as plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from juicefs_csi.mountpod.names import ANN_DELETE_AT, ANN_DELETE_DELAY, reference_key
from juicefs_csi.node.decisions import (
    STUCK_AFTER_SECONDS,
    Action,
    PodView,
    Policy,
    decide,
    is_resource_error,
    pod_uid_of_target,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UID_A = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
UID_B = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"


def target(uid: str) -> str:
    return f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/pv-1/mount"


def pod(
    *targets: str,
    deleting: bool = False,
    phase: str = "Running",
    ready: bool = True,
    reason: str = "",
    message: str = "",
    finalizer: bool = True,
    deletion_at: datetime | None = None,
    stopped: bool = False,
    unschedulable: str = "",
    annotations: dict[str, str] | None = None,
) -> PodView:
    refs = {reference_key(t): t for t in targets}
    return PodView(
        "mp",
        {**refs, **(annotations or {})},
        deleting,
        phase,
        ready,
        reason,
        message,
        finalizer,
        deletion_at if deletion_at is not None or not deleting else NOW,
        stopped,
        unschedulable,
    )


def deleted(
    *targets: str, stopped: bool = False, finalizer: bool = True, deletion_at: datetime | None = None
) -> PodView:
    """Deleted at NOW - grace (its deletionTimestamp, the end of the grace period, is NOW) unless given."""
    return pod(*targets, deleting=True, stopped=stopped, finalizer=finalizer, deletion_at=deletion_at)


def test_pod_uid_is_read_from_the_kubelet_target_layout() -> None:
    assert pod_uid_of_target(target(UID_A)) == UID_A
    assert pod_uid_of_target("/mnt/somewhere/else") is None


# --- references -----------------------------------------------------------------------------


def test_ready_pod_with_live_references_rebinds() -> None:
    assert decide(pod(target(UID_A)), {UID_A}, set(), NOW).actions == (Action.REBIND,)


def test_a_pod_that_is_not_running_yet_is_left_alone() -> None:
    assert decide(pod(target(UID_A), phase="Pending", ready=False), {UID_A}, set(), NOW).actions == ()


def test_references_of_gone_pods_are_dropped_and_the_pod_deleted() -> None:
    decision = decide(pod(target(UID_A)), set(), set(), NOW)
    assert decision.actions == (Action.DROP_REFS, Action.DELETE)
    assert decision.gone_refs == (reference_key(target(UID_A)),)


def test_only_the_gone_references_are_dropped_and_the_pod_kept() -> None:
    decision = decide(pod(target(UID_A), target(UID_B)), {UID_B}, set(), NOW)
    assert decision.actions == (Action.DROP_REFS, Action.REBIND)
    assert decision.gone_refs == (reference_key(target(UID_A)),)


def test_a_bound_target_is_never_stale_even_if_the_pod_cache_lags() -> None:
    assert Action.DROP_REFS not in decide(pod(target(UID_A)), set(), {target(UID_A)}, NOW).actions


def test_unknown_pod_list_drops_nothing() -> None:
    assert decide(pod(target(UID_A)), None, set(), NOW).actions == (Action.REBIND,)


def test_a_target_outside_the_kubelet_layout_is_never_stale() -> None:
    assert decide(pod("/mnt/elsewhere"), set(), set(), NOW).actions == (Action.REBIND,)


# --- delayed deletion -----------------------------------------------------------------------


def test_delete_delay_marks_a_deadline_then_deletes_after_it() -> None:
    first = decide(pod(annotations={ANN_DELETE_DELAY: "1m"}), {UID_A}, set(), NOW)
    assert first.actions == (Action.MARK_DELETE_AT,)
    assert first.delete_at == first.requeue_at == NOW + timedelta(minutes=1)
    waiting = pod(annotations={ANN_DELETE_DELAY: "1m", ANN_DELETE_AT: "2026-11-24T12:01:00Z"})
    kept = decide(waiting, {UID_A}, set(), NOW)
    assert kept.actions == ()
    assert kept.requeue_at == NOW + timedelta(minutes=1)  # the reconciler looks again when it is due
    assert decide(waiting, {UID_A}, set(), NOW + timedelta(minutes=2)).actions == (Action.DELETE,)


def test_last_reference_of_a_gone_pod_dropped_with_a_delay_marks_the_deadline() -> None:
    decision = decide(pod(target(UID_A), annotations={ANN_DELETE_DELAY: "30s"}), set(), set(), NOW)
    assert decision.actions == (Action.DROP_REFS, Action.MARK_DELETE_AT)


def test_a_pod_in_use_again_loses_a_stale_deadline() -> None:
    """A publish raced the mark: left there, the next last unpublish would delete without any delay."""
    raced = pod(target(UID_A), annotations={ANN_DELETE_DELAY: "1m", ANN_DELETE_AT: "2026-11-24T11:00:00Z"})
    assert decide(raced, {UID_A}, set(), NOW).actions == (Action.CLEAR_DELETE_AT, Action.REBIND)


def test_an_unparsable_delay_means_no_delay() -> None:
    assert decide(pod(annotations={ANN_DELETE_DELAY: "soon"}), {UID_A}, set(), NOW).actions == (Action.DELETE,)


def test_a_failed_pod_without_references_is_deleted_despite_a_delay() -> None:
    failed = pod(phase="Failed", ready=False, annotations={ANN_DELETE_DELAY: "1h"})
    assert decide(failed, set(), set(), NOW).actions == (Action.DELETE,)


# --- deleted pods ---------------------------------------------------------------------------


def test_deleted_pod_with_references_is_replaced_at_once_and_finalized_once_stopped() -> None:
    running = decide(deleted(target(UID_A)), {UID_A}, set(), NOW)
    assert running.actions == (Action.RECREATE,)
    assert running.requeue_at == NOW + timedelta(seconds=STUCK_AFTER_SECONDS)
    stopped = decide(deleted(target(UID_A), stopped=True), {UID_A}, set(), NOW)
    assert stopped.actions == (Action.RECREATE, Action.FINALIZE)


def test_deleted_pod_without_references_is_finalized_once_its_client_is_gone() -> None:
    assert decide(deleted(), {UID_A}, set(), NOW).actions == ()
    assert decide(deleted(stopped=True), {UID_A}, set(), NOW).actions == (Action.FINALIZE,)
    assert decide(deleted(stopped=True, finalizer=False), {UID_A}, set(), NOW).actions == ()


def test_stale_references_of_a_deleted_pod_are_not_carried_over() -> None:
    decision = decide(deleted(target(UID_A), target(UID_B), stopped=True), {UID_B}, set(), NOW)
    assert decision.actions == (Action.RECREATE, Action.FINALIZE)
    assert decision.gone_refs == (reference_key(target(UID_A)),)
    assert decide(deleted(target(UID_A), stopped=True), set(), set(), NOW).actions == (Action.FINALIZE,)


def test_a_pod_stuck_terminating_is_aborted_and_finalized() -> None:
    later = NOW + timedelta(seconds=STUCK_AFTER_SECONDS)
    assert decide(deleted(target(UID_A)), {UID_A}, set(), later - timedelta(seconds=1)).actions == (Action.RECREATE,)
    assert decide(deleted(target(UID_A)), {UID_A}, set(), later).actions == (
        Action.RECREATE,
        Action.ABORT,
        Action.FINALIZE,
    )
    assert decide(deleted(), {UID_A}, set(), later).actions == (Action.ABORT, Action.FINALIZE)
    finalized = decide(deleted(finalizer=False), {UID_A}, set(), later)  # aborted and finalized already
    assert finalized.actions == () and finalized.requeue_at is None


def test_the_stuck_timeout_counts_from_the_end_of_the_grace_period() -> None:
    policy = Policy(stuck_after=5)
    grace_ends = NOW + timedelta(seconds=30)
    view = deleted(deletion_at=grace_ends)
    stuck_at = grace_ends + timedelta(seconds=5)
    assert decide(view, set(), set(), NOW + timedelta(seconds=34), policy).requeue_at == stuck_at
    assert decide(view, set(), set(), NOW + timedelta(seconds=35), policy).actions == (Action.ABORT, Action.FINALIZE)


def test_without_auto_abort_a_stuck_pod_is_only_finalized() -> None:
    policy = Policy(abort_stuck=False, stuck_after=0)
    assert decide(deleted(), set(), set(), NOW, policy).actions == (Action.FINALIZE,)


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "reason", "message", "unschedulable"),
    [
        ("Failed", "OutOfcpu", "Pod was rejected: Node didn't have enough resource: cpu", ""),
        ("Failed", "OutOfmemory", "", ""),
        ("Failed", "UnexpectedAdmissionError", "Allocate failed: not enough resources to reclaim resources", ""),
        ("Pending", "", "", "0/3 nodes are available: 3 Insufficient memory."),
        ("Pending", "", "", "0/1 nodes are available: 1 Insufficient cpu."),
    ],
)
def test_resource_failure_recreates_without_requests(phase: str, reason: str, message: str, unschedulable: str) -> None:
    failed = pod(target(UID_A), phase=phase, ready=False, reason=reason, message=message, unschedulable=unschedulable)
    assert is_resource_error(failed)
    assert decide(failed, {UID_A}, set(), NOW).actions == (Action.RECREATE_WITHOUT_REQUESTS,)
    assert decide(failed, {UID_A}, set(), NOW, Policy(remove_requests=False)).actions == ()


@pytest.mark.parametrize(
    ("phase", "reason", "unschedulable"),
    [
        ("Pending", "OutOfcpu", ""),  # the kubelet's refusal ends a pod: Failed, never Pending
        ("Pending", "", "0/1 nodes are available: 1 node(s) had untolerated taint."),
        ("Failed", "UnexpectedAdmissionError", ""),
    ],
)
def test_other_failures_are_not_resource_errors(phase: str, reason: str, unschedulable: str) -> None:
    assert not is_resource_error(pod(phase=phase, ready=False, reason=reason, unschedulable=unschedulable))


def test_a_pod_ended_for_another_reason_is_replaced_as_it_was() -> None:
    evicted = pod(target(UID_A), phase="Failed", ready=False, reason="Evicted", message="low on resource: memory")
    assert decide(evicted, {UID_A}, set(), NOW).actions == (Action.RECREATE,)
