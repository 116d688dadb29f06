"""Volume settings: the client key that decides sharing, sub-paths, delete delays and volume ids."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pytest

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.volume.settings import (
    ATTR_DELETE_DELAY,
    ATTR_MOUNT_OPTIONS,
    ATTR_SUB_PATH,
    ATTR_SUBDIR,
    VolumeSettings,
    clean_sub_path,
    parse_duration,
    parse_volume_settings,
    validate_volume_id,
)

SECRETS = {
    "name": "myjfs",
    "metaurl": "redis://:pw-1@h:6379/1",
    "storage": "s3",
    "bucket": "https://b.s3.amazonaws.com",
    "access-key": "ak-1",
    "secret-key": "sk-1",
}
CONTEXT = {ATTR_MOUNT_OPTIONS: "cache-size=100,writeback"}
FLAGS = ["allow_other"]


def settings(
    volume_id: str = "pvc-0a1b",
    secrets: Mapping[str, str] = SECRETS,
    context: Mapping[str, str] = CONTEXT,
    flags: Sequence[str] = FLAGS,
) -> VolumeSettings:
    return parse_volume_settings(volume_id, secrets, context, flags)


# --------------------------------------------------------------------------
# client_key
# --------------------------------------------------------------------------


def test_client_key_is_stable_across_releases() -> None:
    """It names mount points and state files: changing it orphans every running client on upgrade."""
    assert settings().client_key == "pvc-0a1b-0f979b87fa10943d"


def test_client_key_shape() -> None:
    assert re.fullmatch(r"[a-z0-9-]{1,40}-[0-9a-f]{16}", settings().client_key)


@pytest.mark.parametrize(
    ("context", "flags"),
    [
        ({ATTR_MOUNT_OPTIONS: "writeback,cache-size=100"}, ["allow_other"]),
        ({ATTR_MOUNT_OPTIONS: " writeback , cache-size=100 ,allow_other"}, []),
        ({}, ["writeback", "allow_other", "cache-size=100"]),
        ({ATTR_MOUNT_OPTIONS: "allow_other"}, ["cache-size=100", "writeback"]),
        ({ATTR_MOUNT_OPTIONS: "cache-size=100,writeback=true"}, ["allow_other", "cache-size=50"]),
    ],
)
def test_client_key_ignores_option_order(context: dict[str, str], flags: list[str]) -> None:
    assert settings(context=context, flags=flags).client_key == settings().client_key


@pytest.mark.parametrize(
    "context",
    [
        {**CONTEXT, ATTR_SUB_PATH: "pvc-0a1b"},
        {**CONTEXT, ATTR_SUBDIR: "/team-a"},
        {**CONTEXT, ATTR_DELETE_DELAY: "5m"},
    ],
)
def test_target_level_choices_do_not_split_a_client(context: dict[str, str]) -> None:
    assert settings(context=context).client_key == settings().client_key


def test_client_key_ignores_envs_order() -> None:
    a = settings(secrets={**SECRETS, "envs": '{"A": "1", "B": "2"}'})
    b = settings(secrets={**SECRETS, "envs": "B: 2\nA: 1"})
    assert a.client_key == b.client_key


@pytest.mark.parametrize(
    ("volume_id", "secrets", "context", "flags"),
    [
        ("pvc-0a1c", SECRETS, CONTEXT, FLAGS),
        ("PVC-0A1B", SECRETS, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "metaurl": "redis://:pw-2@h:6379/1"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "metaurl": "redis://h:6379/1"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "metaurl": "redis://:pw-1@h:6379/2"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "name": "otherjfs"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "access-key": "ak-2"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "secret-key": "sk-2"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "bucket": "https://c.s3.amazonaws.com"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "envs": "A: 1"}, CONTEXT, FLAGS),
        ("pvc-0a1b", {**SECRETS, "format-options": "session-token=t-1"}, CONTEXT, FLAGS),
        ("pvc-0a1b", SECRETS, {ATTR_MOUNT_OPTIONS: "cache-size=200,writeback"}, FLAGS),
        ("pvc-0a1b", SECRETS, {ATTR_MOUNT_OPTIONS: "cache-size=100,writeback=false"}, FLAGS),
        ("pvc-0a1b", SECRETS, CONTEXT, []),
        ("pvc-0a1b", SECRETS, CONTEXT, ["allow_other", "ro"]),
    ],
)
def test_client_key_differs_when_anything_that_matters_differs(
    volume_id: str, secrets: dict[str, str], context: dict[str, str], flags: list[str]
) -> None:
    assert settings(volume_id, secrets, context, flags).client_key != settings().client_key


def test_client_key_contains_no_secret() -> None:
    secrets = {
        **SECRETS,
        "metaurl": "redis://:pvc-0a1b-pw@h:6379/1",
        "access-key": "pvc-0a1b-ak",
        "secret-key": "sk-Zq9-S3cr3t",
        "envs": "TOKEN: env-S3cr3t",
        "format-options": "session-token=tok-S3cr3t",
    }
    found = settings(secrets=secrets)
    key = found.client_key
    for value in found.credentials.secret_values():
        assert value not in key
    assert "S3cr3t" not in key


@pytest.mark.parametrize(
    ("volume_id", "prefix"),
    [
        ("pvc-0a1b", "pvc-0a1b-"),
        ("PVC_Ab.1", "pvc-ab-1-"),
        ("a" * 60, "a" * 40 + "-"),
        ("X._-y", "x---y-"),
        ("9_", "9-"),
    ],
)
def test_client_key_prefix_is_a_slug_of_the_volume_id(volume_id: str, prefix: str) -> None:
    key = settings(volume_id=volume_id).client_key
    assert key.startswith(prefix)
    assert len(key) == len(prefix) + 16


# --------------------------------------------------------------------------
# Sub-path
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subdir", "sub_path", "expected"),
    [
        ("", "", ""),
        ("a", "", "a"),
        ("", "b", "b"),
        ("a", "b", "a/b"),
        ("/a/b/", "/c/", "a/b/c"),
        ("//a//b", "c//d", "a/b/c/d"),
        ("./a/./b", ".", "a/b"),
        ("/", "/", ""),
        ("team a", "pvc-1", "team a/pvc-1"),
        ("a..b", "..c", "a..b/..c"),
    ],
)
def test_sub_path_from_subdir_and_sub_path(subdir: str, sub_path: str, expected: str) -> None:
    context = {ATTR_SUBDIR: subdir, ATTR_SUB_PATH: sub_path}
    assert settings(context=context).sub_path == expected


@pytest.mark.parametrize("attribute", [ATTR_SUBDIR, ATTR_SUB_PATH])
@pytest.mark.parametrize("value", ["..", "../x", "a/../b", "/a/..", "a/../../etc", "a\nb", "a\x00b", "a\tb"])
def test_sub_path_cannot_escape_or_carry_control_characters(attribute: str, value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        settings(context={attribute: value})
    assert repr(attribute) in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"), [("/abs/path", "abs/path"), ("rel", "rel"), ("", ""), ("a/b/", "a/b"), ("/./", "")]
)
def test_clean_sub_path(raw: str, expected: str) -> None:
    assert clean_sub_path(raw, "x") == expected


# --------------------------------------------------------------------------
# Delete delay
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("", 0.0),
        ("  ", 0.0),
        ("0", 0.0),
        ("10", 10.0),
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2m0.5s", 120.5),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("1000ns", 1e-6),
        (" 5m ", 300.0),
    ],
)
def test_delete_delay_durations(raw: str, seconds: float) -> None:
    assert settings(context={ATTR_DELETE_DELAY: raw}).delete_delay == pytest.approx(seconds)


@pytest.mark.parametrize(
    "raw", ["1x", "-1s", "1m30", "abc", "1 m", "1d", "s", "1.5", "1e3s", "m1", "1s;", "5mins", "1.s", "+5s"]
)
def test_bad_delete_delays_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        settings(context={ATTR_DELETE_DELAY: raw})
    assert ATTR_DELETE_DELAY in str(info.value)


@pytest.mark.parametrize("raw", ["²", "1²"])
def test_delete_delay_with_superscript_digits_is_invalid_argument(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(raw, "delay")


def test_no_delete_delay_by_default() -> None:
    assert settings().delete_delay == 0.0


# --------------------------------------------------------------------------
# Volume ids
# --------------------------------------------------------------------------


@pytest.mark.parametrize("volume_id", ["a", "pvc-123", "A.b_c-1", "0", "a" * 253, "myjfs-pvc-0a1b2c3d"])
def test_valid_volume_ids(volume_id: str) -> None:
    assert validate_volume_id(volume_id) == volume_id


@pytest.mark.parametrize(
    "volume_id",
    ["", "-a", ".a", "_a", "a/b", "a b", "a" * 254, "../x", "a:b", "a\\b", "a\x00", "\na", "ä"],
)
def test_invalid_volume_ids(volume_id: str) -> None:
    with pytest.raises(InvalidArgument, match="volume_id"):
        validate_volume_id(volume_id)


def test_volume_id_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="volume_id"):
        validate_volume_id("pvc-1\n")


# --------------------------------------------------------------------------
# parse_volume_settings
# --------------------------------------------------------------------------


def test_settings_need_secrets() -> None:
    with pytest.raises(InvalidArgument, match="secrets are required"):
        settings(secrets={})


def test_settings_validate_the_volume_id_first() -> None:
    with pytest.raises(InvalidArgument, match="volume_id"):
        settings(volume_id="bad/id", secrets={})


def test_mount_options_attribute_wins_over_pv_mount_options() -> None:
    found = settings(context={ATTR_MOUNT_OPTIONS: "cache-size=200"}, flags=["cache-size=100", "ro"])
    assert found.options.get("cache-size") == "200"
    assert found.options.read_only


def test_settings_carry_credentials_and_options() -> None:
    found = settings()
    assert found.volume_id == "pvc-0a1b"
    assert found.credentials.name == "myjfs"
    assert found.credentials.meta.password == "pw-1"
    assert found.options.to_args() == ["--cache-size=100", "--writeback", "-o", "allow_other"]


def test_invalid_mount_options_reject_the_settings() -> None:
    with pytest.raises(InvalidArgument, match="unknown mount option"):
        settings(context={ATTR_MOUNT_OPTIONS: "nope"})
