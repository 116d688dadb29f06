"""Slow failures, run once in the background.

A client that cannot reach its metadata engine is given up on only after the driver's ready
timeout (30 s). Tests that need such a failure start all of them together, each on a private
driver, so the waits overlap each other and the rest of the run; each test then reads the
recorded outcome.
"""

from __future__ import annotations

import secrets as random
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from juicefs_csi.csi.proto import csi_pb2
from tests.support.driver import capability, cleanup, juicefs_pids_under, mounts_under, running_driver
from tests.support.observe import all_cmdlines


def distinctive(prefix: str) -> str:
    """A secret value that shows wherever it leaks: `prefix` and random hex."""
    return f"{prefix}{random.token_hex(12)}"


@dataclass(frozen=True)
class PublishOutcome:
    """What one publish on a private driver ended with, recorded before that driver went away."""

    secrets: dict[str, str]
    elapsed: float
    code: grpc.StatusCode
    details: str
    log_text: str
    leftovers: list[str]
    argv_leaks: list[str]


# name -> (the test that reads it, the Secret of the failing publish)
SLOW_FAILURES: dict[str, tuple[str, dict[str, str]]] = {
    "unreachable-redis": (
        "test_unreachable_redis_fails_in_bounded_time",
        {"name": "unreachable", "metaurl": "redis://127.0.0.1:1/1"},
    ),
    "unreachable-redis-with-secrets": (
        "test_no_secret_in_errors_or_the_log_when_publish_fails",
        {
            "name": "unreachable",
            "metaurl": f"redis://:{distinctive('PWSLOW')}@127.0.0.1:1/1",
            "access-key": distinctive("AKSLOW"),
            "secret-key": distinctive("SKSLOW"),
            "envs": f'{{"JFS_SLOW_TOKEN": "{distinctive("ENVSLOW")}"}}',
        },
    ),
}
_slow_runs: dict[str, Future[PublishOutcome]] = {}
_slow_pool: ThreadPoolExecutor | None = None


def _url_password(metaurl: str) -> set[str]:
    userinfo = metaurl.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
    return {userinfo.partition(":")[2]} - {""}


def _argv_leaks(values: set[str]) -> set[str]:
    """`pid: argv` of every process whose command line holds one of `values`."""
    return {
        f"{pid}: {argv[:200]}"
        for pid, argv in all_cmdlines().items()
        if any(value in argv for value in values if len(value) >= 3)
    }


def _failing_publish(secrets: dict[str, str]) -> PublishOutcome:
    workdir = Path(tempfile.mkdtemp(prefix="jfs-"))
    try:
        with running_driver(workdir / "driver") as driver:
            target = workdir / "pods/slow/mount"
            started = time.monotonic()
            call = driver.node.NodePublishVolume.future(
                csi_pb2.NodePublishVolumeRequest(
                    volume_id="pv-slow", target_path=str(target), volume_capability=capability(), secrets=secrets
                ),
                timeout=120,
            )
            argv_leaks: set[str] = set()
            while not call.done():  # meanwhile, what every process on the node shows in its argv
                argv_leaks.update(_argv_leaks(set(secrets.values()) | _url_password(secrets.get("metaurl", ""))))
                time.sleep(0.1)
            code, details = call.code(), call.details() or ""
            elapsed = time.monotonic() - started
            leftovers = mounts_under(workdir) + [f"juicefs pid {pid}" for pid in juicefs_pids_under(workdir)]
            log_text = driver.log_text()
        return PublishOutcome(secrets, elapsed, code, str(details), log_text, leftovers, sorted(argv_leaks))
    finally:
        cleanup(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def start_slow_failures(selected_tests: set[str]) -> None:
    """Start every slow failure some selected test will read (once per session)."""
    global _slow_pool  # noqa: PLW0603 - one pool for the session
    for name, (reader, secrets) in SLOW_FAILURES.items():
        if name in _slow_runs or reader not in selected_tests:
            continue
        if _slow_pool is None:
            _slow_pool = ThreadPoolExecutor(max_workers=len(SLOW_FAILURES), thread_name_prefix="slow-failure")
        _slow_runs[name] = _slow_pool.submit(_failing_publish, secrets)


def slow_failure(name: str, timeout: float = 150) -> PublishOutcome:
    if name not in _slow_runs:
        start_slow_failures({SLOW_FAILURES[name][0]})
    return _slow_runs[name].result(timeout=timeout)
