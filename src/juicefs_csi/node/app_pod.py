"""Which app pod a NodePublishVolume is for: a pure decision over the request and the node's pod cache.

The node plugin needs the pod's identity (namespace, name, uid) to address Events to it. Two sources:

1. `podInfoOnMount` volume context (`csi.storage.k8s.io/pod.name`, `pod.namespace`, `pod.uid`), which the
   kubelet passes when the CSIDriver object asks for it. Authoritative and free: used first.
2. The node's pod cache (kubelet `/pods`, or the API-server watch after a 401/403), looked up by the pod
   uid in the target path (`<kubelet dir>/pods/<uid>/volumes/...`).

A fresh pod can be missing from the cache for a moment (the kubelet is polled), so a miss first means
"wait on the cache" (a watch, not a sleep), and only a miss after that wait fails the publish, with a
message that says how to make the pod's identity available.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from juicefs_csi.node.decisions import pod_uid_of_target

POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"


@dataclass(frozen=True)
class AppPod:
    namespace: str
    name: str
    uid: str = ""


@dataclass(frozen=True)
class Lookup:
    """Exactly one of: the pod, a uid to wait for in the cache, or why the publish must fail."""

    pod: AppPod | None = None
    wait_for_uid: str = ""
    error: str = ""


def from_context(context: Mapping[str, str]) -> AppPod | None:
    """The pod from `podInfoOnMount` keys; name and namespace are required, the uid is optional."""
    name, namespace = context.get(POD_NAME, "").strip(), context.get(POD_NAMESPACE, "").strip()
    if not name or not namespace:
        return None
    return AppPod(namespace, name, context.get(POD_UID, "").strip())


def resolve_app_pod(
    context: Mapping[str, str],
    target: str,
    find: Callable[[str], AppPod | None],
    *,
    cache_synced: bool,
    waited: bool,
    driver_name: str,
) -> Lookup:
    """Decide where the publish's app pod comes from.

    `find` looks a pod uid up in the node's pod cache (no request), `cache_synced` says whether that
    cache was ever filled, `waited` whether the caller already waited on it for this uid.
    """
    pod = from_context(context)
    if pod is not None:
        return Lookup(pod=pod)
    uid = context.get(POD_UID, "").strip() or pod_uid_of_target(target)
    if uid is None:
        return Lookup(error=_missing(f"target {target} is not in the kubelet's pods/<uid>/volumes layout", driver_name))
    cached = find(uid)
    if cached is not None:
        return Lookup(pod=cached)
    if not waited:
        return Lookup(wait_for_uid=uid)
    if not cache_synced:
        why = f"pod {uid}: this node's pod list is not available (the kubelet and the API server did not answer)"
    else:
        why = f"pod {uid} is not among this node's pods (kubelet or API server)"
    return Lookup(error=_missing(why, driver_name))


def _missing(why: str, driver_name: str) -> str:
    return (
        f"cannot identify the app pod: {why}, and the request has no pod information; "
        f"enable `podInfoOnMount: true` on the CSIDriver object {driver_name} so that the kubelet passes "
        f"{POD_NAME}, {POD_NAMESPACE} and {POD_UID}"
    )
