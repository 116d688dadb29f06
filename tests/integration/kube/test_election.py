"""Lease leader election against the `kube_api` fixture (emulator, or a real API server with KUBEBUILDER_ASSETS).

Most tests use a short lease (3 s / renew 2 s / retry 0.4 s); the SIGKILL test also runs with the
production 15 s lease. Waits poll with deadlines; the only sleeps are sampling intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lightkube import AsyncClient
from prometheus_client import CollectorRegistry

from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from juicefs_csi.kube.election import DEFAULT_LEASE_NAME, LeaderElector, LeadershipLost
from tests.support.kube import Emulator, KubeAPI, KubeApiError

T = TypeVar("T")
LEASE = DEFAULT_LEASE_NAME
FAST: dict[str, float] = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.4}
REPO = Path(__file__).resolve().parents[3]


async def eventually(probe: Callable[[], T | bool | None], timeout: float, what: str, interval: float = 0.02) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def sample(registry: CollectorRegistry, metric: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(metric, labels) or 0.0


def lease_spec(kube_api: KubeAPI, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = kube_api.get("leases", LEASE, namespace)["spec"]
    return spec


@dataclass
class Replica:
    """One in-process candidate and what its callbacks saw (monotonic times)."""

    identity: str
    client: AsyncClient
    registry: CollectorRegistry
    elector: LeaderElector = field(init=False)
    started: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)
    work_cancelled: list[float] = field(default_factory=list)
    crash: bool = False

    async def work(self) -> None:
        self.started.append(time.monotonic())
        if self.crash:
            raise RuntimeError("the leader's work crashed")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.work_cancelled.append(time.monotonic())
            raise

    def on_stopped(self) -> None:
        self.stopped.append(time.monotonic())

    def requests(self, verb: str, code: str) -> float:
        labels = {"verb": verb, "resource": "leases", "subresource": "", "code": code}
        return sample(self.registry, "juicefs_kube_requests_total", labels)


@contextlib.asynccontextmanager
async def replicas(
    kube_api: KubeAPI, namespace: str, *identities: str, **timing: float
) -> AsyncIterator[list[Replica]]:
    made: list[Replica] = []
    settings = timing or FAST
    try:
        for identity in identities:
            registry = CollectorRegistry()
            client = make_client(KubeSettings(kubeconfig=str(kube_api.kubeconfig_path)), request_counter(registry))
            replica = Replica(identity, client, registry)
            replica.elector = LeaderElector(
                client,
                namespace=namespace,
                identity=identity,
                registry=registry,
                on_started_leading=replica.work,
                on_stopped_leading=replica.on_stopped,
                lease_duration=settings["lease_duration"],
                renew_deadline=settings.get("renew_deadline"),
                retry_period=settings.get("retry_period"),
            )
            made.append(replica)
        yield made
    finally:
        for replica in made:
            await replica.elector.stop()
            await replica.client.close()


def leader_of(group: list[Replica]) -> Replica | None:
    leaders = [r for r in group if r.elector.is_leader]
    assert len(leaders) <= 1, f"two leaders at once: {[r.identity for r in leaders]}"
    return leaders[0] if leaders else None


async def test_exactly_one_replica_leads_at_any_time(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with replicas(kube_api, kube_namespace, "a", "b") as group:
        for replica in group:
            replica.elector.start()
        first = await eventually(lambda: leader_of(group), 10, "a leader")
        loop = asyncio.get_running_loop()
        samples: list[str] = []
        handover: asyncio.Task[None] | None = None
        end = loop.time() + 7.0
        while loop.time() < end:
            # leader_of asserts that is_leader is never true for both.
            current = leader_of(group)
            samples.append(current.identity if current is not None else "")
            if handover is None and len(samples) == 60:
                handover = asyncio.create_task(first.elector.stop())  # clean release mid-run
            await asyncio.sleep(0.05)
        assert handover is not None
        await handover
    second = next(r for r in group if r is not first)
    assert samples[0] == first.identity
    assert samples[-1] == second.identity
    assert samples.count("") <= 3, "the hand-over took longer than a few samples"
    # One change of leader, never back and forth.
    changes = [b for a, b in itertools.pairwise(samples) if a != b and b]
    assert changes == [second.identity]


async def test_clean_release_hands_over_within_retry_period(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with replicas(kube_api, kube_namespace, "a", "b") as (a, b):
        a.elector.start()
        await a.elector.wait_for_leadership(10)
        b.elector.start()
        await eventually(lambda: b.elector.leader == "a", 10, "b to see a's lease")
        assert lease_spec(kube_api, kube_namespace)["leaseTransitions"] == 0

        await a.elector.stop()
        released = time.monotonic()
        assert a.work_cancelled and a.stopped and not a.elector.is_leader
        await b.elector.wait_for_leadership(FAST["retry_period"] + 0.5)
        took = time.monotonic() - released
        await eventually(lambda: b.started, 1, "b's work to start")
        assert a.work_cancelled[0] < b.started[0], "a's work must be gone before b starts"

        spec = lease_spec(kube_api, kube_namespace)
        assert spec["holderIdentity"] == "b"
        assert spec["leaseTransitions"] == 1
        assert spec["leaseDurationSeconds"] == 3
        assert sample(a.registry, "juicefs_leader", {"name": LEASE}) == 0
        assert sample(b.registry, "juicefs_leader", {"name": LEASE}) == 1
        assert sample(b.registry, "juicefs_leader_transitions_total", {"name": LEASE}) == 1
        print(f"takeover after clean release: {took:.3f}s")


async def test_election_works_without_the_watch(
    kube_api: KubeAPI, kube_emulator: Emulator, kube_namespace: str
) -> None:
    """The watch only hurries things up: with watches refused, candidates fall back to client-go's
    jittered polling (retry_period * [1, 2.2)) and still take a released lease quickly."""
    kube_emulator.inject_error("watch", "leases", status=403, times=None, namespace=kube_namespace)
    async with replicas(kube_api, kube_namespace, "a", "b") as (a, b):
        a.elector.start()
        await a.elector.wait_for_leadership(10)
        b.elector.start()
        await eventually(lambda: b.elector.leader == "a", 10, "b to see a's lease")
        await a.elector.stop()
        released = time.monotonic()
        await b.elector.wait_for_leadership(2.2 * FAST["retry_period"] + 0.5)
        print(f"takeover after clean release without a watch: {time.monotonic() - released:.3f}s")
        assert b.requests("watch", "403") >= 1


async def test_failing_leader_work_hands_the_lease_over(kube_api: KubeAPI, kube_namespace: str) -> None:
    """A leader whose work crashed would hold the lease doing nothing: it steps down and releases."""
    async with replicas(kube_api, kube_namespace, "a", "b") as (a, b):
        a.crash = True
        a.elector.start()
        await a.elector.wait_for_leadership(10)
        b.elector.start()
        await eventually(lambda: b.elector.is_leader, 5, "b to take over from a crashed leader")
        assert a.stopped and not a.elector.is_leader
        assert lease_spec(kube_api, kube_namespace)["holderIdentity"] == "b"


# --- separate processes: a leader that dies without releasing -------------------------------------------


class ReplicaProcess:
    """tests/support/election_replica.py in its own process; its JSON-lines events arrive on a queue."""

    def __init__(self, proc: asyncio.subprocess.Process, identity: str) -> None:
        self.proc = proc
        self.identity = identity
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.put_nowait(json.loads(line))

    async def next_event(self, name: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["event"] == name:
                    return event

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def replica_processes(
    kube_api: KubeAPI, namespace: str, timing: dict[str, float]
) -> AsyncIterator[Callable[[str], Any]]:
    started: list[ReplicaProcess] = []

    async def spawn(identity: str) -> ReplicaProcess:
        argv = [sys.executable, "-m", "tests.support.election_replica", "--kubeconfig", str(kube_api.kubeconfig_path)]
        argv += ["--namespace", namespace, "--identity", identity]
        for key, value in timing.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        replica = ReplicaProcess(proc, identity)
        started.append(replica)
        return replica

    try:
        yield spawn
    finally:
        for replica in started:
            await replica.kill()


PRODUCTION: dict[str, float] = {"lease_duration": 15.0}


@pytest.mark.parametrize(
    "timing",
    [
        pytest.param(FAST, id="lease-3s"),
        pytest.param(PRODUCTION, id="lease-15s", marks=pytest.mark.slow),
    ],
)
async def test_killed_leader_is_replaced_within_lease_duration(
    kube_api: KubeAPI, kube_namespace: str, timing: dict[str, float]
) -> None:
    lease_duration = timing["lease_duration"]
    retry_period = timing.get("retry_period", lease_duration * 2 / 15)
    async with replica_processes(kube_api, kube_namespace, timing) as spawn:
        a = await spawn("a")
        await a.next_event("started", 20)
        b = await spawn("b")
        await b.next_event("following", 20)
        # Steady state: b has seen a renew the lease a couple of times.
        seen: list[str] = [lease_spec(kube_api, kube_namespace)["renewTime"]]

        def renewed_twice() -> bool:
            current = lease_spec(kube_api, kube_namespace)["renewTime"]
            if current != seen[-1]:
                seen.append(current)
            return len(seen) >= 3

        await eventually(renewed_twice, 4 * retry_period + 2, "two renewals", interval=retry_period / 4)

        os.kill(a.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        await a.proc.wait()
        started = await b.next_event("started", lease_duration + 5)
        takeover = started["mono"] - killed
        print(f"takeover after SIGKILL with a {lease_duration:g}s lease: {takeover:.3f}s")

        assert takeover <= lease_duration + 2.0
        # Not before a's last renewal (at most one retry period before the kill) had lapsed for b.
        assert takeover >= lease_duration - retry_period - 0.3
        assert started["transitions"] == 1
        spec = lease_spec(kube_api, kube_namespace)
        assert spec["holderIdentity"] == "b"
        assert spec["leaseTransitions"] == 1
        assert spec["leaseDurationSeconds"] == int(lease_duration)

        b.proc.send_signal(signal.SIGTERM)
        await b.next_event("exited", 10)
        assert lease_spec(kube_api, kube_namespace)["holderIdentity"] == "", "SIGTERM releases the lease"


# --- the API server misbehaving -------------------------------------------------------------------------


async def test_leader_stops_within_renew_deadline_when_renewals_fail(
    kube_api: KubeAPI, kube_emulator: Emulator, kube_namespace: str
) -> None:
    async with replicas(kube_api, kube_namespace, "a", "b") as (a, b):
        a.elector.start()
        await a.elector.wait_for_leadership(10)
        b.elector.start()
        await eventually(lambda: b.elector.leader == "a", 10, "b to see a's lease")

        scope_outcome: list[str] = []

        async def guarded() -> None:
            try:
                async with a.elector.leading():
                    await asyncio.Event().wait()
            except LeadershipLost:
                scope_outcome.append("lost")

        guard = asyncio.create_task(guarded())
        await asyncio.sleep(0)

        kube_emulator.inject_error("update", "leases", status=500, times=None, namespace=kube_namespace)
        injected = time.monotonic()
        group = [a, b]
        try:
            while not a.stopped:
                leader_of(group)  # never two leaders
                assert time.monotonic() - injected < FAST["renew_deadline"] + 1, "a kept leading"
                await asyncio.sleep(0.02)
        finally:
            kube_emulator.clear_faults()
        stopped_after = a.stopped[0] - injected
        print(f"leader stopped {stopped_after:.3f}s after renewals started failing")

        # The last successful renewal was at most one retry period before the faults.
        assert stopped_after <= FAST["renew_deadline"] + 0.2
        assert stopped_after >= FAST["renew_deadline"] - FAST["retry_period"] - 0.2
        # on_stopped runs right after the work is cancelled; the work sees it on its next loop turn.
        await eventually(lambda: bool(a.work_cancelled), 1, "a's work to be cancelled")
        assert a.work_cancelled[0] - a.stopped[0] < 0.1
        assert not a.elector.is_leader
        with pytest.raises(LeadershipLost):
            a.elector.check()
        await asyncio.wait_for(guard, 1)
        assert scope_outcome == ["lost"]
        assert a.requests("update", "500") >= 2
        assert sample(a.registry, "juicefs_leader", {"name": LEASE}) == 0

        # With the API server healthy again somebody leads again, and still only one.
        leader = await eventually(lambda: leader_of(group), FAST["lease_duration"] + 3, "a new leader")
        assert lease_spec(kube_api, kube_namespace)["holderIdentity"] == leader.identity


async def test_concurrent_update_makes_renew_conflict_and_reread(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with replicas(kube_api, kube_namespace, "a") as (a,):
        a.elector.start()
        await a.elector.wait_for_leadership(10)
        before = lease_spec(kube_api, kube_namespace)["renewTime"]
        # Someone else writes the Lease (new resourceVersion); the holder stays "a".
        kube_api.patch(
            "leases", LEASE, {"metadata": {"annotations": {"example.com/touched": "yes"}}}, namespace=kube_namespace
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + 3 * FAST["retry_period"]
        while loop.time() < end:
            assert a.elector.is_leader, "a conflict on renew is not a reason to stop leading"
            await asyncio.sleep(0.02)
        assert a.requests("update", "409") >= 1, "the renewal must have carried the old resourceVersion"
        assert a.requests("get", "200") >= 1, "after the conflict the leader re-reads the lease"
        lease = kube_api.get("leases", LEASE, kube_namespace)
        assert lease["metadata"]["annotations"] == {"example.com/touched": "yes"}, "the other writer's change is kept"
        assert lease["spec"]["holderIdentity"] == "a"
        assert lease["spec"]["renewTime"] != before
        assert a.started and not a.stopped


async def test_lease_taken_by_another_holder_is_never_overwritten(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with replicas(kube_api, kube_namespace, "a") as (a,):
        a.elector.start()
        await a.elector.wait_for_leadership(10)
        # An intruder takes the lease with a renewTime far in the future: remote clocks are not trusted,
        # so "a" must give the lease up now and may take it back only after a full lease of its own time.
        while True:
            lease = kube_api.get("leases", LEASE, kube_namespace)
            lease["spec"].update(holderIdentity="intruder", renewTime="2100-01-01T00:00:00.000000Z")
            try:
                kube_api.update(lease)
                break
            except KubeApiError as err:
                if err.status != 409:
                    raise
        intruded = time.monotonic()
        await eventually(lambda: a.stopped, FAST["retry_period"] + 1, "a to stop leading")
        print(f"leader stopped {a.stopped[0] - intruded:.3f}s after the lease was taken")
        assert a.work_cancelled
        assert a.requests("update", "409") >= 1
        assert lease_spec(kube_api, kube_namespace)["holderIdentity"] == "intruder"

        holder = await eventually(
            lambda: a.started[1:] and lease_spec(kube_api, kube_namespace)["holderIdentity"],
            FAST["lease_duration"] + 2.2 * FAST["retry_period"] + 1,
            "a to take the abandoned lease back",
        )
        retaken = a.started[1] - intruded
        print(f"abandoned lease taken back after {retaken:.3f}s")
        assert holder == "a"
        assert retaken >= FAST["lease_duration"]
        assert lease_spec(kube_api, kube_namespace)["leaseTransitions"] == 1
