"""Controller high availability: leader election on a `coordination.k8s.io/v1` Lease, as client-go does it.

One replica holds the Lease and renews it every `retry_period`; the others poll it and take it over
once it has not changed for `leaseDurationSeconds` *as measured by their own monotonic clock* (the
holder's `renewTime` is written for humans, never trusted: clocks of other nodes may be wrong). Every
write carries the `resourceVersion` last read, so two replicas can never both believe they won.

The leader considers itself leader only until `last successful renew + renew_deadline`, measured
from the moment the successful write was *sent*. Others wait the full lease duration from the moment
they *received* that record, which is later, so the `lease_duration - renew_deadline` gap (5 s by
default) is the safety margin for clock-rate differences and for cancelling the leader's work. See
docs/high-availability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import cast

import httpx2 as httpx
import msgspec
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("juicefs_csi.election")

DEFAULT_LEASE_NAME = "csi-controller.juicefs.com"
DEFAULT_LEASE_DURATION = 15.0
# client-go's defaults are 15 s / 10 s / 2 s; other lease durations keep these ratios.
RENEW_DEADLINE_RATIO = 10.0 / 15.0
RETRY_PERIOD_RATIO = 2.0 / 15.0
# client-go's leaderelection.JitterFactor: a candidate waits retry_period * [1, 2.2) between attempts.
JITTER_FACTOR = 1.2
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_TIMEOUT_SECONDS = 300
WATCH_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
RELEASE_TIMEOUT_SECONDS = 5.0
CONFLICT = 409
NOT_FOUND = 404
# Try an expired lease just after its local expiry, not exactly at it.
EXPIRY_EPSILON = 0.005

Clock = Callable[[], float]
RequestErrors = (httpx.HTTPError, OSError, TimeoutError)


# --- timing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElectionTiming:
    """The three durations of client-go's LeaderElectionConfig, in seconds."""

    lease_duration: float
    renew_deadline: float
    retry_period: float

    @property
    def lease_duration_seconds(self) -> int:
        """`leaseDurationSeconds` is an integer; rounding up only makes the others wait longer (safe)."""
        return max(1, math.ceil(self.lease_duration))


def election_timing(
    lease_duration: float = DEFAULT_LEASE_DURATION,
    renew_deadline: float | None = None,
    retry_period: float | None = None,
) -> ElectionTiming:
    """Derive and validate the timing; unset values scale with the lease like client-go's 15/10/2 s."""
    renew = lease_duration * RENEW_DEADLINE_RATIO if renew_deadline is None else renew_deadline
    retry = lease_duration * RETRY_PERIOD_RATIO if retry_period is None else retry_period
    if not all(math.isfinite(value) and value > 0 for value in (lease_duration, renew, retry)):
        raise ValueError("leader election durations must be positive and finite")
    if lease_duration <= renew:
        raise ValueError(f"lease duration ({lease_duration}s) must be greater than renew deadline ({renew}s)")
    if renew <= JITTER_FACTOR * retry:
        raise ValueError(
            f"renew deadline ({renew}s) must be greater than retry period * {JITTER_FACTOR} ({retry * JITTER_FACTOR}s)"
        )
    return ElectionTiming(lease_duration, renew, retry)


def jittered(period: float, sample: float | None = None) -> float:
    """client-go's `wait.Jitter(period, JitterFactor)`: period + [0, 1.2) * period."""
    fraction = random.random() if sample is None else sample
    return period + fraction * JITTER_FACTOR * period


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's `time.ParseDuration` ("15s", "1m30s", "500ms"), as the Go driver's flags take; a bare number is seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {text!r}")
        return seconds
    sign = -1.0 if value.startswith("-") else 1.0
    body = value.lstrip("+-")
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(body):
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def default_namespace(
    environ: Mapping[str, str] | None = None, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE
) -> str | None:
    """The pod's namespace: `POD_NAMESPACE` (downward API), else the service account's namespace file."""
    env = os.environ if environ is None else environ
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        return service_account_file.read_text().strip() or None
    except OSError:
        return None


def default_identity(environ: Mapping[str, str] | None = None) -> str:
    """Pod name (or host name) plus a random suffix, as controller-runtime does: a restarted process is a new
    candidate, so it never mistakes its predecessor's lease for its own."""
    env = os.environ if environ is None else environ
    return f"{env.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


# --- the record -----------------------------------------------------------------------------------------


def format_micro_time(moment: datetime) -> str:
    """RFC 3339 with exactly six fractional digits: kube-apiserver parses MicroTime with that fixed layout,
    and msgspec would drop the fraction whenever the microseconds happen to be zero."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micro_time(moment: datetime | None) -> datetime | None:
    # The model types MicroTime as datetime; a preformatted string is encoded verbatim (see format_micro_time).
    return None if moment is None else cast(datetime, format_micro_time(moment))


@dataclass(frozen=True)
class LeaderElectionRecord:
    """client-go's resourcelock.LeaderElectionRecord: the part of the Lease the election reads and writes."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    lease_transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Lease) -> LeaderElectionRecord:
        spec = lease.spec or LeaseSpec()
        return cls(
            holder_identity=spec.holderIdentity or "",
            lease_duration_seconds=spec.leaseDurationSeconds or 0,
            acquire_time=spec.acquireTime,
            renew_time=spec.renewTime,
            lease_transitions=spec.leaseTransitions or 0,
        )

    def apply_to(self, lease: Lease) -> Lease:
        """The Lease to write: everything as last read (metadata, resourceVersion, other spec fields),
        with this record as the spec. Keeping the resourceVersion is what makes the write conditional."""
        spec = msgspec.structs.replace(
            lease.spec or LeaseSpec(),
            holderIdentity=self.holder_identity,
            leaseDurationSeconds=self.lease_duration_seconds,
            acquireTime=_micro_time(self.acquire_time),
            renewTime=_micro_time(self.renew_time),
            leaseTransitions=self.lease_transitions,
        )
        return msgspec.structs.replace(lease, spec=spec)


class LeaseObserver:
    """client-go's `observedTime` rule: a lease expires `leaseDurationSeconds` after *we* last saw its
    record change, by our monotonic clock. Remote timestamps never enter the decision."""

    def __init__(self, fallback_duration: float, clock: Clock = time.monotonic) -> None:
        # Used when a record carries no (or a non-positive) duration: our own lease is the conservative guess.
        self.fallback_duration = fallback_duration
        self.clock = clock
        self.record: LeaderElectionRecord | None = None
        self.observed_at: float | None = None

    def observe(self, record: LeaderElectionRecord | None) -> bool:
        """Remember `record`; the clock restarts only when it differs from the last one seen."""
        if record == self.record and self.observed_at is not None:
            return False
        self.record = record
        self.observed_at = self.clock()
        return True

    @property
    def holder(self) -> str:
        return self.record.holder_identity if self.record is not None else ""

    def expires_at(self) -> float | None:
        """Monotonic time at which the observed holder's claim lapses; None when nobody holds the lease."""
        if self.record is None or self.observed_at is None or not self.record.holder_identity:
            return None
        duration = self.record.lease_duration_seconds
        return self.observed_at + (duration if duration > 0 else self.fallback_duration)

    def is_held(self) -> bool:
        """Somebody holds the lease and, as far as we can tell, is still within it."""
        expiry = self.expires_at()
        return expiry is not None and self.clock() < expiry


# --- the elector ----------------------------------------------------------------------------------------


class LeadershipLost(Exception):
    """Raised where work must not go on because this replica is not (or no longer) the leader."""


class _Superseded(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class LeadingScope:
    """`async with elector.leading():` the body runs only while leading; losing leadership cancels it
    and the `async with` raises LeadershipLost, the way `asyncio.timeout` turns its cancel into TimeoutError."""

    def __init__(self, elector: LeaderElector) -> None:
        self._elector = elector
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    async def __aenter__(self) -> LeadingScope:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("leading() must be used inside a task")
        self._elector.check()
        self._elector._scopes.add(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._elector._scopes.discard(self)
        fired = self._fired and exc_type is asyncio.CancelledError and self._task is not None
        if fired and self._task is not None and self._task.uncancel() == 0:
            raise LeadershipLost(f"lost leadership of lease {self._elector.lease_key}") from exc

    def _fire(self) -> None:
        if self._task is not None and not self._fired:
            self._fired = True
            self._task.cancel()


class LeaderElector:
    """Campaigns for a Lease, runs `on_started_leading` while holding it, and cancels that work the moment
    leadership is lost (renewals failing past `renew_deadline`, or the lease found with another holder).

    `run()` campaigns until cancelled; cancelling it stops the work and releases the lease (client-go's
    ReleaseOnCancel) so another replica takes over at once. After losing leadership it campaigns again;
    a process that prefers to exit does so from `on_stopped_leading`.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        renew_deadline: float | None = None,
        retry_period: float | None = None,
        registry: CollectorRegistry | None = None,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], None],
        release_on_cancel: bool = True,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not namespace:
            raise ValueError("leader election needs the namespace of its Lease")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = election_timing(lease_duration, renew_deadline, retry_period)
        self.release_on_cancel = release_on_cancel
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock: Clock = time.monotonic
        self._observer = LeaseObserver(self.timing.lease_duration, self._clock)
        self._lease: Lease | None = None
        self._leading = False
        self._valid_until = 0.0
        self._work: asyncio.Task[None] | None = None
        self._work_failed = asyncio.Event()
        self._leading_event = asyncio.Event()
        self._doorbell = asyncio.Event()
        self._scopes: set[LeadingScope] = set()
        self._task: asyncio.Task[None] | None = None
        registry = registry if registry is not None else CollectorRegistry()
        self._leader_gauge = Gauge(
            "juicefs_leader", "1 while this replica holds the leader election lease.", ["name"], registry=registry
        ).labels(name)
        self._leader_gauge.set(0)
        self._transitions = Counter(
            "juicefs_leader_transitions", "Times this replica became the leader.", ["name"], registry=registry
        ).labels(name)

    # -- what the rest of the driver uses --

    @property
    def lease_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_leader(self) -> bool:
        """True only while leading *and* before `last successful renew (send time) + renew_deadline`.

        The deadline is checked on every call against the monotonic clock, so a stalled event loop cannot
        make a stale leader look valid: others may take over `lease_duration` after they saw our last
        renewal, and this turns False `lease_duration - renew_deadline` before that at the latest.
        """
        return self._leading and self._clock() < self._valid_until

    @property
    def leader(self) -> str:
        """The holder in the last Lease record seen ("" if none); informative only, it may be stale."""
        return self._observer.holder

    def check(self) -> None:
        """Fence: call right before an irreversible side effect that only the leader may perform."""
        if not self.is_leader:
            raise LeadershipLost(f"not the leader of lease {self.lease_key}")

    def leading(self) -> LeadingScope:
        """A scope cancelled the moment leadership is lost; raises LeadershipLost on entry when not leading."""
        return LeadingScope(self)

    async def wait_for_leadership(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            while not self.is_leader:
                await self._leading_event.wait()
                if not self.is_leader:
                    # Past the deadline but not yet stepped down: that happens within moments.
                    await asyncio.sleep(self.timing.retry_period / 10)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"leader-election-{self.name}")

    async def stop(self) -> None:
        """Stop campaigning; when leading, cancel the work first, then release the lease."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the loops --

    async def run(self) -> None:
        watcher = asyncio.create_task(self._watch_lease(), name=f"leader-election-watch-{self.name}")
        clean = False
        try:
            while True:
                await self._acquire()
                reason, release = await self._lead()
                await self._step_down(reason, release=release)
                if release:
                    # The work failed: give another replica (woken by the release) the first chance.
                    await asyncio.sleep(jittered(self.timing.retry_period))
        except asyncio.CancelledError:
            clean = True
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self._leading or self._work is not None:
                await self._step_down("shutting down", release=clean and self.release_on_cancel)

    async def _acquire(self) -> None:
        """Attempt at jittered retry periods; also just after the observed lease expires, and whenever the
        watch reports a change of the Lease (a release is taken over at once)."""
        while True:
            self._doorbell.clear()
            started = self._clock()
            try:
                async with asyncio.timeout(self.timing.renew_deadline):
                    if await self._try_acquire_or_renew():
                        self._start_leading()
                        return
            except Exception as exc:
                self._log_failure("leader election attempt failed", exc)
            await self._wait_before_next_attempt(started)

    async def _wait_before_next_attempt(self, started: float) -> None:
        delay = jittered(self.timing.retry_period)
        expiry = self._observer.expires_at()
        if expiry is not None and self._observer.holder != self.identity:
            delay = min(delay, max(0.0, expiry - self._clock()) + EXPIRY_EPSILON)
        deadline = started + delay
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await self._doorbell.wait()
        # A burst of Lease changes must not turn into a burst of requests.
        floor = started + self.timing.retry_period / 10
        if self._clock() < floor:
            await asyncio.sleep(floor - self._clock())

    async def _lead(self) -> tuple[str, bool]:
        """Renew every retry period until that fails for renew_deadline; returns (why it ended, release?).

        The wait between attempts ends at the validity deadline at the latest, so leadership ends on time
        even while a renewal hangs (the attempt itself is bounded by the same deadline)."""
        next_attempt = self._clock() + self.timing.retry_period
        while True:
            wake_at = min(next_attempt, self._valid_until)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - self._clock())):
                    await self._work_failed.wait()
            if self._work_failed.is_set():
                return "the leader's work failed", True
            now = self._clock()
            remaining = self._valid_until - now
            if remaining <= 0:
                return f"failed to renew the lease within {self.timing.renew_deadline:g}s", False
            if now < next_attempt:
                continue
            next_attempt = now + self.timing.retry_period
            try:
                async with asyncio.timeout(remaining):
                    await self._try_acquire_or_renew()
            except _Superseded as exc:
                return f"the lease is held by {exc.holder}", False
            except Exception as exc:
                self._log_failure("failed to renew the lease", exc)

    async def _try_acquire_or_renew(self) -> bool:
        """One step of client-go's tryAcquireOrRenew. True when the lease is ours after it."""
        now = datetime.now(UTC)
        if self._leading and self._lease is not None and self._observer.holder == self.identity:
            # Fast path: renew on the object last seen; 409 means somebody wrote it since, so re-read.
            record = self._renewed(self._observer.record, now)
            try:
                await self._write(record.apply_to(self._lease))
                return True
            except ApiError as exc:
                log.info(
                    "optimistic renew failed, re-reading the lease",
                    extra={"lease": self.lease_key, "identity": self.identity, "error": _describe(exc)},
                )
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != NOT_FOUND:
                raise
            return await self._create(now)
        self._lease = lease
        current = LeaderElectionRecord.from_lease(lease)
        self._observer.observe(current)
        if current.holder_identity and current.holder_identity != self.identity and self._observer.is_held():
            if self._leading:
                raise _Superseded(current.holder_identity)
            return False
        if current.holder_identity == self.identity:
            record = self._renewed(current, now)
        else:
            record = LeaderElectionRecord(
                holder_identity=self.identity,
                lease_duration_seconds=self.timing.lease_duration_seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=current.lease_transitions + 1,
            )
        try:
            await self._write(record.apply_to(lease))
        except ApiError as exc:
            if exc.status.code in (CONFLICT, NOT_FOUND):
                # Someone else wrote first; the next attempt reads what they wrote.
                return False
            raise
        return True

    def _renewed(self, current: LeaderElectionRecord | None, now: datetime) -> LeaderElectionRecord:
        return LeaderElectionRecord(
            holder_identity=self.identity,
            lease_duration_seconds=self.timing.lease_duration_seconds,
            acquire_time=(current.acquire_time if current is not None else None) or now,
            renew_time=now,
            lease_transitions=current.lease_transitions if current is not None else 0,
        )

    async def _create(self, now: datetime) -> bool:
        record = LeaderElectionRecord(self.identity, self.timing.lease_duration_seconds, now, now, 0)
        lease = record.apply_to(Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace)))
        sent_at = self._clock()
        try:
            created = await self.client.create(lease)
        except ApiError as exc:
            if exc.status.code == CONFLICT:
                return False
            raise
        self._accept(created, sent_at)
        return True

    async def _write(self, lease: Lease) -> None:
        sent_at = self._clock()
        updated = await self.client.replace(lease)
        self._accept(updated, sent_at)

    def _accept(self, lease: Lease, sent_at: float) -> None:
        """A write of ours succeeded. Validity counts from when it was sent: the server committed it later,
        and the others count their lease from when they see it, later still."""
        self._lease = lease
        self._observer.observe(LeaderElectionRecord.from_lease(lease))
        self._valid_until = sent_at + self.timing.renew_deadline

    def _start_leading(self) -> None:
        self._leading = True
        self._leading_event.set()
        self._leader_gauge.set(1)
        self._transitions.inc()
        self._work_failed.clear()
        record = self._observer.record
        log.info(
            "became the leader",
            extra={
                "lease": self.lease_key,
                "identity": self.identity,
                "lease_transitions": record.lease_transitions if record is not None else 0,
            },
        )
        self._work = asyncio.create_task(self._run_work(), name=f"leader-work-{self.name}")

    async def _run_work(self) -> None:
        try:
            await self._on_started()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the leader's work failed", extra={"lease": self.lease_key, "identity": self.identity})
            self._work_failed.set()

    async def _step_down(self, reason: str, *, release: bool) -> None:
        """Stop acting as leader before anything else can happen: flag, scopes, work, callback; then wait
        for the work to be gone, and only then (if asked) hand the lease over."""
        was_leading = self._leading
        self._leading = False
        self._valid_until = 0.0
        self._leading_event.clear()
        self._leader_gauge.set(0)
        for scope in list(self._scopes):
            scope._fire()
        work, self._work = self._work, None
        if work is not None:
            work.cancel()
        if was_leading:
            log.info("stopped leading", extra={"lease": self.lease_key, "identity": self.identity, "reason": reason})
            try:
                self._on_stopped()
            except Exception:
                log.exception("on_stopped_leading failed", extra={"lease": self.lease_key})
        if work is not None:
            await asyncio.gather(work, return_exceptions=True)
        if release:
            await self._release()

    async def _release(self) -> None:
        """client-go's ReleaseOnCancel: an empty holder and a 1 s lease, conditional on what we last read.

        A 409 here usually means a renewal cancelled by the shutdown did reach the server; one re-read
        tells, and the lease is released only if it still names us."""
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                for _ in range(2):
                    if self._lease is None or self._observer.holder != self.identity:
                        return
                    now = datetime.now(UTC)
                    previous = self._observer.record
                    record = LeaderElectionRecord(
                        holder_identity="",
                        lease_duration_seconds=1,
                        acquire_time=now,
                        renew_time=now,
                        lease_transitions=previous.lease_transitions if previous is not None else 0,
                    )
                    try:
                        released = await self.client.replace(record.apply_to(self._lease))
                    except ApiError as exc:
                        if exc.status.code != CONFLICT:
                            raise
                        self._lease = await self.client.get(Lease, self.name, namespace=self.namespace)
                        self._observer.observe(LeaderElectionRecord.from_lease(self._lease))
                        continue
                    self._lease = released
                    self._observer.observe(LeaderElectionRecord.from_lease(released))
                    log.info("released the lease", extra={"lease": self.lease_key, "identity": self.identity})
                    return
        except Exception as exc:
            self._log_failure("failed to release the lease", exc)

    def _log_failure(self, message: str, exc: Exception) -> None:
        """API and network errors are expected and retried; anything else is a bug, logged with its traceback
        but still retried: a dead election task would leave a candidate that never leads."""
        fields = {"lease": self.lease_key, "identity": self.identity, "error": _describe(exc)}
        log.warning(message, extra=fields, exc_info=None if isinstance(exc, RequestErrors) else exc)

    async def _watch_lease(self) -> None:
        """A doorbell, not a source of truth: any change of the Lease triggers an early attempt (a GET),
        so a candidate notices the last renewal of a leader that then dies, and a release, within
        milliseconds instead of a jittered poll period. Without the watch the election still works."""
        failures = 0
        while True:
            try:
                stream = cast(
                    AsyncGenerator[tuple[str, Lease], None],
                    self.client.watch(
                        Lease,
                        namespace=self.namespace,
                        fields={"metadata.name": self.name},
                        server_timeout=WATCH_TIMEOUT_SECONDS,
                    ),
                )
                async with contextlib.aclosing(stream):
                    async for kind, _ in stream:
                        failures = 0
                        if kind != "BOOKMARK":
                            self._doorbell.set()
            except Exception as exc:
                failures += 1
                if isinstance(exc, RequestErrors):
                    log.debug("lease watch failed", extra={"lease": self.lease_key, "error": _describe(exc)})
                else:
                    log.warning("lease watch failed", extra={"lease": self.lease_key}, exc_info=exc)
            await asyncio.sleep(WATCH_RETRY_SECONDS[min(failures, len(WATCH_RETRY_SECONDS)) - 1] if failures else 0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status.code} {exc.status.reason or ''}: {exc.status.message or ''}".strip()
    return str(exc) or type(exc).__name__
