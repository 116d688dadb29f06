"""The community-edition volume Secret: parsing, validation and redaction.

Key names follow the Go driver so that existing Secrets keep working. Every
error message here is built from key names and redacted values only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import yaml

from juicefs_csi.errors import InvalidArgument

# Metadata engines the pinned juicefs client understands.
META_SCHEMES = frozenset(
    {
        "redis",
        "rediss",
        "unix",
        "tikv",
        "sqlite3",
        "mysql",
        "postgres",
        "badger",
        "etcd",
        "memkv",
    }
)
VOLUME_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
FORMAT_OPTION_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DIGITS = re.compile(r"[0-9]+")
# Secret keys mapped to `juicefs format` flags; numeric ones are checked as integers.
FORMAT_FLAG_KEYS = ("block-size", "compress", "trash-days", "capacity", "inodes", "shards")
NUMERIC_FORMAT_KEYS = frozenset({"block-size", "trash-days", "capacity", "inodes", "shards"})
# Format options whose values are credentials: they travel in the environment.
SECRET_FORMAT_OPTIONS = {"session-token": "SESSION_TOKEN", "access-key": "ACCESS_KEY", "secret-key": "SECRET_KEY"}
REDACTED = "****"


@dataclass(frozen=True)
class MetaURL:
    """A metadata URL split so that its password never has to appear in argv."""

    scheme: str
    url_without_password: str
    password: str | None = field(repr=False)
    redacted: str

    def __str__(self) -> str:
        return self.redacted


@dataclass(frozen=True)
class Credentials:
    """What `juicefs format` and `juicefs mount` need to reach one file system."""

    name: str
    meta: MetaURL
    storage: str | None = None
    bucket: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    format_flags: tuple[tuple[str, str], ...] = ()
    format_options: tuple[tuple[str, str | None], ...] = ()
    secret_format_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    envs: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def formats(self) -> bool:
        """Whether the volume is formatted by the driver (the Secret names a storage)."""
        return bool(self.storage)

    def secret_values(self) -> frozenset[str]:
        """Every value that must never appear in logs, events or errors."""
        values = {self.meta.password, self.access_key, self.secret_key}
        values.update(value for _, value in self.secret_format_env)
        values.update(value for _, value in self.envs)
        return frozenset(v for v in values if v)


def parse_meta_url(raw: str) -> MetaURL:
    """Split the password off a meta URL; a URL without scheme means Redis, as in the Go driver."""
    text = raw.strip()
    if not text:
        raise InvalidArgument("secret key 'metaurl' is empty")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidArgument("secret key 'metaurl' contains control characters")
    if "://" not in text:
        text = "redis://" + text
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in META_SCHEMES:
        raise InvalidArgument(
            f"secret key 'metaurl' has unsupported scheme {scheme!r}; expected one of "
            + ", ".join(sorted(META_SCHEMES))
        )
    authority, path = _split_mysql_dsn(rest) if scheme == "mysql" else _split_authority(rest)
    if scheme not in {"sqlite3", "badger"} and not authority and not path.strip("/"):
        raise InvalidArgument(f"secret key 'metaurl' ({scheme}://) names no host or database")
    userinfo, at, hostpart = authority.rpartition("@")
    if not at:
        return MetaURL(scheme, f"{scheme}://{rest}", None, f"{scheme}://{rest}")
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        cleaned = f"{scheme}://{user + '@' if user else ''}{hostpart}{path}"
        return MetaURL(scheme, cleaned, None, cleaned)
    without = f"{scheme}://{user + '@' if user else ''}{hostpart}{path}"
    redacted = f"{scheme}://{user}:{REDACTED}@{hostpart}{path}"
    return MetaURL(scheme, without, unquote(password), redacted)


def _split_mysql_dsn(rest: str) -> tuple[str, str]:
    """go-sql-driver takes the last '@' before the last '/' as the end of the password."""
    slash = rest.rfind("/")
    at = rest.rfind("@", 0, slash if slash >= 0 else len(rest))
    if at < 0:
        return _split_authority(rest)
    host_end = rest.find("/", at)
    host_end = len(rest) if host_end < 0 else host_end
    return rest[:host_end], rest[host_end:]


def _split_authority(rest: str) -> tuple[str, str]:
    """Authority ends at the first '/' outside parentheses (MySQL writes `@(host:port)/db`)."""
    depth = 0
    for index, char in enumerate(rest):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char in "/?" and depth == 0:
            return rest[:index], rest[index:]
    return rest, ""


def parse_envs(raw: str) -> tuple[tuple[str, str], ...]:
    """`envs` is a YAML or JSON map of environment variables for the client."""
    if not raw.strip():
        return ()
    try:
        loaded = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InvalidArgument("secret key 'envs' is not a YAML/JSON map") from None
    if not isinstance(loaded, dict):
        raise InvalidArgument("secret key 'envs' must be a map of NAME: value")
    envs: list[tuple[str, str]] = []
    for position, (key, value) in enumerate(loaded.items(), start=1):
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            raise InvalidArgument(
                f"secret key 'envs': entry {position} has an invalid variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if isinstance(value, (dict, list)):
            raise InvalidArgument(f"secret key 'envs': value of {key} must be a scalar")
        text = "" if value is None else (json.dumps(value) if isinstance(value, bool) else str(value))
        if "\x00" in text:
            raise InvalidArgument(f"secret key 'envs': value of {key} contains a NUL byte")
        envs.append((key, text))
    return tuple(sorted(envs))


def parse_format_options(raw: str) -> tuple[tuple[tuple[str, str | None], ...], tuple[tuple[str, str], ...]]:
    """`format-options` is `k=v,flag,...`; credential-like keys are moved to the environment."""
    options: list[tuple[str, str | None]] = []
    env: list[tuple[str, str]] = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not FORMAT_OPTION_KEY.fullmatch(key):
            # The item may be a mistyped credential: say where it is, never what it is.
            raise InvalidArgument(f"secret key 'format-options': item {position} is not of the form key or key=value")
        if eq and _has_control(value):
            raise InvalidArgument(f"secret key 'format-options': option {key} has control characters")
        if key in SECRET_FORMAT_OPTIONS:
            env.append((SECRET_FORMAT_OPTIONS[key], value.strip()))
            continue
        options.append((key, value.strip() if eq else None))
    return tuple(options), tuple(env)


def parse_credentials(secrets: Mapping[str, str]) -> Credentials:
    """Validate a volume Secret (community edition)."""
    name = (secrets.get("name") or "").strip()
    if not name:
        raise InvalidArgument("secret is missing required key 'name' (the JuiceFS volume name)")
    if not VOLUME_NAME.fullmatch(name):
        raise InvalidArgument(
            f"secret key 'name' {name[:64]!r} is not a valid JuiceFS volume name "
            "(3-63 characters: lowercase letters, digits and '-')"
        )
    if "token" in secrets and "metaurl" not in secrets:
        raise InvalidArgument("secret looks like an enterprise-edition secret ('token'); only 'metaurl' is supported")
    if "metaurl" not in secrets:
        raise InvalidArgument("secret is missing required key 'metaurl'")
    meta = parse_meta_url(secrets["metaurl"])
    storage = _optional(secrets, "storage")
    bucket = _optional(secrets, "bucket")
    access_key = _optional(secrets, "access-key") or _optional(secrets, "accesskey")
    secret_key = _optional(secrets, "secret-key") or _optional(secrets, "secretkey")
    checked = (("storage", storage), ("bucket", bucket), ("access-key", access_key), ("secret-key", secret_key))
    for key, value in checked:
        if value is not None and _has_control(value):
            raise InvalidArgument(f"secret key {key!r} contains control characters")
    flags: list[tuple[str, str]] = []
    for key in FORMAT_FLAG_KEYS:
        value = _optional(secrets, key)
        if value is None:
            continue
        if key in NUMERIC_FORMAT_KEYS and not DIGITS.fullmatch(value):
            raise InvalidArgument(f"secret key {key!r} must be a non-negative integer")
        if key == "compress" and value not in {"none", "lz4", "zstd"}:
            raise InvalidArgument("secret key 'compress' must be one of none, lz4, zstd")
        flags.append((key, value))
    format_options, secret_env = parse_format_options(secrets.get("format-options", ""))
    return Credentials(
        name=name,
        meta=meta,
        storage=storage,
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
        format_flags=tuple(flags),
        format_options=format_options,
        secret_format_env=secret_env,
        envs=parse_envs(secrets.get("envs", "")),
    )


def _optional(secrets: Mapping[str, str], key: str) -> str | None:
    value = secrets.get(key)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or c == "\x7f" for c in value)


def redact(text: str, secret_values: Iterable[str]) -> str:
    """Replace every known secret value in free text (e.g. a client's log tail)."""
    for value in sorted({v for v in secret_values if len(v) >= 3}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
