"""The global ConfigMap `juicefs-csi-driver-config`, key `config.yaml`: driver switches and mount pod patches.

A config is accepted or rejected as a whole. One invalid `mountPodPatch` item makes `parse_config`
raise, and the driver keeps the last config that parsed: a half-applied config would build mount
pods that match neither the old nor the new intent (an image pin or a cache disk silently missing),
while the last good config is at least one the operator wrote on purpose. Errors name the item index
and the field, e.g. `mountPodPatch[2].env[0].name`.

Field names, selectors and merge order follow the Go driver, so its ConfigMaps keep working; fields it
has that this driver does not implement (`volumeDevices`, `initContainers`, `resourcePercentages`)
are rejected rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import yaml

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.mountpod.names import (
    ANN_CLEAN_CACHE,
    ANN_DELETE_AT,
    ANN_DELETE_DELAY,
    ANN_FS_UUID,
    ANN_IMMEDIATE_RECONCILER,
    ANN_UNIQUE_ID,
    CONFIG_MAP_KEY,
    CONFIG_MAP_NAME,
    CREDENTIAL_ENV_NAMES,
    DRIVER_ENV_NAMES,
    LABEL_APP_NAME,
    LABEL_HASH,
    LABEL_UPGRADE_UUID,
    LABEL_VOLUME_ID,
    POD_MOUNT_BASE,
    RESERVED_VOLUME_PREFIXES,
    is_dns_label,
    is_dns_subdomain,
    is_label_value,
    is_qualified_name,
    is_reference_key,
)
from juicefs_csi.volume.options import parse_mount_options
from juicefs_csi.volume.secrets import ENV_NAME
from juicefs_csi.volume.settings import parse_duration

JSONObject = dict[str, Any]
T = TypeVar("T")

TEMPLATE_NAMES = ("MOUNT_POINT", "VOLUME_ID", "VOLUME_NAME", "SUB_PATH")
# Values a template may be filled with: templates end up in shell commands (preStop scripts), so a value
# must not be able to end a word or start another command.
# ':' and ',' are excluded too: they separate cache directories and options.
_TEMPLATE_SAFE = re.compile(r"[A-Za-z0-9._/@+-]*")
# Stand-ins used to validate templated mount options and cache paths when the config is parsed.
_SAMPLE_VALUES = {"VOLUME_ID": "volume", "VOLUME_NAME": "volume", "SUB_PATH": "volume"}

CACHE_DIR_TYPES = ("HostPath", "PVC", "EmptyDir", "Ephemeral")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
HOSTNAME_KEYS = ("volumeid", "podname")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
RESERVED_LABELS = frozenset({LABEL_APP_NAME, LABEL_VOLUME_ID, LABEL_HASH, LABEL_UPGRADE_UUID})
RESERVED_ANNOTATIONS = frozenset({ANN_UNIQUE_ID, ANN_FS_UUID, ANN_DELETE_AT, ANN_IMMEDIATE_RECONCILER})

_SWITCHES = {
    "enableNodeSelector": "enable_node_selector",
    "enableNativeSidecar": "enable_native_sidecar",
    "enableSetQuota": "enable_set_quota",
    "enableControllerSetQuota": "enable_controller_set_quota",
    "enableAutoRemoveRequestResources": "enable_auto_remove_request_resources",
    "enableAutoAbortStuckMountPod": "enable_auto_abort_stuck_mount_pod",
    "enableLazyUmountTarget": "enable_lazy_umount_target",
    "enableKubeletListMountPod": "enable_kubelet_list_mount_pod",
}
_PROBE_HANDLERS = frozenset({"exec", "httpGet", "tcpSocket", "grpc"})
_PROBE_NUMBERS = frozenset(
    {
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    }
)
_LIFECYCLE_HANDLERS = frozenset({"exec", "httpGet", "tcpSocket", "sleep"})
_MOUNT_KEYS = frozenset({"name", "mountPath", "readOnly", "subPath", "subPathExpr", "mountPropagation"})
_PROPAGATIONS = ("None", "HostToContainer", "Bidirectional")
_CACHE_KEYS = {
    "HostPath": frozenset({"type", "path"}),
    "PVC": frozenset({"type", "name"}),
    "EmptyDir": frozenset({"type", "medium", "sizeLimit"}),
    "Ephemeral": frozenset({"type", "storageClassName", "storage", "accessModes"}),
}
_QUANTITY = re.compile(
    r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?"
)
_SUFFIXES = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


class ConfigError(InvalidArgument):
    """A precise complaint about the ConfigMap: where (`mountPodPatch[1].labels`) and what."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{CONFIG_MAP_NAME} {CONFIG_MAP_KEY}: {path}: {problem}")
        self.path = path
        self.problem = problem

    @property
    def item(self) -> int | None:
        """Index of the `mountPodPatch` item at fault, if the problem is inside one."""
        found = re.match(r"mountPodPatch\[(\d+)\]", self.path)
        return int(found.group(1)) if found else None


def parse_quantity(text: str, what: str) -> Fraction:
    """A Kubernetes quantity (`100m`, `1.5`, `2Gi`, `500M`, `1e3`), exactly, so that limits compare right."""
    found = _QUANTITY.fullmatch(text)
    if not found:
        raise InvalidArgument(f"{what} {text[:32]!r} is not a Kubernetes quantity such as 500m, 2, 1.5Gi or 1e3")
    sign, number, exponent, suffix = found.groups()
    value = Fraction(number) * (Fraction(10) ** int(exponent[1:]) if exponent else _SUFFIXES[suffix or ""])
    return -value if sign == "-" else value


@dataclass(frozen=True)
class Requirement:
    """One `matchExpressions` entry, with Kubernetes semantics (`NotIn` matches a missing key)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        return present if self.operator == "Exists" else not present


@dataclass(frozen=True)
class LabelSelector:
    """An empty selector matches every object, as in Kubernetes."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


@dataclass(frozen=True)
class PVCSelector:
    labels: LabelSelector = LabelSelector()
    storage_class_name: str | None = None
    name: str | None = None

    def matches(self, pvc_labels: Mapping[str, str], pvc_name: str, storage_class: str | None) -> bool:
        """A PVC without a StorageClass never matches `matchStorageClassName` (the Go driver lets it pass)."""
        if self.name is not None and self.name != pvc_name:
            return False
        if self.storage_class_name is not None and self.storage_class_name != storage_class:
            return False
        return self.labels.matches(pvc_labels)


@dataclass(frozen=True)
class CacheDir:
    """One cache directory of the client and the volume that backs it."""

    type: str
    path: str = ""
    name: str = ""
    medium: str = ""
    size_limit: str = ""
    storage_class_name: str = ""
    storage: str = ""
    access_modes: tuple[str, ...] = ()

    def as_dict(self) -> JSONObject:
        fields = {
            "type": self.type,
            "path": self.path,
            "name": self.name,
            "medium": self.medium,
            "sizeLimit": self.size_limit,
            "storageClassName": self.storage_class_name,
            "storage": self.storage,
            "accessModes": list(self.access_modes),
        }
        return {key: value for key, value in fields.items() if value}


@dataclass(frozen=True)
class MountPodPatch:
    """One `mountPodPatch` item, or the merge of the items that match a volume (selectors then unset).

    `None` means "not set"; an empty list that is set replaces what earlier items set.
    """

    pvc_selector: PVCSelector | None = None
    node_selector: LabelSelector | None = None
    ce_mount_image: str | None = None
    image_pull_policy: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    host_network: bool | None = None
    host_pid: bool | None = None
    dns_config: JSONObject | None = None
    dns_policy: str | None = None
    hostname_key: str | None = None
    liveness_probe: JSONObject | None = None
    readiness_probe: JSONObject | None = None
    startup_probe: JSONObject | None = None
    lifecycle: JSONObject | None = None
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    termination_grace_period_seconds: int | None = None
    volumes: tuple[JSONObject, ...] | None = None
    volume_mounts: tuple[JSONObject, ...] | None = None
    env: tuple[JSONObject, ...] | None = None
    mount_options: tuple[str, ...] = ()
    cache_dirs: tuple[CacheDir, ...] | None = None

    def matches(
        self,
        pvc_labels: Mapping[str, str] | None,
        pvc_name: str | None,
        storage_class: str | None,
        node_labels: Mapping[str, str] | None,
    ) -> bool:
        """An item with a selector never matches when the object it selects on is unknown (a static PV has no PVC)."""
        if self.pvc_selector is not None and (
            pvc_name is None or not self.pvc_selector.matches(pvc_labels or {}, pvc_name, storage_class)
        ):
            return False
        return self.node_selector is None or (node_labels is not None and self.node_selector.matches(node_labels))

    def merged_with(self, later: MountPodPatch) -> MountPodPatch:
        """Later wins: scalars and whole objects (probes, lifecycle, dnsConfig) and lists are replaced;
        labels, annotations and resources merge by key; mount options merge by option name.
        `volumes` and `volumeMounts` are replaced together, so a merge never splits a pair.
        """
        resources = {section: dict(values) for section, values in self.resources.items()}
        for section, values in later.resources.items():
            resources.setdefault(section, {}).update(values)
        paired = later.volumes is not None or later.volume_mounts is not None
        return MountPodPatch(
            ce_mount_image=_later(self.ce_mount_image, later.ce_mount_image),
            image_pull_policy=_later(self.image_pull_policy, later.image_pull_policy),
            labels={**self.labels, **later.labels},
            annotations={**self.annotations, **later.annotations},
            host_network=_later(self.host_network, later.host_network),
            host_pid=_later(self.host_pid, later.host_pid),
            dns_config=_later(self.dns_config, later.dns_config),
            dns_policy=_later(self.dns_policy, later.dns_policy),
            hostname_key=_later(self.hostname_key, later.hostname_key),
            liveness_probe=_later(self.liveness_probe, later.liveness_probe),
            readiness_probe=_later(self.readiness_probe, later.readiness_probe),
            startup_probe=_later(self.startup_probe, later.startup_probe),
            lifecycle=_later(self.lifecycle, later.lifecycle),
            resources=resources,
            termination_grace_period_seconds=_later(
                self.termination_grace_period_seconds, later.termination_grace_period_seconds
            ),
            volumes=(later.volumes or ()) if paired else self.volumes,
            volume_mounts=(later.volume_mounts or ()) if paired else self.volume_mounts,
            env=_later(self.env, later.env),
            mount_options=merge_mount_options(self.mount_options, later.mount_options),
            cache_dirs=_later(self.cache_dirs, later.cache_dirs),
        )

    def as_dict(self) -> JSONObject:
        """The ConfigMap form (camelCase, only what is set): for the settings hash and for logs."""
        selector = None
        if self.pvc_selector is not None:
            selector = {
                **_selector_dict(self.pvc_selector.labels),
                "matchStorageClassName": self.pvc_selector.storage_class_name,
                "matchName": self.pvc_selector.name,
            }
        fields: JSONObject = {
            "pvcSelector": selector,
            "nodeSelector": None if self.node_selector is None else _selector_dict(self.node_selector),
            "ceMountImage": self.ce_mount_image,
            "imagePullPolicy": self.image_pull_policy,
            "labels": dict(self.labels) or None,
            "annotations": dict(self.annotations) or None,
            "hostNetwork": self.host_network,
            "hostPID": self.host_pid,
            "dnsConfig": self.dns_config,
            "dnsPolicy": self.dns_policy,
            "hostnameKey": self.hostname_key,
            "livenessProbe": self.liveness_probe,
            "readinessProbe": self.readiness_probe,
            "startupProbe": self.startup_probe,
            "lifecycle": self.lifecycle,
            "resources": {section: dict(values) for section, values in self.resources.items()} or None,
            "terminationGracePeriodSeconds": self.termination_grace_period_seconds,
            "volumes": None if self.volumes is None else list(self.volumes),
            "volumeMounts": None if self.volume_mounts is None else list(self.volume_mounts),
            "env": None if self.env is None else list(self.env),
            "mountOptions": list(self.mount_options) or None,
            "cacheDirs": None if self.cache_dirs is None else [cache.as_dict() for cache in self.cache_dirs],
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True)
class GlobalConfig:
    """The parsed `config.yaml`; the defaults are the Go driver's."""

    enable_node_selector: bool = False
    enable_native_sidecar: bool = False
    enable_set_quota: bool = True
    enable_controller_set_quota: bool = True
    enable_auto_remove_request_resources: bool = True
    enable_auto_abort_stuck_mount_pod: bool = True
    enable_lazy_umount_target: bool = True
    enable_kubelet_list_mount_pod: bool = False
    mount_pod_patch: tuple[MountPodPatch, ...] = ()


def _later(earlier: T | None, later: T | None) -> T | None:
    return earlier if later is None else later


def _selector_dict(selector: LabelSelector) -> JSONObject:
    return {
        "matchLabels": dict(selector.match_labels),
        "matchExpressions": [
            {"key": r.key, "operator": r.operator, "values": list(r.values)} for r in selector.match_expressions
        ],
    }


def option_name(item: str) -> str:
    """`cache-size=100` and `--cache-size=200` set the same option."""
    return item.partition("=")[0].strip().removeprefix("--")


def merge_mount_options(earlier: tuple[str, ...], later: tuple[str, ...]) -> tuple[str, ...]:
    """Merge raw `k=v` items by option name; a later item replaces an earlier one in place."""
    merged: dict[str, str] = {}
    for item in (*earlier, *later):
        merged[option_name(item)] = item
    return tuple(merged.values())


def select_patch(
    config: GlobalConfig,
    pvc_labels: Mapping[str, str] | None,
    pvc_name: str | None,
    storage_class: str | None,
    node_labels: Mapping[str, str] | None,
) -> MountPodPatch:
    """Merge, in order, every item that matches this PVC and node (later items win)."""
    merged = MountPodPatch()
    for item in config.mount_pod_patch:
        if item.matches(pvc_labels, pvc_name, storage_class, node_labels):
            merged = merged.merged_with(item)
    return merged


def fill_templates(patch: MountPodPatch, values: Mapping[str, str]) -> MountPodPatch:
    """Substitute `${NAME}` for the given template names in the patch's string values.

    Filled: annotation values, env, lifecycle, probes, volumes, volumeMounts, dnsConfig, mount options and
    cache dirs. Not filled: label values (their syntax forbids `$`), images and selectors. Other `${...}`
    (shell variables in a preStop script) are left alone. A value that could break out of a shell word
    is refused, and only when a template actually uses it.
    """
    unknown = sorted(set(values) - set(TEMPLATE_NAMES))
    if unknown:
        raise ValueError(f"unknown template names: {', '.join(unknown)}")
    text = json.dumps(patch.as_dict())
    for name, value in values.items():
        if "${" + name + "}" in text and not _TEMPLATE_SAFE.fullmatch(value):
            raise InvalidArgument(
                f"mountPodPatch template ${{{name}}} cannot be filled: its value has characters that are "
                "unsafe in commands and options (allowed: letters, digits and . _ / @ + -)"
            )

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            for name, replacement in values.items():
                value = value.replace("${" + name + "}", replacement)
            return value
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(fill(item) for item in value)
        return value

    def fill_cache(cache: CacheDir) -> CacheDir:
        return dataclasses.replace(cache, path=fill(cache.path), name=fill(cache.name))

    return dataclasses.replace(
        patch,
        annotations={key: fill(value) for key, value in patch.annotations.items()},
        dns_config=fill(patch.dns_config),
        liveness_probe=fill(patch.liveness_probe),
        readiness_probe=fill(patch.readiness_probe),
        startup_probe=fill(patch.startup_probe),
        lifecycle=fill(patch.lifecycle),
        volumes=fill(patch.volumes),
        volume_mounts=fill(patch.volume_mounts),
        env=fill(patch.env),
        mount_options=fill(patch.mount_options),
        cache_dirs=None if patch.cache_dirs is None else tuple(fill_cache(cache) for cache in patch.cache_dirs),
    )


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------


def parse_config(text: str) -> GlobalConfig:
    """Parse and validate `config.yaml`; an empty text is the default config."""
    try:
        loaded = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise ConfigError("(document)", f"is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return GlobalConfig()
    root = _mapping(loaded, "(document)")
    _only_keys(root, {*_SWITCHES, "mountPodPatch"}, "")
    switches = {attr: _bool(root[key], key) for key, attr in _SWITCHES.items() if root.get(key) is not None}
    items = _list(root.get("mountPodPatch"), "mountPodPatch")
    patches = tuple(_patch(item, f"mountPodPatch[{index}]") for index, item in enumerate(items))
    return GlobalConfig(**switches, mount_pod_patch=patches)


def _patch(raw: Any, where: str) -> MountPodPatch:
    item = _mapping(raw, where)
    _only_keys(item, {*_FIELDS, "eeMountImage"}, where)
    if item.get("eeMountImage") is not None:
        # Accepted so Go driver configs that pin both images keep parsing; only the CE client runs here.
        _image(item["eeMountImage"], f"{where}.eeMountImage")
    values = {
        _FIELDS[key][0]: _FIELDS[key][1](value, f"{where}.{key}")
        for key, value in item.items()
        if key in _FIELDS and value is not None
    }
    patch = MountPodPatch(**values)
    if patch.volumes is not None or patch.volume_mounts is not None:
        _check_pairs(patch.volumes or (), patch.volume_mounts or (), where)
    return patch


def _pvc_selector(raw: Any, where: str) -> PVCSelector:
    selector = _mapping(raw, where)
    _only_keys(selector, {"matchLabels", "matchExpressions", "matchStorageClassName", "matchName"}, where)
    storage_class = selector.get("matchStorageClassName")
    name = selector.get("matchName")
    return PVCSelector(
        labels=_label_selector(selector, where),
        storage_class_name=None if storage_class is None else _string(storage_class, f"{where}.matchStorageClassName"),
        name=None if name is None else _string(name, f"{where}.matchName"),
    )


def _node_selector(raw: Any, where: str) -> LabelSelector:
    """Either a LabelSelector (`matchLabels` / `matchExpressions`) or, as a shorthand, a plain label map."""
    selector = _mapping(raw, where)
    if {"matchLabels", "matchExpressions"} & set(selector):
        _only_keys(selector, {"matchLabels", "matchExpressions"}, where)
        return _label_selector(selector, where)
    return LabelSelector(match_labels=tuple(_labels(selector, where).items()))


def _label_selector(selector: Mapping[str, Any], where: str) -> LabelSelector:
    match_labels = _labels(selector.get("matchLabels") or {}, f"{where}.matchLabels")
    requirements = []
    for index, raw in enumerate(_list(selector.get("matchExpressions"), f"{where}.matchExpressions")):
        at = f"{where}.matchExpressions[{index}]"
        expression = _mapping(raw, at)
        _only_keys(expression, {"key", "operator", "values"}, at)
        key = _string(expression.get("key"), f"{at}.key")
        if not is_qualified_name(key):
            raise ConfigError(f"{at}.key", f"{key[:64]!r} is not a valid label key")
        operator = _choice(expression.get("operator"), OPERATORS, f"{at}.operator")
        values = tuple(
            _string(value, f"{at}.values[{i}]", empty=True)
            for i, value in enumerate(_list(expression.get("values"), f"{at}.values"))
        )
        if operator in ("In", "NotIn") and not values:
            raise ConfigError(f"{at}.values", f"must not be empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ConfigError(f"{at}.values", f"must be empty for operator {operator}")
        requirements.append(Requirement(key, operator, values))
    return LabelSelector(tuple(match_labels.items()), tuple(requirements))


def _image(raw: Any, where: str) -> str:
    image = _string(raw, where)
    if any(c.isspace() or ord(c) < 0x20 for c in image):
        raise ConfigError(where, "an image reference has no spaces or control characters")
    return image


def _pull_policy(raw: Any, where: str) -> str:
    return _choice(raw, PULL_POLICIES, where)


def _patch_labels(raw: Any, where: str) -> dict[str, str]:
    labels = _labels(raw, where)
    for key in labels:
        if key in RESERVED_LABELS:
            raise ConfigError(f"{where}.{key}", "is set by the driver (it finds and shares mount pods by it)")
    return labels


def _annotations(raw: Any, where: str) -> dict[str, str]:
    annotations = _string_map(raw, where)
    for key, value in annotations.items():
        at = f"{where}.{key}"
        if not is_qualified_name(key):
            raise ConfigError(at, "is not a valid annotation key ([prefix/]name)")
        if key in RESERVED_ANNOTATIONS or is_reference_key(key):
            raise ConfigError(at, "is set by the driver")
        if key == ANN_DELETE_DELAY:
            try:
                parse_duration(value, "delete delay")
            except InvalidArgument as error:
                raise ConfigError(at, error.message) from None
        if key == ANN_CLEAN_CACHE and value not in ("true", "false"):
            raise ConfigError(at, 'must be "true" or "false"')
    return annotations


def _dns_config(raw: Any, where: str) -> JSONObject:
    config = _mapping(raw, where)
    _only_keys(config, {"nameservers", "searches", "options"}, where)
    for key in ("nameservers", "searches"):
        for index, value in enumerate(_list(config.get(key), f"{where}.{key}")):
            _string(value, f"{where}.{key}[{index}]")
    for index, raw_option in enumerate(_list(config.get("options"), f"{where}.options")):
        at = f"{where}.options[{index}]"
        option = _mapping(raw_option, at)
        _only_keys(option, {"name", "value"}, at)
        _string(option.get("name"), f"{at}.name")
        if option.get("value") is not None:
            _string(option["value"], f"{at}.value", empty=True)
    return config


def _dns_policy(raw: Any, where: str) -> str:
    return _choice(raw, DNS_POLICIES, where)


def _hostname_key(raw: Any, where: str) -> str:
    return _choice(_string(raw, where).lower(), HOSTNAME_KEYS, where)


def _probe(raw: Any, where: str) -> JSONObject:
    probe = _mapping(raw, where)
    _only_keys(probe, _PROBE_HANDLERS | _PROBE_NUMBERS, where)
    _handler(probe, _PROBE_HANDLERS, where)
    for key in _PROBE_NUMBERS & set(probe):
        _non_negative_int(probe[key], f"{where}.{key}")
    return probe


def _lifecycle(raw: Any, where: str) -> JSONObject:
    lifecycle = _mapping(raw, where)
    _only_keys(lifecycle, {"postStart", "preStop"}, where)
    for key, value in lifecycle.items():
        handler = _mapping(value, f"{where}.{key}")
        _only_keys(handler, _LIFECYCLE_HANDLERS, f"{where}.{key}")
        _handler(handler, _LIFECYCLE_HANDLERS, f"{where}.{key}")
    return lifecycle


def _handler(obj: Mapping[str, Any], handlers: frozenset[str], where: str) -> None:
    present = sorted(handlers & set(obj))
    if len(present) != 1:
        raise ConfigError(where, "needs exactly one handler: " + ", ".join(sorted(handlers)))
    if present[0] == "exec":
        action = _mapping(obj["exec"], f"{where}.exec")
        _only_keys(action, {"command"}, f"{where}.exec")
        command = _list(action.get("command"), f"{where}.exec.command")
        if not command:
            raise ConfigError(f"{where}.exec.command", "must be a non-empty list of strings")
        for index, arg in enumerate(command):
            _string(arg, f"{where}.exec.command[{index}]", empty=True)
    else:
        _mapping(obj[present[0]], f"{where}.{present[0]}")


def _resources(raw: Any, where: str) -> dict[str, dict[str, str]]:
    """Values stay as written; each must parse as a quantity (`-1` / `0` keep their driver meaning)."""
    resources = _mapping(raw, where)
    _only_keys(resources, {"limits", "requests"}, where)
    parsed: dict[str, dict[str, str]] = {}
    for section, raw_values in resources.items():
        values = _mapping(raw_values or {}, f"{where}.{section}")
        parsed[section] = {}
        for name, raw_quantity in values.items():
            at = f"{where}.{section}.{name}"
            if not is_qualified_name(name):
                raise ConfigError(at, "is not a valid resource name")
            quantity = _quantity_text(raw_quantity, at)
            parsed[section][name] = quantity
    return parsed


def _volumes(raw: Any, where: str) -> tuple[JSONObject, ...]:
    volumes = []
    names: set[str] = set()
    for index, value in enumerate(_list(raw, where)):
        at = f"{where}[{index}]"
        volume = _mapping(value, at)
        name = _string(volume.get("name"), f"{at}.name")
        if not is_dns_label(name):
            raise ConfigError(f"{at}.name", f"{name[:64]!r} is not a valid volume name (lowercase DNS label)")
        if name.startswith(RESERVED_VOLUME_PREFIXES):
            raise ConfigError(
                f"{at}.name", f"{name!r} uses a prefix the driver reserves: " + ", ".join(RESERVED_VOLUME_PREFIXES)
            )
        if name in names:
            raise ConfigError(f"{at}.name", f"duplicate volume name {name!r}")
        names.add(name)
        sources = sorted(set(volume) - {"name"})
        if len(sources) != 1:
            raise ConfigError(at, "needs exactly one volume source (hostPath, secret, configMap, ...)")
        _mapping(volume[sources[0]], f"{at}.{sources[0]}")
        volumes.append(volume)
    return tuple(volumes)


def _volume_mounts(raw: Any, where: str) -> tuple[JSONObject, ...]:
    mounts = []
    paths: set[str] = set()
    for index, value in enumerate(_list(raw, where)):
        at = f"{where}[{index}]"
        mount = _mapping(value, at)
        _only_keys(mount, _MOUNT_KEYS, at)
        _string(mount.get("name"), f"{at}.name")
        path = _string(mount.get("mountPath"), f"{at}.mountPath")
        if not path.startswith("/"):
            raise ConfigError(f"{at}.mountPath", "must be an absolute path")
        if path.rstrip("/") == POD_MOUNT_BASE or path.startswith(POD_MOUNT_BASE + "/"):
            raise ConfigError(f"{at}.mountPath", f"must not be {POD_MOUNT_BASE} or under it (the mount points)")
        if posixpath.normpath(path) in paths:
            raise ConfigError(f"{at}.mountPath", f"duplicate mountPath {path[:128]!r}")
        paths.add(posixpath.normpath(path))
        if mount.get("readOnly") is not None:
            _bool(mount["readOnly"], f"{at}.readOnly")
        if mount.get("mountPropagation") is not None:
            _choice(mount["mountPropagation"], _PROPAGATIONS, f"{at}.mountPropagation")
        mounts.append(mount)
    return tuple(mounts)


def _check_pairs(volumes: tuple[JSONObject, ...], mounts: tuple[JSONObject, ...], where: str) -> None:
    """Every mount names a volume of the same item and every volume is mounted."""
    volume_names = [volume["name"] for volume in volumes]
    mounted = {mount["name"] for mount in mounts}
    for index, mount in enumerate(mounts):
        if mount["name"] not in volume_names:
            raise ConfigError(f"{where}.volumeMounts[{index}].name", f"{mount['name']!r} is not in this item's volumes")
    for index, name in enumerate(volume_names):
        if name not in mounted:
            raise ConfigError(f"{where}.volumes[{index}]", f"volume {name!r} has no volumeMounts entry in this item")


def _env(raw: Any, where: str) -> tuple[JSONObject, ...]:
    env = []
    names: set[str] = set()
    for index, value in enumerate(_list(raw, where)):
        at = f"{where}[{index}]"
        var = _mapping(value, at)
        _only_keys(var, {"name", "value", "valueFrom"}, at)
        name = _string(var.get("name"), f"{at}.name")
        if not ENV_NAME.fullmatch(name):
            raise ConfigError(f"{at}.name", f"{name[:64]!r} is not a valid variable name (letters, digits, '_')")
        if name in DRIVER_ENV_NAMES or name in CREDENTIAL_ENV_NAMES:
            raise ConfigError(f"{at}.name", f"{name} is set by the driver")
        if name in names:
            raise ConfigError(f"{at}.name", f"duplicate variable {name}")
        names.add(name)
        if "value" in var and "valueFrom" in var:
            raise ConfigError(at, "has both value and valueFrom")
        if var.get("value") is not None:
            _string(var["value"], f"{at}.value", empty=True, hint=" (quote numbers and booleans)")
        if "valueFrom" in var:
            _mapping(var["valueFrom"], f"{at}.valueFrom")
        env.append(var)
    return tuple(env)


def _mount_options(raw: Any, where: str) -> tuple[str, ...]:
    items = []
    for index, value in enumerate(_list(raw, where)):
        at = f"{where}[{index}]"
        item = _string(value, at)
        if "${MOUNT_POINT}" in item:
            raise ConfigError(at, "mount options cannot use ${MOUNT_POINT}")
        try:
            parse_mount_options([_sample(item)])
        except InvalidArgument as error:
            raise ConfigError(at, error.message) from None
        items.append(item)
    return merge_mount_options((), tuple(items))


def _cache_dirs(raw: Any, where: str) -> tuple[CacheDir, ...]:
    caches = []
    paths: set[str] = set()
    for index, value in enumerate(_list(raw, where)):
        at = f"{where}[{index}]"
        cache = _mapping(value, at)
        kind = _choice(cache.get("type"), CACHE_DIR_TYPES, f"{at}.type")
        _only_keys(cache, _CACHE_KEYS[kind], at)
        caches.append(_cache_dir(kind, cache, at, paths))
    if not caches:
        raise ConfigError(where, "must list at least one cache directory (omit it to use the cache-dir option)")
    return tuple(caches)


def _cache_dir(kind: str, cache: Mapping[str, Any], at: str, paths: set[str]) -> CacheDir:
    if kind == "HostPath":
        path = _string(cache.get("path"), f"{at}.path")
        if "${MOUNT_POINT}" in path or not is_cache_path(_sample(path)):
            raise ConfigError(
                f"{at}.path", f"must be an absolute path outside {POD_MOUNT_BASE} (no '..', no ${{MOUNT_POINT}})"
            )
        if path in paths:
            raise ConfigError(f"{at}.path", f"duplicate cache path {path}")
        paths.add(path)
        return CacheDir(kind, path=path)
    if kind == "PVC":
        name = _string(cache.get("name"), f"{at}.name")
        if not is_dns_subdomain(_sample(name)):
            raise ConfigError(f"{at}.name", "must be a PVC name in the mount pod namespace")
        return CacheDir(kind, name=name)
    if kind == "EmptyDir":
        medium = "" if cache.get("medium") is None else _choice(cache["medium"], ("", "Memory"), f"{at}.medium")
        size = "" if cache.get("sizeLimit") is None else _quantity_text(cache["sizeLimit"], f"{at}.sizeLimit")
        return CacheDir(kind, medium=medium, size_limit=size)
    storage = _quantity_text(cache.get("storage"), f"{at}.storage")
    storage_class = cache.get("storageClassName")
    modes = tuple(
        _choice(mode, ACCESS_MODES, f"{at}.accessModes[{i}]")
        for i, mode in enumerate(_list(cache.get("accessModes"), f"{at}.accessModes"))
    )
    return CacheDir(
        kind,
        storage=storage,
        storage_class_name="" if storage_class is None else _string(storage_class, f"{at}.storageClassName"),
        access_modes=modes or ("ReadWriteOnce",),
    )


def is_cache_path(path: str) -> bool:
    """A host cache directory: absolute, no `..`, and not where mount points live (it would shadow them)."""
    return (
        bool(re.fullmatch(r"/[\w.@+-][\w.@+/-]*", path))
        and ".." not in path.split("/")
        and not (path.rstrip("/") == POD_MOUNT_BASE or path.startswith(POD_MOUNT_BASE + "/"))
    )


def _sample(text: str) -> str:
    for name, value in _SAMPLE_VALUES.items():
        text = text.replace("${" + name + "}", value)
    return text


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a map, got {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(where, f"keys must be strings, got {_type_name(key)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(where, f"must be a list, got {_type_name(value)}")
    return value


def _only_keys(obj: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        at = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(at, "is not a supported field; supported: " + ", ".join(sorted(allowed)))


def _string(value: Any, where: str, *, empty: bool = False, hint: str = "") -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string, got {_type_name(value)}{hint}")
    if not empty and not value:
        raise ConfigError(where, "must not be empty")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"must be true or false, got {_type_name(value)}")
    return value


def _non_negative_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(where, "must be a non-negative integer")
    return value


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        shown = repr(value)[:64] if isinstance(value, str) else _type_name(value)
        raise ConfigError(where, f"{shown} is not one of " + ", ".join(repr(c) for c in choices))
    return str(value)


def _string_map(value: Any, where: str) -> dict[str, str]:
    mapping = _mapping(value, where)
    for key, item in mapping.items():
        _string(item, f"{where}.{key}", empty=True, hint=" (quote numbers and booleans)")
    return dict(mapping)


def _labels(value: Any, where: str) -> dict[str, str]:
    labels = _string_map(value, where)
    for key, item in labels.items():
        if not is_qualified_name(key):
            raise ConfigError(f"{where}.{key}", "is not a valid label key ([prefix/]name, name at most 63 chars)")
        if not is_label_value(item):
            raise ConfigError(
                f"{where}.{key}",
                f"{item[:64]!r} is not a valid label value (at most 63 letters, digits, '-', '_', '.'; "
                "templates are not filled in labels)",
            )
    return labels


def _quantity_text(value: Any, where: str) -> str:
    """YAML may read `2` or `0.5` as numbers; Kubernetes wants the quantity as written."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(where, f"must be a quantity such as 500m or 2Gi, got {_type_name(value)}")
    text = value if isinstance(value, str) else str(value)
    try:
        parse_quantity(text, "quantity")
    except InvalidArgument as error:
        raise ConfigError(where, error.message) from None
    return text


# Each ConfigMap field: the MountPodPatch attribute it sets and its parser.
_FIELDS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "pvcSelector": ("pvc_selector", _pvc_selector),
    "nodeSelector": ("node_selector", _node_selector),
    "ceMountImage": ("ce_mount_image", _image),
    "imagePullPolicy": ("image_pull_policy", _pull_policy),
    "labels": ("labels", _patch_labels),
    "annotations": ("annotations", _annotations),
    "hostNetwork": ("host_network", _bool),
    "hostPID": ("host_pid", _bool),
    "dnsConfig": ("dns_config", _dns_config),
    "dnsPolicy": ("dns_policy", _dns_policy),
    "hostnameKey": ("hostname_key", _hostname_key),
    "livenessProbe": ("liveness_probe", _probe),
    "readinessProbe": ("readiness_probe", _probe),
    "startupProbe": ("startup_probe", _probe),
    "lifecycle": ("lifecycle", _lifecycle),
    "resources": ("resources", _resources),
    "terminationGracePeriodSeconds": ("termination_grace_period_seconds", _non_negative_int),
    "volumes": ("volumes", _volumes),
    "volumeMounts": ("volume_mounts", _volume_mounts),
    "env": ("env", _env),
    "mountOptions": ("mount_options", _mount_options),
    "cacheDirs": ("cache_dirs", _cache_dirs),
}
