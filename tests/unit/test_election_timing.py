"""Leader election timing and the expiry rule, without an API server: pure functions and an injected clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from juicefs_csi.kube.election import (
    JITTER_FACTOR,
    ElectionTiming,
    LeaderElectionRecord,
    LeaseObserver,
    default_identity,
    default_namespace,
    election_timing,
    format_micro_time,
    jittered,
    parse_duration,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- timing derivation ----------------------------------------------------------------------------------


def test_defaults_are_client_go_defaults() -> None:
    assert election_timing() == ElectionTiming(15.0, 10.0, 2.0)


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(15.0, 10.0, 2.0), (30.0, 20.0, 4.0), (3.0, 2.0, 0.4), (60.0, 40.0, 8.0), (7.5, 5.0, 1.0)],
)
def test_other_lease_durations_keep_the_ratios(lease: float, renew: float, retry: float) -> None:
    timing = election_timing(lease)
    assert math.isclose(timing.renew_deadline, renew)
    assert math.isclose(timing.retry_period, retry)


def test_explicit_values_win_over_derived_ones() -> None:
    assert election_timing(15.0, retry_period=1.0) == ElectionTiming(15.0, 10.0, 1.0)
    assert election_timing(15.0, renew_deadline=12.0) == ElectionTiming(15.0, 12.0, 2.0)
    assert election_timing(3.0, 2.0, 0.4) == ElectionTiming(3.0, 2.0, 0.4)


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "message"),
    [
        (10.0, 10.0, 2.0, "greater than renew deadline"),
        (10.0, 12.0, 2.0, "greater than renew deadline"),
        (15.0, 2.4, 2.0, r"retry period \* 1.2"),  # renew must exceed retry * JitterFactor, not just retry
        (15.0, 3.0, 3.0, r"retry period \* 1.2"),
        (0.0, None, None, "positive"),
        (-15.0, None, None, "positive"),
        (15.0, 10.0, 0.0, "positive"),
        (math.nan, None, None, "positive"),
        (math.inf, None, None, "positive"),
    ],
)
def test_invalid_timing_is_rejected_like_client_go(
    lease: float, renew: float | None, retry: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        election_timing(lease, renew, retry)


def test_smallest_valid_ratio_is_accepted() -> None:
    assert election_timing(15.0, 2.41, 2.0).renew_deadline == 2.41


@pytest.mark.parametrize(("lease", "seconds"), [(15.0, 15), (3.0, 3), (2.5, 3), (0.3, 1)])
def test_lease_duration_seconds_rounds_up(lease: float, seconds: int) -> None:
    """Others wait leaseDurationSeconds: rounding down would let them take over before we stop leading."""
    assert ElectionTiming(lease, lease * 2 / 3, lease * 2 / 15).lease_duration_seconds == seconds


def test_jitter_is_client_go_jitter() -> None:
    assert jittered(2.0, 0.0) == 2.0
    assert math.isclose(jittered(2.0, 0.5), 2.0 + 0.5 * JITTER_FACTOR * 2.0)
    for _ in range(200):
        assert 2.0 <= jittered(2.0) < 2.0 * (1 + JITTER_FACTOR)


# --- flags ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2m", 120.0),
        ("20", 20.0),
        ("7.5", 7.5),
        ("1h2m3.5s", 3723.5),
        ("+15s", 15.0),
        (" 15s ", 15.0),
        ("250us", 0.00025),
    ],
)
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["", "s", "15x", "1m 30s", "abc", "15s5", "inf", "nan", "-"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_default_namespace_prefers_pod_namespace(tmp_path: Path) -> None:
    file = tmp_path / "namespace"
    file.write_text("from-file\n")
    assert default_namespace({"POD_NAMESPACE": "kube-system"}, file) == "kube-system"
    assert default_namespace({}, file) == "from-file"
    assert default_namespace({}, tmp_path / "missing") is None
    file.write_text("")
    assert default_namespace({"POD_NAMESPACE": ""}, file) is None


def test_identities_are_unique_per_process_run() -> None:
    first = default_identity({"POD_NAME": "juicefs-csi-controller-0"})
    second = default_identity({"POD_NAME": "juicefs-csi-controller-0"})
    assert first.startswith("juicefs-csi-controller-0_")
    assert first != second


# --- the record -----------------------------------------------------------------------------------------


def test_micro_time_always_has_six_digits() -> None:
    assert format_micro_time(datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)) == "2024-05-06T07:08:09.000000Z"
    assert format_micro_time(datetime(2024, 5, 6, 7, 8, 9, 12, tzinfo=UTC)) == "2024-05-06T07:08:09.000012Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_micro_time(datetime(2024, 5, 6, 9, 8, 9, tzinfo=plus_two)) == "2024-05-06T07:08:09.000000Z"


def test_record_written_onto_the_lease_last_read() -> None:
    """The write keeps resourceVersion (the optimistic-concurrency precondition), metadata and unknown spec."""
    read = Lease(
        metadata=ObjectMeta(name="l", namespace="ns", resourceVersion="42", annotations={"a": "b"}),
        spec=LeaseSpec(holderIdentity="old", leaseTransitions=3, preferredHolder="p"),
    )
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    record = LeaderElectionRecord("me", 15, moment, moment, 4)
    written = record.apply_to(read)
    body = msgspec.json.decode(msgspec.json.encode(written))
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["metadata"]["annotations"] == {"a": "b"}
    assert body["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2024-01-01T00:00:00.000000Z",
        "renewTime": "2024-01-01T00:00:00.000000Z",
        "leaseTransitions": 4,
        "preferredHolder": "p",
    }
    assert read.spec is not None and read.spec.holderIdentity == "old", "the object read is not modified"
    assert LeaderElectionRecord.from_lease(msgspec.convert(body, Lease)) == record


def test_record_of_an_empty_lease() -> None:
    assert LeaderElectionRecord.from_lease(Lease(metadata=ObjectMeta(name="l"))) == LeaderElectionRecord()


# --- the expiry rule (client-go's observedTime) ---------------------------------------------------------


def record(holder: str = "other", renew_second: int = 0, duration: int = 15) -> LeaderElectionRecord:
    renew = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=renew_second)
    return LeaderElectionRecord(holder, duration, renew, renew, 0)


def test_lease_expires_a_duration_after_we_observed_it() -> None:
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    assert observer.expires_at() is None and not observer.is_held()
    assert observer.observe(record())
    assert observer.expires_at() == 1015.0
    clock.advance(14.999)
    assert observer.is_held()
    clock.advance(0.001)
    assert not observer.is_held()


def test_seeing_the_same_record_again_does_not_extend_it() -> None:
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    observer.observe(record())
    clock.advance(10)
    assert not observer.observe(record())
    clock.advance(5)
    assert not observer.is_held()


def test_any_change_of_the_record_restarts_the_clock() -> None:
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    observer.observe(record(renew_second=0))
    clock.advance(14)
    assert observer.observe(record(renew_second=2))  # the holder renewed
    clock.advance(14)
    assert observer.is_held()
    clock.advance(1)
    assert not observer.is_held()


@pytest.mark.parametrize("skew", [timedelta(days=-3650), timedelta(0), timedelta(days=36500)])
def test_remote_timestamps_are_never_trusted(skew: timedelta) -> None:
    """A holder whose clock is far ahead (or behind) neither keeps the lease forever nor loses it at once."""
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    moment = datetime.now(UTC) + skew
    observer.observe(LeaderElectionRecord("other", 15, moment, moment, 0))
    clock.advance(14.9)
    assert observer.is_held()
    clock.advance(0.2)
    assert not observer.is_held()


def test_the_records_own_duration_counts() -> None:
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    observer.observe(record(duration=60))
    clock.advance(59)
    assert observer.is_held()
    clock.advance(1)
    assert not observer.is_held()


def test_a_record_without_duration_gets_ours() -> None:
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    observer.observe(record(duration=0))
    assert observer.expires_at() == 1015.0


def test_a_released_lease_is_free_at_once() -> None:
    """ReleaseOnCancel writes an empty holder (and a 1 s lease): nobody has to wait."""
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    observer.observe(record(holder="", duration=1))
    assert observer.expires_at() is None
    assert not observer.is_held()
    assert observer.holder == ""


def test_a_vanished_lease_is_free() -> None:
    clock = FakeClock()
    observer = LeaseObserver(15.0, clock)
    observer.observe(record())
    assert observer.observe(None)
    assert not observer.is_held()
