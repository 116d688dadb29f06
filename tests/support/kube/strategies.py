"""Per-kind create/update strategies: defaulting, admission and validation.

These mirror what kube-apiserver (with envtest's default admission plugins)
does to an object before it is stored, limited to what a controller can
observe: defaulted fields, reset status, rejected invalid or immutable updates.
Strategies mutate the object they are given; callers pass objects they own.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import re
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ApiError, FieldError, bad_request, forbidden
from .resources import Obj, ResourceType
from .selectors import label_value_problem, qualified_name_problem

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NAME_RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    "subdomain": (
        _SUBDOMAIN,
        253,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
        "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
        "'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ),
    "label": (
        _LABEL,
        63,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
        "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    ),
    "dns1035": (
        _DNS1035,
        63,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
        "start with an alphabetic character, and end with an alphanumeric character (e.g. "
        "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    ),
}
SERVICE_CIDR = ipaddress.ip_network("10.0.0.0/24")  # envtest's --service-cluster-ip-range
SYSTEM_PRIORITY_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


class Context(Protocol):
    """What strategies may read from the store (admission look-ups, allocations)."""

    def objects(self, qualified: str) -> list[Obj]: ...

    def lookup(self, qualified: str, namespace: str, name: str) -> Obj | None: ...


def name_errors(rt: ResourceType, name: str, field: str = "metadata.name") -> list[FieldError]:
    pattern, limit, message = _NAME_RULES[rt.name_format]
    errors = []
    if len(name) > limit:
        errors.append(FieldError("Invalid", field, f"must be no more than {limit} characters", name))
    if not pattern.match(name):
        errors.append(FieldError("Invalid", field, message, name))
    return errors


def metadata_errors(meta: Obj) -> list[FieldError]:
    """ObjectMeta validation shared by every kind (labels, annotations, finalizers, owners)."""
    errors: list[FieldError] = []
    for key, value in (meta.get("labels") or {}).items():
        problem = qualified_name_problem(key)
        if problem:
            errors.append(FieldError("Invalid", "metadata.labels", problem, key))
        problem = label_value_problem(value) if isinstance(value, str) else "must be a string"
        if problem:
            errors.append(FieldError("Invalid", "metadata.labels", problem, value))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        problem = qualified_name_problem(key.lower())
        if problem:
            errors.append(FieldError("Invalid", "metadata.annotations", problem, key))
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 256 * 1024:
        errors.append(FieldError("TooLong", "metadata.annotations", "may not be more than 262144 bytes"))
    for i, fin in enumerate(meta.get("finalizers") or []):
        problem = qualified_name_problem(fin) if isinstance(fin, str) else "must be a string"
        if problem:
            errors.append(FieldError("Invalid", f"metadata.finalizers[{i}]", problem, fin))
    controllers = 0
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for required in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(required):
                errors.append(
                    FieldError("Required", f"metadata.ownerReferences[{i}].{required}", f"{required} must not be empty")
                )
        controllers += bool(ref.get("controller"))
    if controllers > 1:
        errors.append(
            FieldError(
                "Invalid", "metadata.ownerReferences", "Only one reference can have Controller set to true", "..."
            )
        )
    return errors


# --- pods -----------------------------------------------------------------


def _default_container(container: Obj) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
    container.setdefault("imagePullPolicy", "Always" if tagless or image.endswith(":latest") else "IfNotPresent")
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for res, qty in limits.items():
            requests.setdefault(res, qty)
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            field_ref.setdefault("apiVersion", "v1")


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for name in ("containers", "initContainers"):
        for container in spec.get(name) or []:
            _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("secret", "configMap", "projected", "downwardAPI"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)
        if isinstance(volume.get("hostPath"), dict):
            volume["hostPath"].setdefault("type", "")


def _pod_spec_errors(spec: Obj, prefix: str, allowed_restart: tuple[str, ...]) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(FieldError("Required", f"{prefix}.containers"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            name = str(container.get("name", ""))
            path = f"{prefix}.{group}[{i}]"
            if not name:
                errors.append(FieldError("Required", f"{path}.name"))
            elif not _LABEL.match(name) or len(name) > 63:
                errors.append(FieldError("Invalid", f"{path}.name", _NAME_RULES["label"][2], name))
            elif name in seen:
                errors.append(FieldError("Duplicate", f"{path}.name", value=name))
            seen.add(name)
            if not container.get("image"):
                errors.append(FieldError("Required", f"{path}.image"))
    volumes: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        name = str(volume.get("name", ""))
        if not name:
            errors.append(FieldError("Required", f"{prefix}.volumes[{i}].name"))
        elif name in volumes:
            errors.append(FieldError("Duplicate", f"{prefix}.volumes[{i}].name", value=name))
        volumes.add(name)
    restart = spec.get("restartPolicy")
    if restart not in allowed_restart:
        supported = ", ".join(f'"{r}"' for r in allowed_restart)
        if restart is None:
            errors.append(FieldError("Required", f"{prefix}.restartPolicy", f"valid values: {supported}"))
        else:
            errors.append(
                FieldError("NotSupported", f"{prefix}.restartPolicy", f"supported values: {supported}", restart)
            )
    return errors


def _qos(spec: Obj) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    requests_seen = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        requests_seen = requests_seen or bool(requests) or bool(limits)
        for res in ("cpu", "memory"):
            if res not in limits or requests.get(res, limits[res]) != limits[res]:
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _admit_pod(rt: ResourceType, pod: Obj, ctx: Context) -> None:
    """Priority and DefaultTolerationSeconds admission, as enabled on envtest's API server."""
    spec = pod.setdefault("spec", {})
    class_name = spec.get("priorityClassName")
    if class_name:
        pclass = ctx.lookup("priorityclasses.scheduling.k8s.io", "", class_name)
        if pclass is None:
            raise forbidden(rt, pod["metadata"].get("name", ""), f"no PriorityClass with name {class_name} was found")
        spec["priority"] = pclass.get("value", 0)
        spec["preemptionPolicy"] = pclass.get("preemptionPolicy", "PreemptLowerPriority")
    else:
        default = next((p for p in ctx.objects("priorityclasses.scheduling.k8s.io") if p.get("globalDefault")), None)
        spec.setdefault("priority", default.get("value", 0) if default else 0)
        if default:
            spec["priorityClassName"] = default["metadata"]["name"]
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        tolerated = any(
            (t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"))
            and t.get("effect") in (None, "", "NoExecute")
            for t in tolerations
        )
        if not tolerated:
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})


def _create_pod(rt: ResourceType, pod: Obj, ctx: Context) -> list[FieldError]:
    spec = pod.setdefault("spec", {})
    _default_pod_spec(spec)
    _admit_pod(rt, pod, ctx)
    pod["status"] = {"phase": "Pending", "qosClass": _qos(spec)}
    return _pod_spec_errors(spec, "spec", ("Always", "OnFailure", "Never"))


_POD_MUTABLE_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _update_pod(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    spec = new.setdefault("spec", {})
    _default_pod_spec(spec)
    for key in ("priority", "preemptionPolicy", "tolerations", "priorityClassName"):
        if key not in spec and key in old["spec"]:
            spec[key] = old["spec"][key]
    comparable = copy.deepcopy(old["spec"])
    for group in ("containers", "initContainers"):
        for mine, theirs in zip(comparable.get(group) or [], spec.get(group) or [], strict=False):
            mine["image"] = theirs.get("image")
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        comparable.pop(key, None)
    rest = {
        k: v
        for k, v in spec.items()
        if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
    }
    if rest != comparable:
        return [FieldError("Forbidden", "spec", _POD_MUTABLE_MSG)]
    return []


# --- configuration objects --------------------------------------------------


def _decode_b64(obj: Obj, field: str, kind: str) -> None:
    for key, value in (obj.get(field) or {}).items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(
                f'{kind} in version "v1" cannot be handled as a {kind}: illegal base64 data at key {key!r}: {exc}'
            ) from exc


def _config_errors(obj: Obj, fields: tuple[str, ...]) -> list[FieldError]:
    errors = []
    for field in fields:
        for key in obj.get(field) or {}:
            if not _CONFIG_KEY.match(key) or len(key) > 253:
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{field}[{key}]",
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                        key,
                    )
                )
    return errors


def _immutable_config(new: Obj, old: Obj, fields: tuple[str, ...]) -> list[FieldError]:
    if not old.get("immutable"):
        return []
    errors = []
    if not new.get("immutable"):
        errors.append(FieldError("Forbidden", "immutable", "field is immutable when `immutable` is set"))
    for field in fields:
        if (new.get(field) or {}) != (old.get(field) or {}):
            errors.append(FieldError("Forbidden", field, "field is immutable when `immutable` is set"))
    return errors


def _create_secret(rt: ResourceType, secret: Obj, ctx: Context) -> list[FieldError]:
    _decode_b64(secret, "data", "Secret")
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        data = dict(secret.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data
    secret.setdefault("type", "Opaque")
    return _config_errors(secret, ("data",))


def _update_secret(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    errors = _create_secret(rt, new, ctx)
    if new.get("type") != old.get("type"):
        errors.append(FieldError("Invalid", "type", "field is immutable", new.get("type")))
    return errors + _immutable_config(new, old, ("data",))


def _create_configmap(rt: ResourceType, cm: Obj, ctx: Context) -> list[FieldError]:
    _decode_b64(cm, "binaryData", "ConfigMap")
    return _config_errors(cm, ("data", "binaryData"))


def _update_configmap(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    return _create_configmap(rt, new, ctx) + _immutable_config(new, old, ("data", "binaryData"))


# --- namespaces, services ----------------------------------------------------


def _create_namespace(rt: ResourceType, ns: Obj, ctx: Context) -> list[FieldError]:
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns["status"] = {"phase": "Active"}
    _label_namespace(ns)
    return []


def _label_namespace(ns: Obj) -> None:
    meta = ns["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}


def _update_namespace(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    new["spec"] = old.get("spec", {})  # spec.finalizers change only through /finalize
    _label_namespace(new)
    return []


def _allocate_ip(ctx: Context) -> str:
    used = {s.get("spec", {}).get("clusterIP") for s in ctx.objects("services")}
    for host in list(SERVICE_CIDR.hosts())[1:]:
        if str(host) not in used:
            return str(host)
    raise ApiError(500, "Internal error occurred: failed to allocate a serviceIP: range is full")


def _allocate_node_port(ctx: Context, taken: set[int]) -> int:
    used = {p.get("nodePort") for s in ctx.objects("services") for p in s.get("spec", {}).get("ports") or []}
    for port in range(30000, 32768):
        if port not in used and port not in taken:
            return port
    raise ApiError(500, "Internal error occurred: failed to allocate a nodePort: range is full")


def _default_service(spec: Obj) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _service_errors(spec: Obj) -> list[FieldError]:
    errors = []
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
        errors.append(FieldError("Required", "spec.ports"))
    for i, port in enumerate(ports):
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            errors.append(
                FieldError("Invalid", f"spec.ports[{i}].port", "must be between 1 and 65535, inclusive", number)
            )
        if len(ports) > 1 and not port.get("name"):
            errors.append(FieldError("Required", f"spec.ports[{i}].name"))
    if spec.get("type") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(
            FieldError(
                "NotSupported",
                "spec.type",
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
                spec.get("type"),
            )
        )
    return errors


def _create_service(rt: ResourceType, svc: Obj, ctx: Context) -> list[FieldError]:
    spec = svc.setdefault("spec", {})
    _default_service(spec)
    svc["status"] = {"loadBalancer": {}}
    errors = _service_errors(spec)
    if errors or spec["type"] == "ExternalName":
        return errors
    ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [""])[0]
    if not ip:
        ip = _allocate_ip(ctx)
    elif ip != "None":
        try:
            inside = ipaddress.ip_address(ip) in SERVICE_CIDR
        except ValueError:
            inside = False
        if not inside:
            return [
                FieldError(
                    "Invalid",
                    "spec.clusterIPs",
                    f"failed to allocate IP {ip}: the provided IP "
                    f"({ip}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}",
                    [ip],
                )
            ]
        if any(s.get("spec", {}).get("clusterIP") == ip for s in ctx.objects("services")):
            return [
                FieldError(
                    "Invalid", "spec.clusterIPs", f"failed to allocate IP {ip}: provided IP is already allocated", [ip]
                )
            ]
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        taken: set[int] = set()
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                port["nodePort"] = _allocate_node_port(ctx, taken)
            taken.add(port["nodePort"])
    return []


def _update_service(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    spec, old_spec = new.setdefault("spec", {}), old.get("spec", {})
    _default_service(spec)
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        if not spec.get(key) and key in old_spec:
            spec[key] = old_spec[key]
    for port in spec.get("ports") or []:
        if not port.get("nodePort"):
            match = next((p for p in old_spec.get("ports") or [] if p.get("port") == port.get("port")), None)
            if match and match.get("nodePort") and spec["type"] in ("NodePort", "LoadBalancer"):
                port["nodePort"] = match["nodePort"]
    errors = _service_errors(spec)
    if spec.get("clusterIP") != old_spec.get("clusterIP") and old_spec.get("type") != "ExternalName":
        errors.append(FieldError("Invalid", "spec.clusterIPs[0]", "may not change once set", spec.get("clusterIP")))
    return errors


# --- storage -------------------------------------------------------------------


def _create_pvc(rt: ResourceType, pvc: Obj, ctx: Context) -> list[FieldError]:
    spec = pvc.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    if "storageClassName" not in spec:  # DefaultStorageClass admission; "" opts out
        defaults = [
            sc
            for sc in ctx.objects("storageclasses.storage.k8s.io")
            if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true"
        ]
        if defaults:
            newest = max(defaults, key=lambda sc: (sc["metadata"]["creationTimestamp"], sc["metadata"]["name"]))
            spec["storageClassName"] = newest["metadata"]["name"]
    pvc["status"] = {"phase": "Pending"}
    errors = []
    if not spec.get("accessModes"):
        errors.append(FieldError("Required", "spec.accessModes", "at least 1 access mode is required"))
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        errors.append(FieldError("Required", "spec.resources[storage]"))
    return errors


def _update_pvc(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    spec, old_spec = new.setdefault("spec", {}), old.get("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    if "storageClassName" not in spec and "storageClassName" in old_spec:
        spec["storageClassName"] = old_spec["storageClassName"]
    mine = {k: v for k, v in spec.items() if k not in ("resources", "volumeAttributesClassName")}
    theirs = {k: v for k, v in old_spec.items() if k not in ("resources", "volumeAttributesClassName")}
    if not old_spec.get("volumeName"):
        mine.pop("volumeName", None)
        theirs.pop("volumeName", None)
    requests_changed = (spec.get("resources") or {}).get("requests") != (old_spec.get("resources") or {}).get(
        "requests"
    )
    if mine != theirs or (requests_changed and not old_spec.get("volumeName")):
        return [
            FieldError(
                "Forbidden",
                "spec",
                "spec is immutable after creation except resources.requests "
                "and volumeAttributesClassName for bound claims",
            )
        ]
    return []


_PV_NON_SOURCE = frozenset(
    (
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeMode",
        "volumeAttributesClassName",
    )
)


def _create_pv(rt: ResourceType, pv: Obj, ctx: Context) -> list[FieldError]:
    spec = pv.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    pv["status"] = {"phase": "Pending"}
    errors = []
    if not spec.get("accessModes"):
        errors.append(FieldError("Required", "spec.accessModes"))
    if not (spec.get("capacity") or {}).get("storage"):
        errors.append(FieldError("Required", "spec.capacity"))
    if not set(spec) - _PV_NON_SOURCE:
        errors.append(FieldError("Required", "spec", "must specify a volume type"))
    return errors


def _update_pv(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    spec, old_spec = new.setdefault("spec", {}), old.get("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    source = {k: v for k, v in spec.items() if k not in _PV_NON_SOURCE}
    if source != {k: v for k, v in old_spec.items() if k not in _PV_NON_SOURCE}:
        return [
            FieldError(
                "Forbidden", "spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation"
            )
        ]
    if spec.get("volumeMode") != old_spec.get("volumeMode"):
        return [FieldError("Invalid", "spec.volumeMode", "field is immutable", spec.get("volumeMode"))]
    return []


def _create_storageclass(rt: ResourceType, sc: Obj, ctx: Context) -> list[FieldError]:
    sc.setdefault("reclaimPolicy", "Delete")
    sc.setdefault("volumeBindingMode", "Immediate")
    return [] if sc.get("provisioner") else [FieldError("Required", "provisioner")]


def _update_storageclass(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    errors = _create_storageclass(rt, new, ctx)
    for field in ("parameters", "provisioner", "reclaimPolicy"):
        if new.get(field) != old.get(field):
            errors.append(FieldError("Forbidden", field, f"updates to {field} are forbidden."))
    if new.get("volumeBindingMode") != old.get("volumeBindingMode"):
        errors.append(FieldError("Invalid", "volumeBindingMode", "field is immutable", new.get("volumeBindingMode")))
    return errors


def _default_csidriver(driver: Obj) -> None:
    spec = driver.setdefault("spec", {})
    spec.setdefault("attachRequired", True)
    spec.setdefault("podInfoOnMount", False)
    spec.setdefault("requiresRepublish", False)
    spec.setdefault("storageCapacity", False)
    spec.setdefault("fsGroupPolicy", "ReadWriteOnceWithFSType")
    spec.setdefault("volumeLifecycleModes", ["Persistent"])
    spec.setdefault("seLinuxMount", False)


def _create_csidriver(rt: ResourceType, driver: Obj, ctx: Context) -> list[FieldError]:
    _default_csidriver(driver)
    name = driver["metadata"].get("name", "")
    return [FieldError("TooLong", "metadata.name", "must be no more than 63 characters")] if len(name) > 63 else []


def _update_csidriver(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    _default_csidriver(new)
    return [
        FieldError("Invalid", f"spec.{f}", "field is immutable", new["spec"].get(f))
        for f in ("attachRequired", "volumeLifecycleModes")
        if new["spec"].get(f) != old["spec"].get(f)
    ]


# --- jobs, scheduling, events, webhooks -------------------------------------------


def _create_job(rt: ResourceType, job: Obj, ctx: Context) -> list[FieldError]:
    spec = job.setdefault("spec", {})
    for key, value in (
        ("parallelism", 1),
        ("completions", 1),
        ("backoffLimit", 6),
        ("completionMode", "NonIndexed"),
        ("suspend", False),
        ("podReplacementPolicy", "TerminatingOrFailed"),
    ):
        spec.setdefault(key, value)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    if not spec.get("manualSelector"):
        meta = job["metadata"]
        generated = {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "job-name": meta["name"],
        }
        template["metadata"]["labels"] = {**(template["metadata"].get("labels") or {}), **generated}
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
    pod_spec = template.setdefault("spec", {})
    restart_given = "restartPolicy" in pod_spec
    _default_pod_spec(pod_spec)
    if not restart_given:
        pod_spec.pop("restartPolicy")
    job["status"] = {}
    return _pod_spec_errors(pod_spec, "spec.template.spec", ("OnFailure", "Never"))


def _update_job(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    spec, old_spec = new.setdefault("spec", {}), old["spec"]
    for key, value in old_spec.items():
        if key in (
            "parallelism",
            "completions",
            "backoffLimit",
            "completionMode",
            "suspend",
            "podReplacementPolicy",
            "selector",
        ):
            spec.setdefault(key, value)
    _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    errors = []
    for field in ("selector", "template", "completions", "completionMode"):
        if spec.get(field) != old_spec.get(field):
            errors.append(FieldError("Invalid", f"spec.{field}", "field is immutable", spec.get(field)))
    return errors


def _create_priorityclass(rt: ResourceType, pc: Obj, ctx: Context) -> list[FieldError]:
    pc.setdefault("preemptionPolicy", "PreemptLowerPriority")
    errors = []
    name = pc["metadata"].get("name", "")
    if name.startswith("system-") and name not in SYSTEM_PRIORITY_CLASSES:
        errors.append(
            FieldError("Invalid", "metadata.name", "priority class names with 'system-' prefix are reserved", name)
        )
    if not isinstance(pc.get("value"), int):
        errors.append(FieldError("Required", "value"))
    return errors


def _update_priorityclass(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    new.setdefault("preemptionPolicy", "PreemptLowerPriority")
    errors = []
    if new.get("value") != old.get("value"):
        errors.append(FieldError("Forbidden", "value", "may not be changed in an update."))
    if new.get("preemptionPolicy") != old.get("preemptionPolicy"):
        errors.append(FieldError("Invalid", "preemptionPolicy", "field is immutable", new.get("preemptionPolicy")))
    return errors


def _create_event(rt: ResourceType, event: Obj, ctx: Context) -> list[FieldError]:
    """events.k8s.io/v1 requires the new-style fields; core/v1 keeps its lenient rules."""
    if rt.group != "events.k8s.io":
        return []
    errors = [
        FieldError("Required", name)
        for core, name in (
            ("eventTime", "eventTime"),
            ("reportingComponent", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
        )
        if not event.get(core)
    ]
    if event.get("type") not in ("Normal", "Warning"):
        errors.append(FieldError("Invalid", "type", "has invalid value", event.get("type")))
    return errors


def _default_webhooks(mwc: Obj) -> list[FieldError]:
    errors = []
    for i, hook in enumerate(mwc.get("webhooks") or []):
        for key, value in (
            ("failurePolicy", "Fail"),
            ("matchPolicy", "Equivalent"),
            ("namespaceSelector", {}),
            ("objectSelector", {}),
            ("timeoutSeconds", 10),
            ("reinvocationPolicy", "Never"),
        ):
            hook.setdefault(key, value)
        for rule in hook.get("rules") or []:
            rule.setdefault("scope", "*")
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict):
            service.setdefault("port", 443)
        name = str(hook.get("name", ""))
        if name.count(".") < 2 or not _SUBDOMAIN.match(name):
            errors.append(
                FieldError(
                    "Invalid",
                    f"webhooks[{i}].name",
                    "should be a domain with at least three segments separated by dots",
                    name,
                )
            )
        for required in ("sideEffects", "admissionReviewVersions"):
            if not hook.get(required):
                errors.append(FieldError("Required", f"webhooks[{i}].{required}"))
    return errors


Create = Callable[[ResourceType, Obj, Context], list[FieldError]]
Update = Callable[[ResourceType, Obj, Obj, Context], list[FieldError]]

_CREATE: dict[str, Create] = {
    "pods": _create_pod,
    "secrets": _create_secret,
    "configmaps": _create_configmap,
    "namespaces": _create_namespace,
    "services": _create_service,
    "persistentvolumeclaims": _create_pvc,
    "persistentvolumes": _create_pv,
    "storageclasses.storage.k8s.io": _create_storageclass,
    "csidrivers.storage.k8s.io": _create_csidriver,
    "jobs.batch": _create_job,
    "priorityclasses.scheduling.k8s.io": _create_priorityclass,
    "events": _create_event,
    "events.events.k8s.io": _create_event,
    "mutatingwebhookconfigurations.admissionregistration.k8s.io": lambda rt, o, c: _default_webhooks(o),
}
_UPDATE: dict[str, Update] = {
    "pods": _update_pod,
    "secrets": _update_secret,
    "configmaps": _update_configmap,
    "namespaces": _update_namespace,
    "services": _update_service,
    "persistentvolumeclaims": _update_pvc,
    "persistentvolumes": _update_pv,
    "storageclasses.storage.k8s.io": _update_storageclass,
    "csidrivers.storage.k8s.io": _update_csidriver,
    "jobs.batch": _update_job,
    "priorityclasses.scheduling.k8s.io": _update_priorityclass,
    "mutatingwebhookconfigurations.admissionregistration.k8s.io": lambda rt, n, o, c: _default_webhooks(n),
}


def prepare_create(rt: ResourceType, obj: Obj, ctx: Context) -> list[FieldError]:
    """Default and admit a new object; returns validation errors (raises for admission denials)."""
    if rt.status and not rt.keeps_status_on_create:
        obj.pop("status", None)
    errors = _CREATE.get(rt.qualified, _no_errors)(rt, obj, ctx)
    return metadata_errors(obj["metadata"]) + errors


def prepare_update(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    """Default an updated object and check it against the stored one (immutable fields)."""
    errors = _UPDATE.get(rt.qualified, _no_update_errors)(rt, new, old, ctx)
    return metadata_errors(new["metadata"]) + errors


def _no_errors(rt: ResourceType, obj: Obj, ctx: Context) -> list[FieldError]:
    return []


def _no_update_errors(rt: ResourceType, new: Obj, old: Obj, ctx: Context) -> list[FieldError]:
    return []


def spec_of(obj: Obj) -> dict[str, Any]:
    """Everything but metadata and status: what a generation bump tracks."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
