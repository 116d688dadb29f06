"""Pure builders of `juicefs` invocations.

Secrets only ever go into a command's environment; argv is safe to log and is
what `ps` shows on the node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from juicefs_csi.volume.options import MountOptions
from juicefs_csi.volume.secrets import Credentials

GIB = 1 << 30


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret_values: frozenset[str] = field(default_factory=frozenset, repr=False)

    @property
    def name(self) -> str:
        return self.argv[1] if len(self.argv) > 1 else self.argv[0]


def client_env(credentials: Credentials) -> dict[str, str]:
    """User `envs` first, then the secrets the client reads from its environment."""
    env = dict(credentials.envs)
    if credentials.meta.password:
        env["META_PASSWORD"] = credentials.meta.password
    return env


def format_command(binary: str, credentials: Credentials) -> Command:
    """`--no-update` when storage or bucket is missing, so a partial Secret never rewrites settings."""
    argv = [binary, "format"]
    if not (credentials.storage and credentials.bucket):
        argv.append("--no-update")
    if credentials.storage:
        argv.append(f"--storage={credentials.storage}")
    if credentials.bucket:
        argv.append(f"--bucket={credentials.bucket}")
    argv += [f"--{key}={value}" for key, value in credentials.format_flags]
    argv += [f"--{key}" if value is None else f"--{key}={value}" for key, value in credentials.format_options]
    argv += [credentials.meta.url_without_password, credentials.name]
    env = client_env(credentials)
    if credentials.access_key:
        env["ACCESS_KEY"] = credentials.access_key
    if credentials.secret_key:
        env["SECRET_KEY"] = credentials.secret_key
    env.update(credentials.secret_format_env)
    return Command(tuple(argv), env, credentials.secret_values())


def mount_command(
    binary: str, credentials: Credentials, options: MountOptions, mountpoint: str, metrics_address: str
) -> Command:
    """A foreground client: the driver, not a daemonising parent, supervises it."""
    if not options.has("metrics"):
        options = options.with_flag("metrics", metrics_address)
    if not options.has("no-usage-report"):
        options = options.with_flag("no-usage-report", None)
    argv = [binary, "mount", *options.to_args(), credentials.meta.url_without_password, mountpoint]
    return Command(tuple(argv), client_env(credentials), credentials.secret_values())


def status_command(binary: str, credentials: Credentials) -> Command:
    argv = (binary, "status", credentials.meta.url_without_password)
    return Command(argv, client_env(credentials), credentials.secret_values())


def quota_set_command(binary: str, credentials: Credentials, path: str, capacity_bytes: int) -> Command:
    """Quota capacity is whole GiB, rounded up, and at least 1 GiB."""
    argv = (
        binary,
        "quota",
        "set",
        credentials.meta.url_without_password,
        "--path",
        "/" + path.strip("/"),
        "--capacity",
        str(capacity_gib(capacity_bytes)),
        "--create",
    )
    return Command(argv, client_env(credentials), credentials.secret_values())


def rmr_command(binary: str, path: str) -> Command:
    return Command((binary, "rmr", "--skip-trash", path))


def capacity_gib(capacity_bytes: int) -> int:
    return max(1, math.ceil(capacity_bytes / GIB))
