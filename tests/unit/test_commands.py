"""`juicefs` invocations: secrets only in the environment, argv safe to log and to show in `ps`."""

from __future__ import annotations

import pytest

from juicefs_csi.errors import FailedPrecondition, Internal
from juicefs_csi.juicefs.commands import (
    GIB,
    Command,
    capacity_gib,
    client_env,
    format_command,
    mount_command,
    quota_set_command,
    rmr_command,
    status_command,
)
from juicefs_csi.juicefs.runner import OUTPUT_TAIL_LINES, Result, classify_failure
from juicefs_csi.volume.options import parse_mount_options
from juicefs_csi.volume.secrets import Credentials, parse_credentials

BIN = "/usr/local/bin/juicefs"
META_PASSWORD = "meta-pw-Q1"
ACCESS_KEY = "AKIA-access-Q2"
SECRET_KEY = "secret-key-Q3"
SESSION_TOKEN = "session-token-Q4"
ENV_SECRET = "env-secret-Q5"
SECRETS = (META_PASSWORD, ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, ENV_SECRET)


def credentials(**overrides: str) -> Credentials:
    secret = {
        "name": "myjfs",
        "metaurl": f"redis://user:{META_PASSWORD}@redis:6379/1",
        "storage": "s3",
        "bucket": "https://b.s3.amazonaws.com",
        "access-key": ACCESS_KEY,
        "secret-key": SECRET_KEY,
        "block-size": "4096",
        "trash-days": "0",
        "format-options": f"session-token={SESSION_TOKEN},hash-prefix,storage-class=STANDARD",
        "envs": f'{{"MY_TOKEN": "{ENV_SECRET}", "TZ": "UTC"}}',
    }
    secret.update(overrides)
    return parse_credentials({k: v for k, v in secret.items() if v != "-"})


def assert_argv_has_no_secret(command: Command) -> None:
    joined = "\x00".join(command.argv)
    for value in SECRETS:
        assert value not in joined


# --------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------


def test_format_argv() -> None:
    command = format_command(BIN, credentials())
    assert command.argv == (
        BIN,
        "format",
        "--storage=s3",
        "--bucket=https://b.s3.amazonaws.com",
        "--block-size=4096",
        "--trash-days=0",
        "--hash-prefix",
        "--storage-class=STANDARD",
        "redis://user@redis:6379/1",
        "myjfs",
    )
    assert command.name == "format"


def test_format_argv_has_no_secret_and_env_has_them_all() -> None:
    command = format_command(BIN, credentials())
    assert_argv_has_no_secret(command)
    assert command.env == {
        "META_PASSWORD": META_PASSWORD,
        "ACCESS_KEY": ACCESS_KEY,
        "SECRET_KEY": SECRET_KEY,
        "SESSION_TOKEN": SESSION_TOKEN,
        "MY_TOKEN": ENV_SECRET,
        "TZ": "UTC",
    }
    assert set(SECRETS) <= command.secret_values


def test_format_argv_has_no_secret_with_legacy_key_names() -> None:
    creds = credentials(**{"access-key": "-", "secret-key": "-", "accesskey": ACCESS_KEY, "secretkey": SECRET_KEY})
    command = format_command(BIN, creds)
    assert_argv_has_no_secret(command)
    assert command.env["ACCESS_KEY"] == ACCESS_KEY
    assert command.env["SECRET_KEY"] == SECRET_KEY


def test_command_repr_has_no_secret() -> None:
    text = repr(format_command(BIN, credentials()))
    for value in SECRETS:
        assert value not in text


@pytest.mark.parametrize(
    ("storage", "bucket", "no_update"),
    [
        ("s3", "https://b", False),
        ("s3", "-", True),
        ("-", "https://b", True),
        ("-", "-", True),
        ("", "", True),
    ],
)
def test_format_no_update_when_storage_or_bucket_is_missing(storage: str, bucket: str, no_update: bool) -> None:
    argv = format_command(BIN, credentials(storage=storage, bucket=bucket)).argv
    assert ("--no-update" in argv) is no_update
    assert argv[1] == "format"
    assert argv[-2:] == ("redis://user@redis:6379/1", "myjfs")


def test_format_without_credentials_sets_no_key_variables() -> None:
    creds = parse_credentials({"name": "myjfs", "metaurl": "sqlite3:///tmp/meta.db"})
    command = format_command(BIN, creds)
    assert command.argv == (BIN, "format", "--no-update", "sqlite3:///tmp/meta.db", "myjfs")
    assert command.env == {}
    assert command.secret_values == frozenset()


def test_user_envs_cannot_override_the_secret_variables() -> None:
    creds = credentials(envs='{"ACCESS_KEY": "from-envs", "META_PASSWORD": "from-envs"}')
    env = format_command(BIN, creds).env
    assert env["ACCESS_KEY"] == ACCESS_KEY
    assert env["META_PASSWORD"] == META_PASSWORD


# --------------------------------------------------------------------------
# mount
# --------------------------------------------------------------------------


def test_mount_argv_adds_the_metrics_address_and_no_usage_report() -> None:
    options = parse_mount_options(["cache-size=100", "allow_other"])
    command = mount_command(BIN, credentials(), options, "/var/lib/jfs/mnt/k1", "127.0.0.1:9601")
    assert command.argv == (
        BIN,
        "mount",
        "--cache-size=100",
        "--metrics=127.0.0.1:9601",
        "--no-usage-report",
        "-o",
        "allow_other",
        "redis://user@redis:6379/1",
        "/var/lib/jfs/mnt/k1",
    )
    assert command.name == "mount"


def test_mount_keeps_the_users_metrics_address() -> None:
    options = parse_mount_options(["metrics=0.0.0.0:9567"])
    argv = mount_command(BIN, credentials(), options, "/mnt/x", "127.0.0.1:9601").argv
    assert "--metrics=0.0.0.0:9567" in argv
    assert "--metrics=127.0.0.1:9601" not in argv
    assert sum(arg.startswith("--metrics") for arg in argv) == 1


@pytest.mark.parametrize(
    ("item", "expected"),
    [("no-usage-report", "--no-usage-report"), ("no-usage-report=false", "--no-usage-report=false")],
)
def test_mount_keeps_the_users_usage_report_choice(item: str, expected: str) -> None:
    argv = mount_command(BIN, credentials(), parse_mount_options([item]), "/mnt/x", "127.0.0.1:9601").argv
    assert [arg for arg in argv if arg.startswith("--no-usage-report")] == [expected]


def test_mount_argv_has_no_secret_and_env_has_the_client_secrets() -> None:
    command = mount_command(BIN, credentials(), parse_mount_options([]), "/mnt/x", "127.0.0.1:9601")
    assert_argv_has_no_secret(command)
    assert command.env == {"META_PASSWORD": META_PASSWORD, "MY_TOKEN": ENV_SECRET, "TZ": "UTC"}
    assert set(SECRETS) <= command.secret_values


def test_mount_never_daemonises() -> None:
    argv = mount_command(BIN, credentials(), parse_mount_options(["ro"]), "/mnt/x", "127.0.0.1:9601").argv
    assert "-d" not in argv
    assert "--background" not in argv
    assert "--read-only" in argv


def test_client_env_without_password() -> None:
    assert client_env(credentials(metaurl="redis://redis:6379/1", envs="")) == {}


# --------------------------------------------------------------------------
# status, quota, rmr
# --------------------------------------------------------------------------


def test_status_command() -> None:
    command = status_command(BIN, credentials())
    assert command.argv == (BIN, "status", "redis://user@redis:6379/1")
    assert command.env["META_PASSWORD"] == META_PASSWORD
    assert_argv_has_no_secret(command)


@pytest.mark.parametrize(("path", "expected"), [("pvc-1", "/pvc-1"), ("/pvc-1/", "/pvc-1"), ("a/b", "/a/b"), ("", "/")])
def test_quota_set_command(path: str, expected: str) -> None:
    command = quota_set_command(BIN, credentials(), path, 5 * GIB)
    assert command.argv == (
        BIN,
        "quota",
        "set",
        "redis://user@redis:6379/1",
        "--path",
        expected,
        "--capacity",
        "5",
        "--create",
    )
    assert command.env["META_PASSWORD"] == META_PASSWORD
    assert_argv_has_no_secret(command)


@pytest.mark.parametrize(
    ("capacity_bytes", "gib"),
    [
        (0, 1),
        (1, 1),
        (GIB - 1, 1),
        (GIB, 1),
        (GIB + 1, 2),
        (3 * GIB // 2, 2),
        (10 * GIB, 10),
        (10 * GIB + 1, 11),
        (1 << 50, 1 << 20),
    ],
)
def test_quota_capacity_rounds_up_to_whole_gib_with_minimum_one(capacity_bytes: int, gib: int) -> None:
    assert capacity_gib(capacity_bytes) == gib
    argv = quota_set_command(BIN, credentials(), "p", capacity_bytes).argv
    assert argv[argv.index("--capacity") + 1] == str(gib)


def test_rmr_skips_the_trash() -> None:
    command = rmr_command(BIN, "/var/lib/jfs/mnt/k1/pvc-1")
    assert command.argv == (BIN, "rmr", "--skip-trash", "/var/lib/jfs/mnt/k1/pvc-1")
    assert command.env == {}
    assert command.name == "rmr"


def test_command_name_of_a_bare_binary() -> None:
    assert Command((BIN,)).name == BIN


# --------------------------------------------------------------------------
# classify_failure
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        "2026/01/01 <FATAL>: load setting: database is not formatted, please run `juicefs format ...` first",
        "line 1\nget status: database is not formatted\nline 3",
    ],
)
def test_not_formatted_is_failed_precondition(output: str) -> None:
    error = classify_failure(status_command(BIN, credentials()), Result(1, output))
    assert isinstance(error, FailedPrecondition)
    assert "not formatted" in error.message
    assert "'storage'" in error.message


def test_other_failures_are_internal_with_exit_code_and_tail() -> None:
    output = "\n".join(f"line {i}" for i in range(100)) + "\nboom: connection refused\n"
    error = classify_failure(format_command(BIN, credentials()), Result(3, output))
    assert isinstance(error, Internal)
    assert error.message.startswith("juicefs format failed (exit 3): ")
    assert "boom: connection refused" in error.message
    assert f"line {100 - OUTPUT_TAIL_LINES}" not in error.message
    assert f"line {100 - OUTPUT_TAIL_LINES + 1}" in error.message


@pytest.mark.parametrize(
    ("output", "lines", "expected"),
    [
        ("", 20, ""),
        ("  a\nb\n\n", 20, "a\nb"),
        ("a\nb\nc", 2, "b\nc"),
        ("a\nb\nc", 1, "c"),
    ],
)
def test_result_tail(output: str, lines: int, expected: str) -> None:
    assert Result(0, output).tail(lines) == expected
