"""The three PATCH formats of kube-apiserver: JSON merge, JSON patch and strategic merge.

None of the functions mutates its inputs: stored objects are shared between the
store, watch history and responses, so patches build new containers instead.
"""

from __future__ import annotations

import copy
from typing import Any

from .resources import Obj

JSON = Any


class PatchError(Exception):
    """The patch cannot be applied; the caller answers 422 (or 400 for malformed patches)."""


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: JSON, operations: JSON) -> JSON:
    """RFC 6902 (add, remove, replace, move, copy, test) with RFC 6901 pointers."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind = op["op"]
        if kind == "add":
            doc = _add(doc, _pointer(op["path"]), _value(op))
        elif kind == "remove":
            doc, _ = _remove(doc, _pointer(op["path"]))
        elif kind == "replace":
            doc, _ = _remove(doc, _pointer(op["path"]))
            doc = _add(doc, _pointer(op["path"]), _value(op))
        elif kind in ("move", "copy"):
            source = _pointer(_required(op, "from"))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc, _ = _remove(doc, source)
            doc = _add(doc, _pointer(op["path"]), value)
        elif kind == "test":
            if _get(doc, _pointer(op["path"])) != _value(op):
                raise PatchError(f"testing value {op['path']} failed")
        else:
            raise PatchError(f"unexpected kind: {kind}")
    return doc


def _required(op: dict[str, Any], key: str) -> Any:
    if key not in op:
        raise PatchError(f"operation {op['op']} is missing {key!r}")
    return op[key]


def _value(op: dict[str, Any]) -> Any:
    return copy.deepcopy(_required(op, "value"))


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise PatchError(f"array index {idx} out of bounds")
    return idx


def _get(doc: JSON, path: list[str]) -> JSON:
    cur = doc
    for token in path:
        if isinstance(cur, dict):
            if token not in cur:
                raise PatchError(f"path /{'/'.join(path)} does not exist")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, allow_end=False)]
        else:
            raise PatchError(f"path /{'/'.join(path)} does not exist")
    return cur


def _add(doc: JSON, path: list[str], value: JSON) -> JSON:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to /{'/'.join(path)}")
    return doc


def _remove(doc: JSON, path: list[str]) -> tuple[JSON, JSON]:
    if not path:
        raise PatchError("cannot remove the whole document")
    parent = _get(doc, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"cannot remove /{'/'.join(path)}")


# Merge keys of the lists a strategic merge patch merges instead of replacing,
# by field name (patchStrategy/patchMergeKey tags of the k8s.io/api types served
# here). ``None`` marks a list of scalars merged as a set.
_MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "addresses": "type",
    "webhooks": "name",
    "secrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def _merge_key(path: tuple[str, ...]) -> tuple[bool, str | None]:
    """(merges, key) for the list at ``path``; ``ports`` depends on whether it is a container's."""
    name = path[-1]
    if path == ("metadata", "finalizers"):
        return True, None
    if name == "ports":
        return True, "containerPort" if any(p in _CONTAINER_LISTS for p in path) else "port"
    if name == "imagePullSecrets" and path[0] != "spec":
        return False, None  # ServiceAccount.imagePullSecrets has no patch strategy; PodSpec's has
    if name in _MERGE_KEYS:
        return True, _MERGE_KEYS[name]
    return False, None


def strategic_merge_patch(target: Obj, patch: Obj) -> Obj:
    """Apply a strategic merge patch for the built-in kinds served by the emulator.

    Maps merge, ``null`` deletes, lists with a merge key merge by it (``$patch:
    delete``/``replace`` honoured), ``metadata.finalizers`` merges as a set
    (``$deleteFromPrimitiveList`` honoured), ``$retainKeys`` is applied and
    ``$setElementOrder`` is accepted; other lists are replaced.
    """
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    result = _smp_map(target, patch, ())
    if not isinstance(result, dict):
        raise PatchError("strategic merge patch deleted the whole object")
    return result


def _smp_map(target: JSON, patch: dict[str, Any], path: tuple[str, ...]) -> JSON:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "replace":
        return _strip(body)
    if directive is not None:
        raise PatchError(f"unknown patch type: {directive}")
    out = dict(target) if isinstance(target, dict) else {}
    retain = body.pop("$retainKeys", None)
    deletions: dict[str, list[Any]] = {}
    for key in list(body):
        if key.startswith("$deleteFromPrimitiveList/"):
            deletions[key.split("/", 1)[1]] = body.pop(key)
        elif key.startswith("$setElementOrder/"):
            body.pop(key)
    for key, value in body.items():
        sub = (*path, key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(out.get(key), value, sub)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _smp_list(out.get(key), value, sub)
        else:
            out[key] = value
    for key, values in deletions.items():
        if isinstance(out.get(key), list):
            out[key] = [v for v in out[key] if v not in values]
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain or k in body}
    return out


def _smp_list(target: JSON, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    merges, key = _merge_key(path)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if not merges or not isinstance(target, list):
        return [_strip(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    if key is None:
        return list(target) + [v for v in patch if v not in target]
    out = list(target)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {key}")
        idx = next((i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(_strip(item))
        else:
            out[idx] = _smp_map(out[idx], item, path)
    return out


def _strip(value: JSON) -> JSON:
    """Drop directive keys from a value that is stored as given."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
