"""A stand-in kubelet over plain HTTP, for control planes without one (envtest).

It does the single thing of a kubelet that API clients observe on deletion: once
a pod bound to its node is terminating, it deletes it with gracePeriodSeconds=0.
"""

from __future__ import annotations

import threading
import time

from .client import HttpClient, KubeApiError


class PollingKubelet:
    """Confirms deletions of pods on ``nodes`` ("*": any node) ``delay`` seconds after they start."""

    def __init__(self, client: HttpClient, interval: float = 0.1) -> None:
        self.client = client
        self.interval = interval
        self.nodes: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="polling-kubelet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.nodes:
                try:
                    self._sweep()
                except (OSError, KubeApiError):
                    continue

    def _sweep(self) -> None:
        pods = self.client.call("GET", "/api/v1/pods")["items"]
        now = time.monotonic()
        for pod in pods:
            meta, node = pod["metadata"], pod.get("spec", {}).get("nodeName")
            delay = self.nodes.get(node or "", self.nodes.get("*")) if node else None
            if delay is None or not meta.get("deletionTimestamp") or not meta.get("deletionGracePeriodSeconds"):
                continue
            first = self._seen.setdefault(meta["uid"], now)
            if now - first >= delay:
                self.client.request(
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
                )
                self._seen.pop(meta["uid"], None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
