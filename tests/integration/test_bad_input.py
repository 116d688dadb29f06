"""Bad input through the real API: refused with a precise status and message, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.driver import (
    DriverProcess,
    capability,
    driver_processes_idle,
    expect_rpc_error,
    mounts_at_path,
)
from tests.support.slow_failures import slow_failure, start_slow_failures

Code = grpc.StatusCode


def assert_nothing_left(driver: DriverProcess, workdir: Path, target: Path) -> None:
    assert mounts_at_path(target) == 0
    assert driver_processes_idle(driver, workdir), "a mount or juicefs client was left behind"
    assert driver.client_pids() == []


# -- malformed Secrets -----------------------------------------------------------------------------------------

MALFORMED_SECRETS: list[tuple[str, dict[str, str | None], str]] = [
    ("missing name", {"name": None}, "'name'"),
    ("ftp metaurl", {"metaurl": "ftp://x"}, "'metaurl'"),
    ("metaurl without host", {"metaurl": "redis://"}, "'metaurl'"),
    ("envs is a scalar", {"envs": "just a string"}, "'envs'"),
    ("envs is a list", {"envs": "[1, 2]"}, "'envs'"),
    ("envs is not YAML", {"envs": "{unclosed"}, "'envs'"),
    ("envs has a bad variable name", {"envs": "{BAD-NAME: 1}"}, "'envs'"),
    ("non-numeric trash-days", {"trash-days": "1; rm -rf /"}, "'trash-days'"),
]


def test_malformed_secret_is_invalid(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path, subtests: pytest.Subtests
) -> None:
    target = workdir / "pods/bad/mount"
    for case, change, expected in MALFORMED_SECRETS:
        with subtests.test(msg=case):
            merged = {**sqlite_secret, **change}
            secrets = {k: v for k, v in merged.items() if v is not None}
            message = expect_rpc_error(Code.INVALID_ARGUMENT, driver.publish, "pv-bad-secret", target, secrets)
            assert expected in message
            assert_nothing_left(driver, workdir, target)


# -- mount options ------------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("unknown", "no-such-option=1", "'no-such-option'"),
    ("semicolon", "cache-size=1;id", "'cache-size'"),
    ("command substitution", "subdir=$(id)", "'subdir'"),
    ("newline", "buffer-size=1\nx", "'buffer-size'"),
    ("backtick value", "cache-dir=/tmp/`id`", "'cache-dir'"),
    ("backtick key", "`id`", "'`id`'"),
    ("space and second flag", "cache-size=1 --log=/etc/passwd", "'cache-size'"),
    ("driver-owned flag", "log=/etc/passwd", "'log'"),
]


def test_bad_mount_option_is_invalid(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path, subtests: pytest.Subtests
) -> None:
    """Refused alike from the `mountOptions` volume attribute and from the capability's mount flags."""
    target = workdir / "pods/opt/mount"
    for case, option, expected in BAD_OPTIONS:
        with subtests.test(msg=f"{case} in the volume attribute"):
            message = expect_rpc_error(
                Code.INVALID_ARGUMENT,
                driver.publish,
                "pv-bad-option",
                target,
                sqlite_secret,
                {"mountOptions": f"writeback,{option}"},
            )
            assert expected in message
            assert_nothing_left(driver, workdir, target)
        with subtests.test(msg=f"{case} in the mount flags"):
            message = expect_rpc_error(
                Code.INVALID_ARGUMENT,
                driver.publish,
                "pv-bad-flag",
                target,
                sqlite_secret,
                cap=capability(mount_flags=("writeback", option)),
            )
            assert expected in message
            assert_nothing_left(driver, workdir, target)


def test_sub_path_escaping_the_volume_is_invalid(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path, subtests: pytest.Subtests
) -> None:
    target = workdir / "pods/escape/mount"
    for attribute in ("subPath", "subdir"):
        for value in ("a/../../etc", "..", "x\n/y"):
            with subtests.test(msg=attribute, value=value):
                message = expect_rpc_error(
                    Code.INVALID_ARGUMENT, driver.publish, "pv-escape", target, sqlite_secret, {attribute: value}
                )
                assert attribute in message
                assert_nothing_left(driver, workdir, target)


# -- ids -------------------------------------------------------------------------------------------------------------


def test_stats_of_unknown_volume_is_not_found(driver: DriverProcess, workdir: Path) -> None:
    message = expect_rpc_error(
        Code.NOT_FOUND, driver.volume_stats, "pv-ghost", workdir / "pods/ghost/mount", timeout=10
    )
    assert "pv-ghost" in message


def test_malformed_volume_id_is_invalid(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path, subtests: pytest.Subtests
) -> None:
    target = workdir / "pods/id/mount"
    for volume_id in ("../etc", "a/b", "pv 1", "-leading-dash", "x" * 300):
        with subtests.test(msg=volume_id[:20]):
            message = expect_rpc_error(Code.INVALID_ARGUMENT, driver.publish, volume_id, target, sqlite_secret)
            assert "volume_id" in message
            assert_nothing_left(driver, workdir, target)


# -- file systems that cannot be mounted -----------------------------------------------------------------------------


@pytest.mark.mounts
def test_unformatted_volume_without_storage_is_a_failed_precondition(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    secrets = {"name": "fresh", "metaurl": f"sqlite3://{workdir / 'never-formatted.db'}"}
    target = workdir / "pods/fresh/mount"
    message = expect_rpc_error(Code.FAILED_PRECONDITION, driver.publish, "pv-fresh", target, secrets)
    assert "not formatted" in message
    assert_nothing_left(driver, workdir, target)


@pytest.fixture(scope="module", autouse=True)
def _start_slow_failures(request: pytest.FixtureRequest) -> None:
    """The unreachable-Redis publish waits out the driver's ready timeout: start it now, in the background."""
    start_slow_failures({item.name for item in request.session.items})


@pytest.mark.mounts
@pytest.mark.slow
def test_unreachable_redis_fails_in_bounded_time() -> None:
    """On a private driver (see `slow_failure`): the publish errors out, in bounded time, leaving nothing."""
    outcome = slow_failure("unreachable-redis")
    assert outcome.code != Code.OK, "publishing a volume whose Redis is unreachable succeeded"
    assert outcome.elapsed < 90, f"publish took {outcome.elapsed:.0f}s"
    assert "127.0.0.1:1" in outcome.details, outcome.details
    assert outcome.leftovers == []
