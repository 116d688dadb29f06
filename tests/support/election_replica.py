"""One leader-election replica in its own process, so a test can SIGKILL a leader without it releasing.

    python -m tests.support.election_replica --kubeconfig K --namespace N --identity I \
        [--name LEASE] [--lease-duration 15] [--renew-deadline S] [--retry-period S]

It prints one JSON object per line on stdout, flushed at once:
  {"event": "following", "leader": ...}   the observed holder changed (while not leading)
  {"event": "started", "mono": ..., "transitions": n}   became the leader
  {"event": "stopped", "mono": ...}        stopped leading
`mono` is `time.monotonic()` (CLOCK_MONOTONIC: one clock for every process on the host), so the
test measures a takeover against the moment it sent SIGKILL. SIGTERM stops cleanly (releases the lease).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry

from juicefs_csi.kube.client import KubeSettings, make_client, request_counter
from juicefs_csi.kube.election import LeaderElector
from juicefs_csi.logs import configure_logging


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "mono": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


async def replica(args: argparse.Namespace) -> None:
    registry = CollectorRegistry()
    client = make_client(KubeSettings(kubeconfig=args.kubeconfig), request_counter(registry))

    def transitions() -> float:
        return registry.get_sample_value("juicefs_leader_transitions_total", {"name": args.name}) or 0.0

    async def lead() -> None:
        emit("started", transitions=transitions())
        await asyncio.Event().wait()

    elector = LeaderElector(
        client,
        namespace=args.namespace,
        name=args.name,
        identity=args.identity,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        registry=registry,
        on_started_leading=lead,
        on_stopped_leading=lambda: emit("stopped"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    elector.start()
    emit("running")
    seen = ""
    try:
        while not stop.is_set():
            if not elector.is_leader and elector.leader != seen:
                seen = elector.leader
                emit("following", leader=seen)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.02):
                    await stop.wait()
    finally:
        await elector.stop()
        await client.close()
        emit("exited")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--name", default="csi-controller.juicefs.com")
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--renew-deadline", type=float, default=None)
    parser.add_argument("--retry-period", type=float, default=None)
    args = parser.parse_args()
    configure_logging("text", "info")
    asyncio.run(replica(args))


if __name__ == "__main__":
    main()
