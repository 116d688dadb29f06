"""Public names of mount pods, and the Kubernetes syntax rules they must follow.

Labels, annotations and the finalizer are those of the Go driver, so its tools
(dashboard, `kubectl jfs`, PodDisruptionBudgets on `app.kubernetes.io/name`,
Prometheus relabelling) keep working. Every name derived from a volume id is
valid Kubernetes syntax: ids that already are stay as the Go driver writes them,
others are cut and given a digest, so distinct ids never share a name.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections import OrderedDict
from collections.abc import Mapping

from juicefs_csi.volume.secrets import SECRET_FORMAT_OPTIONS
from juicefs_csi.volume.settings import VolumeSettings

# Labels of a mount pod.
LABEL_APP_NAME = "app.kubernetes.io/name"
APP_NAME_MOUNT = "juicefs-mount"
LABEL_VOLUME_ID = "volume-id"
LABEL_HASH = "juicefs-hash"
LABEL_UPGRADE_UUID = "juicefs-upgrade-uuid"
# Label of the per-mount Secret.
LABEL_SECRET = "juicefs/secret"
# Annotations of a mount pod.
ANN_UNIQUE_ID = "juicefs-uniqueid"
ANN_FS_UUID = "juicefs-uuid"
ANN_DELETE_DELAY = "juicefs-delete-delay"
ANN_DELETE_AT = "juicefs-delete-at"
ANN_CLEAN_CACHE = "juicefs-clean-cache"
ANN_IMMEDIATE_RECONCILER = "juicefs-immediate-reconciler"
FINALIZER = "juicefs.com/finalizer"

# Volume attributes (PV volumeAttributes / StorageClass parameters) read in mount pod mode.
ATTR_MOUNT_IMAGE = "juicefs/mount-image"
ATTR_CPU_LIMIT = "juicefs/mount-cpu-limit"
ATTR_MEMORY_LIMIT = "juicefs/mount-memory-limit"
ATTR_CPU_REQUEST = "juicefs/mount-cpu-request"
ATTR_MEMORY_REQUEST = "juicefs/mount-memory-request"
ATTR_CLEAN_CACHE = "juicefs/clean-cache"

# Environment of the node plugin.
ENV_MOUNT_NAMESPACE = "JUICEFS_MOUNT_NAMESPACE"
ENV_MOUNT_PATH = "JUICEFS_MOUNT_PATH"
ENV_CE_MOUNT_IMAGE = "JUICEFS_CE_MOUNT_IMAGE"
ENV_PRIORITY_NAME = "JUICEFS_MOUNT_PRIORITY_NAME"
ENV_PREEMPTION_POLICY = "JUICEFS_MOUNT_PREEMPTION_POLICY"

# The global ConfigMap.
CONFIG_MAP_NAME = "juicefs-csi-driver-config"
CONFIG_MAP_KEY = "config.yaml"

# Inside the mount pod.
MOUNT_CONTAINER = "jfs-mount"
FORMAT_CONTAINER = "jfs-format"
JFS_DIR_VOLUME = "jfs-dir"
CACHE_VOLUME_PREFIX = "cachedir-"
POD_MOUNT_BASE = "/jfs"
DEFAULT_CACHE_DIR = "/var/jfsCache"
METRICS_PORT = 9567
METRICS_PORT_NAME = "metrics"
# Variables the driver sets in the client's environment; a patch may not set them.
DRIVER_ENV_NAMES = frozenset(
    {
        "JFS_FOREGROUND",
        "JFS_INSIDE_CONTAINER",
        "JFS_SUPER_COMM",
        "JFS_NO_UMOUNT",
        "JFS_NO_UPDATE",
        "_JFS_META_SID",
        "JUICEFS_CLIENT_PATH",
        "JFS_NO_CHECK_OBJECT_STORAGE",
    }
)
# Variables that carry the volume's credentials, always from the per-mount Secret.
CREDENTIAL_ENV_NAMES = frozenset({"META_PASSWORD", "ACCESS_KEY", "SECRET_KEY", *SECRET_FORMAT_OPTIONS.values()})
# Volume names the builder (or the Go driver's builder) uses; a patch volume may not start with them.
RESERVED_VOLUME_PREFIXES = ("rsa-key", "init-config", "config-", JFS_DIR_VOLUME, "update-db", CACHE_VOLUME_PREFIX)

MAX_NAME = 63
MAX_SUBDOMAIN = 253
# A mount directory is one path component: stay well under NAME_MAX (255).
MAX_MOUNT_DIR = 200
SUFFIX_LENGTH = 6
# Bumped when the builder changes pods in a way that must not reuse pods built before.
HASH_SCHEME = 1
# PBKDF2 rounds for the credential fingerprint in the hash label: labels are readable by anyone who can
# list pods, so a weak password must not be cheap to guess from it.
FINGERPRINT_ROUNDS = 100_000

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SUFFIX = re.compile(rf"[a-z]{{{SUFFIX_LENGTH}}}")
_MOUNT_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REFERENCE_KEY = re.compile(r"juicefs-[0-9a-f]{55}")


def is_dns_label(text: str) -> bool:
    """RFC 1123 label: pod names here, hostnames, container and volume names."""
    return len(text) <= MAX_NAME and bool(_DNS_LABEL.fullmatch(text))


def is_dns_subdomain(text: str) -> bool:
    """RFC 1123 subdomain: Secret, PVC and PriorityClass names, label key prefixes."""
    return len(text) <= MAX_SUBDOMAIN and bool(_DNS_SUBDOMAIN.fullmatch(text))


def is_label_value(text: str) -> bool:
    return len(text) <= MAX_NAME and bool(_LABEL_VALUE.fullmatch(text))


def is_qualified_name(text: str) -> bool:
    """A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain."""
    prefix, slash, name = text.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return False
    return len(name) <= MAX_NAME and bool(_QUALIFIED_NAME.fullmatch(name))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fit(body: str, limit: int, original: str) -> str:
    """`body` cut to `limit` with a digest of `original`, so that two originals never collide."""
    digest = _digest(original)[:8]
    head = body[: limit - len(digest) - 1].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


def _dns_chars(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def label_value(value: str) -> str:
    """`value` itself when it is a valid label value (as the Go driver writes it), else a safe stand-in."""
    if is_label_value(value):
        return value
    return _fit(re.sub(r"[^A-Za-z0-9_.-]", "-", value).strip("-_."), MAX_NAME, value)


def dns_label(value: str) -> str:
    if is_dns_label(value):
        return value
    return _fit(_dns_chars(value), MAX_NAME, value)


def new_suffix() -> str:
    """The random part of a mount pod name: 6 lowercase letters, as in the Go driver."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(SUFFIX_LENGTH))


def _check_suffix(suffix: str) -> None:
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"mount pod suffix must be {SUFFIX_LENGTH} lowercase letters")


def mount_pod_name(node: str, unique_id: str, suffix: str) -> str:
    """`juicefs-<node>-<uniqueId>-<suffix>`; too long or not DNS-safe: cut, with a digest of node and id."""
    _check_suffix(suffix)
    name = f"juicefs-{node}-{unique_id}-{suffix}"
    if is_dns_label(name):
        return name
    body = _fit(_dns_chars(f"{node}-{unique_id}"), MAX_NAME - len("juicefs--") - SUFFIX_LENGTH, f"{node}\n{unique_id}")
    return f"juicefs-{body}-{suffix}"


def mount_secret_name(unique_id: str) -> str:
    """The per-mount Secret: `juicefs-<uniqueId>-secret`, shared by every mount pod of the volume on all nodes."""
    name = f"juicefs-{unique_id}-secret"
    if is_dns_subdomain(name):
        return name
    return f"juicefs-{_fit(_dns_chars(unique_id), MAX_SUBDOMAIN - len('juicefs--secret'), unique_id)}-secret"


def mount_dir_name(unique_id: str, suffix: str) -> str:
    """`<uniqueId>-<suffix>`: the mount point's directory under `/jfs` in the pod and the mount root on the host."""
    _check_suffix(suffix)
    if _MOUNT_DIR.fullmatch(unique_id) and len(unique_id) <= MAX_MOUNT_DIR:
        return f"{unique_id}-{suffix}"
    return f"{_fit(_dns_chars(unique_id), MAX_MOUNT_DIR, unique_id)}-{suffix}"


def reference_key(target: str) -> str:
    """Annotation key recording that `target` uses a mount pod; the Go rule: `("juicefs-" + sha256 hex)[:63]`."""
    return f"juicefs-{_digest(target)}"[:MAX_NAME]


def is_reference_key(key: str) -> bool:
    """The number of such annotations is the mount pod's reference count."""
    return bool(_REFERENCE_KEY.fullmatch(key))


def mount_pod_selector(unique_id: str) -> dict[str, str]:
    """Labels that find a volume's mount pods (add `spec.nodeName` as a field selector)."""
    return {LABEL_APP_NAME: APP_NAME_MOUNT, LABEL_VOLUME_ID: label_value(unique_id)}


def settings_hash(volume: VolumeSettings, pod_material: Mapping[str, object]) -> str:
    """The `juicefs-hash` label: 63 hex chars of sha256 over a canonical JSON of everything that shapes the pod.

    As in the Go driver, the target, the volume id and the sub-path are left out: they reach the pod
    only through patch templates, which are hashed after they are filled. Credentials enter as a slow,
    salted fingerprint, so the label never carries a secret and does not make one cheap to guess.
    """
    creds = volume.credentials
    public = {
        "scheme": HASH_SCHEME,
        "name": creds.name,
        "meta": creds.meta.url_without_password,
        "storage": [creds.storage, creds.bucket],
        "format": [creds.format_flags, creds.format_options, [key for key, _ in creds.secret_format_env]],
        "envs": [key for key, _ in creds.envs],
        "options": [volume.options.flags, volume.options.fuse],
        "delete_delay": volume.delete_delay,
        "pod": pod_material,
    }
    canonical = _canonical(public)
    private = _canonical([creds.meta.password, creds.access_key, creds.secret_key, creds.secret_format_env, creds.envs])
    return _digest(canonical + _fingerprint(private, _digest(canonical)))[:MAX_NAME]


_fingerprints: OrderedDict[str, str] = OrderedDict()
_CACHE_KEY = secrets.token_bytes(32)
FINGERPRINT_CACHE_SIZE = 1024


def _fingerprint(private: str, salt: str) -> str:
    """The slow hash, computed once per distinct credentials: every publish needs it, and 100,000
    rounds on the event loop would stall every other request. Cached under a digest keyed with a
    per-process random key, so the cache holds no secret in the clear nor a cheap hash of one."""
    key = hashlib.blake2b(f"{FINGERPRINT_ROUNDS}:{salt}:{private}".encode(), key=_CACHE_KEY).hexdigest()
    cached = _fingerprints.get(key)
    if cached is None:
        cached = hashlib.pbkdf2_hmac("sha256", private.encode(), salt.encode(), FINGERPRINT_ROUNDS).hex()
        _fingerprints[key] = cached
        while len(_fingerprints) > FINGERPRINT_CACHE_SIZE:
            _fingerprints.popitem(last=False)
    else:
        _fingerprints.move_to_end(key)
    return cached


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
