"""StorageClass templates resolved against a claim, with the Go driver's and external-provisioner's syntax.

Two template languages exist because two projects defined them:

- The Go driver's `${.pvc.name}`, `${.pvc.namespace}`, `${.pvc.labels.X}`, `${.pvc.annotations.X}` (`.PVC.`
  too) and `${.node.name}`, `${.node.podCIDR}`, `${.node.labels.X}`, `${.node.annotations.X}`, in the
  StorageClass parameters (above all `pathPattern`) and mountOptions.
- external-provisioner's `${pvc.name}`, `${pvc.namespace}`, `${pv.name}`, `${pvc.annotations['k']}` in the
  `csi.storage.k8s.io/*-secret-{name,namespace}` parameters.

Unlike the Go driver, a reference to a missing label or annotation, or to an unknown field, is an
error rather than an empty string: an empty piece silently merges the data of different claims.
Everything here is pure; errors are `InvalidArgument` with a message fit for a PVC Event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from juicefs_csi.errors import InvalidArgument

# `${.pvc.X}` / `${.PVC.X}` / `${.node.X}`; X is a field, or labels.K / annotations.K.
GO_TEMPLATE = re.compile(r"\$\{\.(PVC|pvc|node)\.([^}]*)\}")
# Any `${...}` left after expansion, or a `${.` never closed, is a template we did not understand.
LEFTOVER = re.compile(r"\$\{[^}]*\}?")
SECRET_TEMPLATE = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096


@dataclass(frozen=True)
class NodeFacts:
    """The selected node, for `${.node.*}` templates (WaitForFirstConsumer classes only)."""

    name: str
    pod_cidr: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimFacts:
    """What templates may read from a PersistentVolumeClaim."""

    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node: NodeFacts | None = None


def uses_node(text: str) -> bool:
    """Whether `text` needs the selected node: only then is the Node read."""
    return any(match.group(1) == "node" for match in GO_TEMPLATE.finditer(text))


def expand(text: str, claim: ClaimFacts, what: str) -> str:
    """Replace the Go driver's `${.pvc.*}` / `${.node.*}` templates in `text`; `what` names it in errors."""

    def value(match: re.Match[str]) -> str:
        scope, path = match.group(1), match.group(2)
        if scope == "node":
            return _node_value(claim, path, match.group(0), what)
        return _claim_value(claim, path, match.group(0), what)

    expanded = GO_TEMPLATE.sub(value, text)
    leftover = LEFTOVER.search(GO_TEMPLATE.sub("", text))
    if leftover:
        raise InvalidArgument(
            f"{what}: unknown template {leftover.group(0)!r}; use ${{.pvc.name}}, ${{.pvc.namespace}}, "
            "${.pvc.labels.KEY}, ${.pvc.annotations.KEY} or ${.node.name|podCIDR|labels.KEY|annotations.KEY}"
        )
    return expanded


def _claim_value(claim: ClaimFacts, path: str, template: str, what: str) -> str:
    kind, _, key = path.partition(".")
    if kind in ("labels", "annotations") and key:
        source = claim.labels if kind == "labels" else claim.annotations
        if key not in source:
            raise InvalidArgument(
                f"{what}: {template} refers to {kind[:-1]} {key!r}, "
                f"which PVC {claim.namespace}/{claim.name} does not have"
            )
        return source[key]
    if path == "name":
        return claim.name
    if path == "namespace":
        return claim.namespace
    raise InvalidArgument(
        f"{what}: unknown template {template!r} (PVC fields: name, namespace, labels.KEY, annotations.KEY)"
    )


def _node_value(claim: ClaimFacts, path: str, template: str, what: str) -> str:
    node = claim.node
    if node is None:
        raise InvalidArgument(
            f"{what}: {template} needs the claim's selected node, and PVC {claim.namespace}/{claim.name} has none "
            "(node templates work only with volumeBindingMode: WaitForFirstConsumer)"
        )
    kind, _, key = path.partition(".")
    if kind in ("labels", "annotations") and key:
        source = node.labels if kind == "labels" else node.annotations
        if key not in source:
            raise InvalidArgument(
                f"{what}: {template} refers to {kind[:-1]} {key!r}, which node {node.name} does not have"
            )
        return source[key]
    if path == "name":
        return node.name
    if path == "podCIDR":
        if not node.pod_cidr:
            raise InvalidArgument(f"{what}: {template}: node {node.name} has no podCIDR")
        return node.pod_cidr
    raise InvalidArgument(
        f"{what}: unknown template {template!r} (node fields: name, podCIDR, labels.KEY, annotations.KEY)"
    )


def resolve_path_pattern(pattern: str, claim: ClaimFacts) -> str:
    """The sub-directory a `pathPattern` names for this claim; never the root, never outside it."""
    what = f"pathPattern {pattern[:128]!r}"
    resolved = expand(pattern, claim, what)
    return check_sub_directory(resolved, what)


def check_sub_directory(path: str, what: str) -> str:
    """A relative path of plain segments: no empty, '.', '..' or over-long segment, no control characters."""
    if not path or path.strip("/") == "":
        raise InvalidArgument(f"{what} resolves to {path!r}, the file system root; it must name a sub-directory")
    if path.startswith("/"):
        raise InvalidArgument(
            f"{what} resolves to the absolute path {path[:128]!r}; it must be relative to the volume root"
        )
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise InvalidArgument(f"{what} resolves to a path with control characters")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{what} resolves to a path longer than {MAX_PATH_BYTES} bytes")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            shown = segment or "an empty segment ('//' or a trailing '/')"
            raise InvalidArgument(f"{what} resolves to {path[:128]!r}, which contains {shown}; segments must be names")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidArgument(f"{what} resolves to a path segment longer than {MAX_SEGMENT_BYTES} bytes")
    return path


# --- external-provisioner's secret templates ------------------------------------------------


def resolve_secret_template(template: str, params: Mapping[str, str], what: str) -> str:
    """os.Expand over `params`, failing on any token that is not one of them (as external-provisioner does)."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        token = match.group(1) if match.group(1) is not None else match.group(2)
        if token not in params:
            missing.append(token)
            return ""
        return params[token]

    resolved = SECRET_TEMPLATE.sub(value, template)
    if missing:
        allowed = ", ".join("${" + k + "}" for k in sorted(params) if not k.startswith("pvc.annotations["))
        raise InvalidArgument(
            f"{what}: invalid tokens {sorted(set(missing))!r} (allowed: {allowed}, and for names "
            "${pvc.annotations['KEY']})"
        )
    return resolved


def secret_reference(
    name_template: str | None,
    namespace_template: str | None,
    claim: ClaimFacts,
    pv_name: str,
    what: str,
) -> tuple[str, str] | None:
    """(namespace, name) of a `csi.storage.k8s.io/*-secret-*` pair, or None when both are unset.

    The namespace may use `${pv.name}` and `${pvc.namespace}`; the name may also use `${pvc.name}` and
    `${pvc.annotations['KEY']}`: a claim's owner must not pick the namespace of someone else's Secret.
    """
    if not name_template and not namespace_template:
        return None
    if not name_template or not namespace_template:
        raise InvalidArgument(f"{what}: the secret name and namespace must both be set or both be unset")
    namespace_params = {"pv.name": pv_name, "pvc.namespace": claim.namespace}
    namespace = resolve_secret_template(namespace_template, namespace_params, f"{what} namespace")
    if not DNS1123_LABEL.fullmatch(namespace) or len(namespace) > 63:
        shown = _shown(namespace_template, namespace)
        raise InvalidArgument(f"{what} namespace {shown}, which is not a valid namespace")
    name_params = {**namespace_params, "pvc.name": claim.name}
    name_params.update({f"pvc.annotations['{k}']": v for k, v in claim.annotations.items()})
    name = resolve_secret_template(name_template, name_params, f"{what} name")
    if not DNS1123_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise InvalidArgument(f"{what} name {_shown(name_template, name)}, which is not a valid Secret name")
    return namespace, name


def _shown(template: str, resolved: str) -> str:
    return repr(resolved) if resolved == template else f"{template!r} resolved to {resolved!r}"
