"""The mount pod state machine, as plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from juicefs_csi.mountpod.names import ANN_DELETE_AT, ANN_DELETE_DELAY, reference_key
from juicefs_csi.node.decisions import Action, PodView, decide, pod_uid_of_target

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UID_A = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
UID_B = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"


def target(uid: str) -> str:
    return f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/pv-1/mount"


def pod(
    *targets: str, deleting: bool = False, phase: str = "Running", ready: bool = True, **annotations: str
) -> PodView:
    refs = {reference_key(t): t for t in targets}
    return PodView("mp", {**refs, **annotations}, deleting, phase, ready)


def test_pod_uid_is_read_from_the_kubelet_target_layout() -> None:
    assert pod_uid_of_target(target(UID_A)) == UID_A
    assert pod_uid_of_target("/mnt/somewhere/else") is None


def test_ready_pod_with_live_references_rebinds() -> None:
    assert decide(pod(target(UID_A)), {UID_A}, set(), NOW).actions == (Action.REBIND,)


def test_references_of_gone_pods_are_dropped_and_the_pod_deleted() -> None:
    decision = decide(pod(target(UID_A)), set(), set(), NOW)
    assert decision.actions == (Action.DROP_REFS, Action.DELETE)
    assert decision.gone_refs == (reference_key(target(UID_A)),)


def test_a_bound_target_is_never_stale_even_if_the_pod_cache_lags() -> None:
    assert Action.DROP_REFS not in decide(pod(target(UID_A)), set(), {target(UID_A)}, NOW).actions


def test_unknown_pod_list_drops_nothing() -> None:
    assert decide(pod(target(UID_A)), None, set(), NOW).actions == (Action.REBIND,)


def test_delete_delay_marks_a_deadline_then_deletes_after_it() -> None:
    first = decide(pod(**{ANN_DELETE_DELAY: "1m"}), {UID_A}, set(), NOW)
    assert first.actions == (Action.MARK_DELETE_AT,)
    assert first.delete_at == NOW + timedelta(minutes=1)
    waiting = pod(**{ANN_DELETE_DELAY: "1m", ANN_DELETE_AT: "2026-11-24T12:01:00Z"})
    assert decide(waiting, {UID_A}, set(), NOW).actions == ()
    assert decide(waiting, {UID_A}, set(), NOW + timedelta(minutes=2)).actions == (Action.DELETE,)


def test_deleted_pod_with_references_is_recreated_and_finalized() -> None:
    assert decide(pod(target(UID_A), deleting=True), {UID_A}, set(), NOW).actions == (
        Action.RECREATE,
        Action.FINALIZE,
    )
    assert decide(pod(deleting=True), {UID_A}, set(), NOW).actions == (Action.FINALIZE,)


def test_resource_failure_recreates_without_requests() -> None:
    failed = PodView("mp", {reference_key(target(UID_A)): target(UID_A)}, False, "Failed", False, "OutOfcpu", "")
    assert decide(failed, {UID_A}, set(), NOW).actions == (Action.RECREATE_WITHOUT_REQUESTS,)
