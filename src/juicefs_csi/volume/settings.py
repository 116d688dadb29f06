"""Everything that decides how a volume is mounted, and the key that decides sharing.

Two publishes share one client exactly when their client keys are equal: same
volume, same credentials, same client options. Target-level choices (sub-path,
read-only bind) never split a client.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.volume.options import MountOptions, parse_mount_options, split_option_string
from juicefs_csi.volume.secrets import Credentials, parse_credentials

# Volume attributes (PV volumeAttributes / StorageClass parameters) read by the node.
ATTR_MOUNT_OPTIONS = "mountOptions"
ATTR_SUB_PATH = "subPath"
ATTR_SUBDIR = "subdir"
ATTR_DELETE_DELAY = "juicefs/mount-delete-delay"
VOLUME_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class VolumeSettings:
    volume_id: str
    credentials: Credentials
    options: MountOptions
    sub_path: str = ""
    delete_delay: float = 0.0

    @property
    def client_key(self) -> str:
        """Stable across restarts: it names the client's mount point and state."""
        creds = self.credentials
        material = {
            "volume": self.volume_id,
            "name": creds.name,
            "meta": creds.meta.url_without_password,
            "password": creds.meta.password,
            "storage": [creds.storage, creds.bucket, creds.access_key, creds.secret_key],
            "format": [creds.format_flags, creds.format_options, creds.secret_format_env],
            "envs": creds.envs,
            "options": [self.options.flags, self.options.fuse],
        }
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
        return f"{_slug(self.volume_id)}-{digest[:16]}"


def validate_volume_id(volume_id: str) -> str:
    if not volume_id:
        raise InvalidArgument("volume_id is required")
    if not VOLUME_ID.fullmatch(volume_id):
        raise InvalidArgument("volume_id may contain only letters, digits, '.', '_' and '-' (at most 253)")
    return volume_id


def clean_sub_path(raw: str, what: str) -> str:
    """A path inside the file system; it can never climb out of the volume root."""
    if any(ord(c) < 0x20 for c in raw):
        raise InvalidArgument(f"{what} contains control characters")
    if ".." in raw.split("/"):
        raise InvalidArgument(f"{what} must not contain '..'")
    normalized = posixpath.normpath("/" + raw).lstrip("/")
    return "" if normalized == "." else normalized


def parse_duration(raw: str, what: str) -> float:
    """Go-style durations (`1m30s`), as the Go driver's users write them."""
    text = raw.strip()
    if not text:
        return 0.0
    if re.fullmatch(r"[0-9]+", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f"{what} {raw[:32]!r} is not a duration such as 30s, 5m or 1h")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def parse_volume_settings(
    volume_id: str,
    secrets: Mapping[str, str],
    volume_context: Mapping[str, str],
    mount_flags: Sequence[str] = (),
) -> VolumeSettings:
    """Settings for one publish: PV mountOptions first, then the `mountOptions` attribute."""
    validate_volume_id(volume_id)
    if not secrets:
        raise InvalidArgument("node-publish secrets are required (the volume's Secret with name and metaurl)")
    credentials = parse_credentials(secrets)
    options = parse_mount_options([*mount_flags, *split_option_string(volume_context.get(ATTR_MOUNT_OPTIONS, ""))])
    sub_path = posixpath.join(
        clean_sub_path(volume_context.get(ATTR_SUBDIR, ""), f"volume attribute {ATTR_SUBDIR!r}"),
        clean_sub_path(volume_context.get(ATTR_SUB_PATH, ""), f"volume attribute {ATTR_SUB_PATH!r}"),
    ).strip("/")
    delay = parse_duration(volume_context.get(ATTR_DELETE_DELAY, ""), f"volume attribute {ATTR_DELETE_DELAY!r}")
    return VolumeSettings(volume_id, credentials, options, sub_path, delay)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())[:40].strip("-") or "vol"
