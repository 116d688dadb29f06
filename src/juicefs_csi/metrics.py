"""The driver's own Prometheus metrics, on a private registry per driver instance.

Names follow the Go driver (`juicefs_volume_errors`, ...) so existing dashboards keep working.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ExactNameCounter(Collector):
    """A counter exposed under its exact name, without the `_total` suffix prometheus_client adds.

    The Go driver's series are `juicefs_volume_errors` and `juicefs_volume_del_errors`;
    dashboards and alerts query those names, so they are served untyped, as is.
    """

    def __init__(self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._values: defaultdict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _CounterChild:
        return _CounterChild(self, tuple(values))

    def _inc(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            self._values[key] += amount

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "unknown")]

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "unknown")
        with self._lock:
            for key, value in self._values.items():
                metric.add_sample(self.name, dict(zip(self.labelnames, key, strict=True)), value)
        yield metric


class _CounterChild:
    def __init__(self, parent: ExactNameCounter, key: tuple[str, ...]) -> None:
        self.parent = parent
        self.key = key

    def inc(self, amount: float = 1.0) -> None:
        self.parent._inc(self.key, amount)


class Metrics:
    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.registry = CollectorRegistry()
        registry = self.registry
        self.volume_errors = ExactNameCounter(
            "juicefs_volume_errors", "Failed NodePublishVolume calls.", ["node_name"], registry
        )
        self.volume_del_errors = ExactNameCounter(
            "juicefs_volume_del_errors", "Failed NodeUnpublishVolume calls.", ["node_name"], registry
        )
        self.volume_path_health = Gauge(
            "juicefs_volume_path_health",
            "1 when a published target path answers, 0 when it is broken.",
            ["node_name", "volume_id", "volume_path", "pod_uid"],
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "juicefs_csi_rpc_duration_seconds",
            "CSI RPC latency by method and gRPC status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.mount_recoveries = Counter(
            "juicefs_mount_recoveries",
            "Times a dead or broken juicefs client was remounted and its targets re-bound.",
            ["node_name", "volume_id"],
            registry=registry,
        )
        self.mount_clients = Gauge(
            "juicefs_mount_client_info",
            "One series per running juicefs client, naming the port its own metrics are served on.",
            ["node_name", "volume_id", "mountpoint", "metrics_port"],
            registry=registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """`/metrics` and a liveness `/healthz`, on their own small HTTP server."""

    async def handle_metrics(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def handle_health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
