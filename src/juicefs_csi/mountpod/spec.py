"""The mount pod and its per-mount Secret, as plain Kubernetes JSON objects.

No shell anywhere: the Go driver runs `sh -c "<format> && exec mount.juicefs ..."` with every value
escaped by hand. Here `juicefs format` is an init container and `juicefs mount` the main container,
both argv lists from `juicefs/commands.py`, and every credential reaches them through
`env[].valueFrom.secretKeyRef` on the per-mount Secret, never through args or plain env values.

Resolution happens in two steps. `mount_pod_settings` decides everything that is the same for every
pod of a volume with these settings (image, resources, cache dirs, options, the selected patch) and
hashes it; `build_mount_pod` adds what differs per pod (node, random suffix, mount point, upgrade
uuid, reference annotations).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.juicefs.commands import client_env, format_command, mount_command
from juicefs_csi.mountpod.config import (
    CacheDir,
    GlobalConfig,
    JSONObject,
    MountPodPatch,
    fill_templates,
    is_cache_path,
    parse_quantity,
)
from juicefs_csi.mountpod.names import (
    ANN_CLEAN_CACHE,
    ANN_DELETE_DELAY,
    ANN_FS_UUID,
    ANN_UNIQUE_ID,
    APP_NAME_MOUNT,
    ATTR_CLEAN_CACHE,
    ATTR_CPU_LIMIT,
    ATTR_CPU_REQUEST,
    ATTR_MEMORY_LIMIT,
    ATTR_MEMORY_REQUEST,
    ATTR_MOUNT_IMAGE,
    CACHE_VOLUME_PREFIX,
    DEFAULT_CACHE_DIR,
    DRIVER_ENV_NAMES,
    ENV_CE_MOUNT_IMAGE,
    ENV_MOUNT_NAMESPACE,
    ENV_MOUNT_PATH,
    ENV_PREEMPTION_POLICY,
    ENV_PRIORITY_NAME,
    FINALIZER,
    FORMAT_CONTAINER,
    JFS_DIR_VOLUME,
    LABEL_APP_NAME,
    LABEL_HASH,
    LABEL_SECRET,
    LABEL_UPGRADE_UUID,
    LABEL_VOLUME_ID,
    METRICS_PORT,
    METRICS_PORT_NAME,
    MOUNT_CONTAINER,
    POD_MOUNT_BASE,
    dns_label,
    is_dns_label,
    is_dns_subdomain,
    is_label_value,
    label_value,
    mount_dir_name,
    mount_pod_name,
    mount_secret_name,
    reference_key,
    settings_hash,
)
from juicefs_csi.volume.options import MountOptions, parse_mount_options
from juicefs_csi.volume.settings import VolumeSettings

BINARY = "juicefs"
DEFAULT_NAMESPACE = "kube-system"
DEFAULT_MOUNT_ROOT = "/var/lib/juicefs/volume"
DEFAULT_CE_IMAGE = "juicedata/mount:ce-nightly"
DEFAULT_PRIORITY_CLASS = "system-node-critical"
DEFAULT_GRACE_SECONDS = 10
DEFAULT_LIMITS = {"cpu": "5000m", "memory": "5Gi"}
DEFAULT_REQUESTS = {"cpu": "1000m", "memory": "1Gi"}
PREEMPTION_POLICIES = ("Never", "PreemptLowerPriority")
HOSTNAME_LABEL = "kubernetes.io/hostname"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
METRICS_ADDRESS = f"0.0.0.0:{METRICS_PORT}"
# On the host network every mount pod of a node would fight for one port: let the client pick one.
HOST_NETWORK_METRICS_ADDRESS = "0.0.0.0:0"
# Set by the API server; a pod built from a live one must drop them to be created again.
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
)
# The only keys a PVC annotation may set, as in the Go driver: a PVC author must not pick the image of a
# privileged pod.
_RESOURCE_ATTRS = {
    ATTR_CPU_LIMIT: ("limits", "cpu"),
    ATTR_MEMORY_LIMIT: ("limits", "memory"),
    ATTR_CPU_REQUEST: ("requests", "cpu"),
    ATTR_MEMORY_REQUEST: ("requests", "memory"),
}


@dataclass(frozen=True)
class MountPodEnvironment:
    """The node plugin's environment: what every mount pod it creates shares."""

    namespace: str = DEFAULT_NAMESPACE
    mount_root: str = DEFAULT_MOUNT_ROOT
    ce_mount_image: str = DEFAULT_CE_IMAGE
    priority_class: str = DEFAULT_PRIORITY_CLASS
    preemption_policy: str | None = None


def parse_environment(env: Mapping[str, str]) -> MountPodEnvironment:
    """Read the `JUICEFS_MOUNT_*` variables; an empty value means the default, as in the Go driver."""
    namespace = env.get(ENV_MOUNT_NAMESPACE) or DEFAULT_NAMESPACE
    if not is_dns_label(namespace):
        raise InvalidArgument(f"{ENV_MOUNT_NAMESPACE} {namespace[:64]!r} is not a namespace name")
    root = env.get(ENV_MOUNT_PATH) or DEFAULT_MOUNT_ROOT
    if not root.startswith("/") or ".." in root.split("/"):
        raise InvalidArgument(f"{ENV_MOUNT_PATH} must be an absolute path without '..'")
    image = env.get(ENV_CE_MOUNT_IMAGE) or DEFAULT_CE_IMAGE
    _check_image(image, ENV_CE_MOUNT_IMAGE)
    priority = env.get(ENV_PRIORITY_NAME) or DEFAULT_PRIORITY_CLASS
    if not is_dns_subdomain(priority):
        raise InvalidArgument(f"{ENV_PRIORITY_NAME} {priority[:64]!r} is not a PriorityClass name")
    preemption = env.get(ENV_PREEMPTION_POLICY) or None
    if preemption is not None and preemption not in PREEMPTION_POLICIES:
        raise InvalidArgument(f"{ENV_PREEMPTION_POLICY} must be one of " + ", ".join(PREEMPTION_POLICIES))
    return MountPodEnvironment(namespace, posixpath.normpath(root), image, priority, preemption)


@dataclass(frozen=True)
class MountPodSettings:
    """Everything that decides a volume's mount pod except the per-pod parts; `hash` names it."""

    volume: VolumeSettings
    unique_id: str
    image: str
    resources: Mapping[str, Mapping[str, str]]
    cache_dirs: tuple[CacheDir, ...]
    patch: MountPodPatch
    environment: MountPodEnvironment
    node_selector: bool = False
    clean_cache: bool = False
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @cached_property
    def hash(self) -> str:
        """The `juicefs-hash` label; cached because the credential fingerprint is deliberately slow."""
        env = self.environment
        return settings_hash(
            self.volume,
            {
                "unique_id": self.unique_id,
                "image": self.image,
                "resources": self.resources,
                "cache_dirs": [cache.as_dict() for cache in self.cache_dirs],
                "patch": self.patch.as_dict(),
                "environment": [env.namespace, env.mount_root, env.priority_class, env.preemption_policy],
                "node_selector": self.node_selector,
                "clean_cache": self.clean_cache,
            },
        )


def mount_pod_settings(
    volume: VolumeSettings,
    *,
    volume_context: Mapping[str, str],
    patch: MountPodPatch,
    environment: MountPodEnvironment,
    config: GlobalConfig,
    pvc_annotations: Mapping[str, str] | None = None,
    unique_id: str | None = None,
) -> MountPodSettings:
    """Resolve a publish's settings for mount pod mode.

    `patch` is `select_patch(...)` for this PVC and node. Templates other than `${MOUNT_POINT}` are
    filled here, so the hash sees their values; patch mount options override the volume's by name.
    PVC annotations may set only the four resource keys.
    """
    filled = fill_templates(
        patch,
        {"VOLUME_ID": volume.volume_id, "VOLUME_NAME": volume.credentials.name, "SUB_PATH": volume.sub_path},
    )
    options = _with_patch_options(volume.options, filled.mount_options)
    cache_dirs, options = _cache_dirs(options, filled)
    _check_patch_mounts(filled, cache_dirs)
    attr_image = volume_context.get(ATTR_MOUNT_IMAGE, "").strip()
    if attr_image:
        _check_image(attr_image, f"volume attribute {ATTR_MOUNT_IMAGE!r}")
    image = attr_image or filled.ce_mount_image or environment.ce_mount_image
    resources, warnings = _resources(volume_context, pvc_annotations or {}, filled)
    volume = dataclasses.replace(volume, options=options)
    warnings += _warnings(volume, image, cache_dirs, filled)
    return MountPodSettings(
        volume=volume,
        unique_id=unique_id or volume.volume_id,
        image=image,
        resources=resources,
        cache_dirs=cache_dirs,
        patch=filled,
        environment=environment,
        node_selector=config.enable_node_selector,
        clean_cache=volume_context.get(ATTR_CLEAN_CACHE, "").strip().lower() == "true",
        warnings=tuple(warnings),
    )


def _check_image(image: str, what: str) -> None:
    if not image or any(c.isspace() or ord(c) < 0x20 for c in image):
        raise InvalidArgument(f"{what} is not an image reference (empty, or has spaces or control characters)")


def _with_patch_options(options: MountOptions, patch_items: tuple[str, ...]) -> MountOptions:
    """Re-parse the volume's options followed by the patch's, so a patch option replaces the same option."""
    if not patch_items:
        return options
    items = [key if value is None else f"{key}={value}" for key, value in (*options.flags, *options.fuse)]
    return parse_mount_options([*items, *patch_items])


def cache_mount_path(index: int, cache: CacheDir) -> str:
    """Where a cache directory appears in the mount container; host paths keep their own path."""
    if cache.type == "HostPath":
        return cache.path
    if cache.type == "PVC":
        return f"{DEFAULT_CACHE_DIR}-{index}"
    return f"{DEFAULT_CACHE_DIR}-{cache.type[0].lower()}{cache.type[1:]}-{index}"


def _cache_dirs(options: MountOptions, patch: MountPodPatch) -> tuple[tuple[CacheDir, ...], MountOptions]:
    """Patch `cacheDirs` replace the `cache-dir` option; otherwise each option path (default
    `/var/jfsCache`) is a host directory. `cache-dir` is then rewritten to the container paths.
    """
    if patch.cache_dirs is not None:
        caches = patch.cache_dirs
        value = ":".join(cache_mount_path(index, cache) for index, cache in enumerate(caches))
    else:
        value = options.get("cache-dir") or DEFAULT_CACHE_DIR
        paths = [path for path in dict.fromkeys(value.split(":")) if path != "memory"]
        if any("*" in path for path in paths):
            raise InvalidArgument(
                "mount option 'cache-dir': wildcards cannot be mapped to host volumes in mount pod mode; "
                "list the directories, or use mountPodPatch cacheDirs"
            )
        caches = tuple(CacheDir("HostPath", path=path) for path in paths)
    for cache in caches:
        if cache.type == "HostPath" and not is_cache_path(cache.path):
            raise InvalidArgument(
                f"cache directory {cache.path[:64]!r} must be an absolute path outside {POD_MOUNT_BASE}, without '..'"
            )
    return caches, options.with_flag("cache-dir", value)


def _check_patch_mounts(patch: MountPodPatch, caches: tuple[CacheDir, ...]) -> None:
    """The patch's volumeMounts against this volume's own mounts (mount points, cache directories).

    The ConfigMap was checked when it was read; what is left depends on the volume: its `cache-dir`
    option and filled templates. Two mounts at one path make a pod the API server refuses, and a
    mount at or under `/jfs` would hide the mount points, so such a publish is refused here, by name.
    """
    own = {
        cache_mount_path(index, cache): f"cache directory {cache_mount_path(index, cache)} (volume "
        f"{CACHE_VOLUME_PREFIX}{index})"
        for index, cache in enumerate(caches)
    }
    for index, mount in enumerate(patch.volume_mounts or ()):
        path = posixpath.normpath(str(mount.get("mountPath", "")))
        where = f"mountPodPatch volumeMounts[{index}] ({str(mount.get('name', ''))[:64]!r}) mountPath {path[:128]!r}"
        if path == POD_MOUNT_BASE or path.startswith(POD_MOUNT_BASE + "/"):
            raise InvalidArgument(
                f"{where} is at or under {POD_MOUNT_BASE}, where the mount pod keeps its mount points"
            )
        if path in own:
            raise InvalidArgument(
                f"{where} clashes with this volume's {own[path]}; mount it elsewhere, or set the cache "
                "with the cache-dir option or mountPodPatch cacheDirs"
            )


def _resources(
    volume_context: Mapping[str, str], pvc_annotations: Mapping[str, str], patch: MountPodPatch
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Go defaults, then volume attributes (a PVC annotation wins over them), then the patch.

    A limit <= 0 removes the limit and a request < 0 removes the request, as in the Go driver. A request
    above its limit (say a 512Mi limit under the 1Gi default request) is lowered to the limit, with a
    warning, rather than producing a pod the API server rejects.
    """
    sections = {"limits": dict(DEFAULT_LIMITS), "requests": dict(DEFAULT_REQUESTS)}
    for key, (section, resource) in _RESOURCE_ATTRS.items():
        annotated = (pvc_annotations.get(key) or "").strip()
        raw = annotated or (volume_context.get(key) or "").strip()
        if raw:
            what = f"PVC annotation {key!r}" if annotated else f"volume attribute {key!r}"
            _set_quantity(sections[section], section, resource, raw, what)
    for section, values in patch.resources.items():
        for resource, raw in values.items():
            _set_quantity(sections[section], section, resource, raw, f"mountPodPatch resources.{section}.{resource}")
    warnings = []
    limits, requests = sections["limits"], sections["requests"]
    for resource, request in list(requests.items()):
        limit = limits.get(resource)
        if limit is not None and parse_quantity(request, "request") > parse_quantity(limit, "limit"):
            requests[resource] = limit
            warnings.append(f"mount pod {resource} request {request} is above its limit {limit}; lowered to {limit}")
    return sections, warnings


def _set_quantity(target: dict[str, str], section: str, resource: str, raw: str, what: str) -> None:
    value = parse_quantity(raw, what)
    if (value <= 0) if section == "limits" else (value < 0):
        target.pop(resource, None)
    else:
        target[resource] = raw


def _warnings(volume: VolumeSettings, image: str, caches: tuple[CacheDir, ...], patch: MountPodPatch) -> list[str]:
    """Things worth a log line and an Event on the PV, but not worth refusing the mount."""
    warnings = []
    if volume.options.writeback:
        warnings.append(
            "mount option writeback: written data stays in the local cache until uploaded; it is lost if the "
            "cache or the mount pod goes away first (persist the cache and set juicefs/mount-delete-delay)"
        )
        for index, cache in enumerate(caches):
            if cache.type in ("EmptyDir", "Ephemeral"):
                warnings.append(
                    f"mount option writeback with cache directory {index} of type {cache.type}: it is deleted "
                    "with the mount pod, together with any write not yet uploaded"
                )
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    if tag.startswith("ee-"):
        warnings.append(f"mount image {image} looks like an enterprise-edition image; this driver runs the CE client")
    patch_env = {var["name"] for var in patch.env or ()}
    for name, _ in volume.credentials.envs:
        if name in DRIVER_ENV_NAMES:
            warnings.append(f"secret envs: {name} is set by the driver; the Secret's value is ignored")
        elif name in patch_env:
            warnings.append(f"secret envs: {name} is overridden by a mountPodPatch env entry")
    return warnings


# --------------------------------------------------------------------------
# the pod
# --------------------------------------------------------------------------


def container_mount_point(unique_id: str, suffix: str) -> str:
    """The client's mount point inside the pod: `/jfs/<uniqueId>-<suffix>`."""
    return posixpath.join(POD_MOUNT_BASE, mount_dir_name(unique_id, suffix))


def host_mount_point(environment: MountPodEnvironment, unique_id: str, suffix: str) -> str:
    """The same mount point seen from the node: under `JUICEFS_MOUNT_PATH`; binds to targets start here."""
    return posixpath.join(environment.mount_root, mount_dir_name(unique_id, suffix))


def build_mount_pod(
    settings: MountPodSettings,
    *,
    node: str,
    suffix: str,
    upgrade_uuid: str,
    targets: Iterable[str] = (),
    fs_uuid: str = "",
) -> JSONObject:
    """The mount pod for `node`; `targets` become reference annotations (usually the one being published)."""
    if not upgrade_uuid or not is_label_value(upgrade_uuid):
        raise ValueError("upgrade_uuid must be a non-empty label value (a UUID)")
    unique_id = settings.unique_id
    mount_point = container_mount_point(unique_id, suffix)
    patch = fill_templates(settings.patch, {"MOUNT_POINT": mount_point})
    host_network = bool(patch.host_network)
    credentials = settings.volume.credentials
    options = settings.volume.options
    mount = mount_command(
        BINARY,
        credentials,
        options,
        mount_point,
        HOST_NETWORK_METRICS_ADDRESS if host_network else METRICS_ADDRESS,
    )
    secret = mount_secret_name(unique_id)
    patch_env = list(patch.env or ())
    overridden = {var["name"] for var in patch_env}
    env: list[JSONObject] = [
        {"name": "JFS_FOREGROUND", "value": "1"},
        {"name": "JFS_INSIDE_CONTAINER", "value": "1"},
        *_secret_refs(mount.env, secret, overridden),
        *patch_env,
    ]
    volumes, mounts = _volumes(settings, patch, node)
    container: JSONObject = {
        "name": MOUNT_CONTAINER,
        "image": settings.image,
        "command": list(mount.argv),
        "env": env,
        "resources": _resource_dict(settings.resources),
        "securityContext": {"privileged": True, "runAsUser": 0},
        "volumeMounts": mounts,
    }
    if patch.image_pull_policy:
        container["imagePullPolicy"] = patch.image_pull_policy
    port = _metrics_port(options.get("metrics") or METRICS_ADDRESS)
    if not host_network and port:
        container["ports"] = [{"name": METRICS_PORT_NAME, "containerPort": port}]
    for key, value in (
        ("livenessProbe", patch.liveness_probe),
        ("readinessProbe", patch.readiness_probe),
        ("startupProbe", patch.startup_probe),
        ("lifecycle", patch.lifecycle),
    ):
        if value is not None:
            container[key] = value
    spec: JSONObject = {
        # Always, not the Go driver's OnFailure: with OnFailure a client that exits 0 (its mount point was
        # unmounted behind its back, or it stopped after a signal) leaves a Completed pod and dead binds until
        # a reconciler notices and builds a new pod. With Always the kubelet restarts the client in place, in
        # the same pod with the same mount point, so recovery is only "re-bind the targets"; `juicefs mount`
        # clears a broken FUSE mount at its mount point before mounting again. The pod ends only by deletion.
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": _first(patch.termination_grace_period_seconds, DEFAULT_GRACE_SECONDS),
        "priorityClassName": settings.environment.priority_class,
        # The client needs no API access and no service environment variables.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # It must outlive every app pod on the node that uses it, whatever taints the node gets.
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
        "volumes": volumes,
    }
    if settings.node_selector:
        spec["nodeSelector"] = {HOSTNAME_LABEL: node}
    else:
        spec["nodeName"] = node
    if settings.environment.preemption_policy:
        spec["preemptionPolicy"] = settings.environment.preemption_policy
    if credentials.formats:
        spec["initContainers"] = [_format_container(settings, secret, container)]
    _apply_pod_fields(spec, patch, unique_id)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": mount_pod_name(node, unique_id, suffix),
            "namespace": settings.environment.namespace,
            "labels": {
                **patch.labels,
                LABEL_APP_NAME: APP_NAME_MOUNT,
                LABEL_VOLUME_ID: label_value(unique_id),
                LABEL_HASH: settings.hash,
                LABEL_UPGRADE_UUID: upgrade_uuid,
            },
            "annotations": _annotations(settings, patch, targets, fs_uuid),
            "finalizers": [FINALIZER],
        },
        "spec": spec,
    }


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


def _secret_refs(env: Mapping[str, str], secret: str, skip: set[str]) -> list[JSONObject]:
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in env
        if name not in skip and name not in DRIVER_ENV_NAMES
    ]


def _format_container(settings: MountPodSettings, secret: str, mount_container: JSONObject) -> JSONObject:
    """`juicefs format` before the client starts; same image and resources, so the pod's requests do not grow."""
    command = format_command(BINARY, settings.volume.credentials)
    container: JSONObject = {
        "name": FORMAT_CONTAINER,
        "image": settings.image,
        "command": list(command.argv),
        "env": _secret_refs(command.env, secret, set()),
        "resources": copy.deepcopy(mount_container["resources"]),
    }
    if "imagePullPolicy" in mount_container:
        container["imagePullPolicy"] = mount_container["imagePullPolicy"]
    return container


def _volumes(settings: MountPodSettings, patch: MountPodPatch, node: str) -> tuple[list[JSONObject], list[JSONObject]]:
    """The mount root (Bidirectional, so the FUSE mount reaches the node), cache dirs, then patch volumes."""
    volumes: list[JSONObject] = [
        {
            "name": JFS_DIR_VOLUME,
            "hostPath": {"path": settings.environment.mount_root, "type": "DirectoryOrCreate"},
        }
    ]
    mounts: list[JSONObject] = [
        {"name": JFS_DIR_VOLUME, "mountPath": POD_MOUNT_BASE, "mountPropagation": "Bidirectional"}
    ]
    for index, cache in enumerate(settings.cache_dirs):
        name = f"{CACHE_VOLUME_PREFIX}{index}"
        volumes.append({"name": name, **_cache_source(cache, node, settings.node_selector)})
        mounts.append({"name": name, "mountPath": cache_mount_path(index, cache)})
    volumes += patch.volumes or ()
    mounts += patch.volume_mounts or ()
    return volumes, mounts


def _cache_source(cache: CacheDir, node: str, node_selector: bool) -> JSONObject:
    if cache.type == "HostPath":
        return {"hostPath": {"path": cache.path, "type": "DirectoryOrCreate"}}
    if cache.type == "PVC":
        return {"persistentVolumeClaim": {"claimName": cache.name}}
    if cache.type == "EmptyDir":
        empty: JSONObject = {}
        if cache.medium:
            empty["medium"] = cache.medium
        if cache.size_limit:
            empty["sizeLimit"] = cache.size_limit
        return {"emptyDir": empty}
    claim: JSONObject = {
        "accessModes": list(cache.access_modes),
        "resources": {"requests": {"storage": cache.storage}},
    }
    if cache.storage_class_name:
        claim["storageClassName"] = cache.storage_class_name
    template: JSONObject = {"spec": claim}
    if not node_selector:
        # `nodeName` bypasses the scheduler, which would otherwise pick the node for a WaitForFirstConsumer claim.
        template["metadata"] = {"annotations": {SELECTED_NODE_ANNOTATION: node}}
    return {"ephemeral": {"volumeClaimTemplate": template}}


def _apply_pod_fields(spec: JSONObject, patch: MountPodPatch, unique_id: str) -> None:
    if patch.host_network is not None:
        spec["hostNetwork"] = patch.host_network
    if patch.host_pid is not None:
        spec["hostPID"] = patch.host_pid
    if patch.dns_policy:
        spec["dnsPolicy"] = patch.dns_policy
    elif patch.host_network:
        # Keep cluster DNS (a Redis Service name as metadata engine) on the host network.
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if patch.dns_config is not None:
        spec["dnsConfig"] = patch.dns_config
    if not patch.host_network and patch.hostname_key != "podname":
        # The Go driver's default: the hostname names the volume (it shows in JuiceFS sessions).
        spec["hostname"] = dns_label(unique_id)


def _annotations(
    settings: MountPodSettings, patch: MountPodPatch, targets: Iterable[str], fs_uuid: str
) -> dict[str, str]:
    annotations = {**patch.annotations, ANN_UNIQUE_ID: settings.unique_id}
    if fs_uuid:
        annotations[ANN_FS_UUID] = fs_uuid
    if settings.volume.delete_delay > 0:
        annotations[ANN_DELETE_DELAY] = go_duration(settings.volume.delete_delay)
    if settings.clean_cache:
        annotations[ANN_CLEAN_CACHE] = "true"
    for target in targets:
        annotations[reference_key(target)] = target
    return annotations


def go_duration(seconds: float) -> str:
    """A duration Go's time.ParseDuration reads (the delete-delay annotation is shared with Go tools)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _metrics_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _resource_dict(resources: Mapping[str, Mapping[str, str]]) -> JSONObject:
    return {section: dict(values) for section, values in resources.items() if values}


# --------------------------------------------------------------------------
# the Secret, and the recreate-without-requests variant
# --------------------------------------------------------------------------


def build_mount_secret(settings: MountPodSettings, *, pv_name: str = "", pv_uid: str = "") -> JSONObject:
    """`juicefs-<uniqueId>-secret`: one key per variable the pod takes from it; owned by the PV when given,
    so it goes away with the PV.
    """
    credentials = settings.volume.credentials
    env = format_command(BINARY, credentials).env if credentials.formats else client_env(credentials)
    data = {
        name: base64.b64encode(value.encode()).decode() for name, value in env.items() if name not in DRIVER_ENV_NAMES
    }
    metadata: JSONObject = {
        "name": mount_secret_name(settings.unique_id),
        "namespace": settings.environment.namespace,
        "labels": {LABEL_SECRET: "true"},
    }
    if pv_uid:
        if not pv_name:
            raise ValueError("an owner reference needs the PV's name as well as its uid")
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "PersistentVolume", "name": pv_name, "uid": pv_uid}]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata, "data": data}


def build_resources_without_requests(pod: Mapping[str, Any]) -> JSONObject:
    """A copy of `pod` to create again after it failed for lack of node resources (Go row M9).

    Requests are set to zero rather than removed: a container with a limit and no request gets the
    limit as its request, which would make the pod even harder to place. Server-set fields and the
    status are dropped so the result can be created.
    """
    new: JSONObject = copy.deepcopy(dict(pod))
    new.pop("status", None)
    metadata = new.get("metadata", {})
    for key in SERVER_FIELDS:
        metadata.pop(key, None)
    spec = new.get("spec", {})
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        resources = container.get("resources") or {}
        names = sorted({*resources.get("requests", {}), *resources.get("limits", {})})
        if names:
            container["resources"] = {**resources, "requests": dict.fromkeys(names, "0")}
    return new
