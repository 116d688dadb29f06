"""`juicefs-csi`: flags and environment decide which role runs, as in the Go driver."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

from juicefs_csi import DRIVER_NAME, __version__, quickstart
from juicefs_csi.controller.provisioner import DEFAULT_WORKERS, workers_from_env
from juicefs_csi.driver import Driver, DriverConfig
from juicefs_csi.kube.client import KubeSettings
from juicefs_csi.kube.election import default_namespace, election_timing, parse_duration
from juicefs_csi.logs import configure_logging

DEFAULT_WEB_PORT = 8080
DEFAULT_LEASE_DURATION = "15s"
DEFAULT_CLEANUP_GRACE = "2m"


def _duration(text: str) -> float:
    """`--leader-election-lease-duration`: a Go duration (`15s`, `1m`) or plain seconds, as the Go flag takes."""
    try:
        seconds = parse_duration(text)
        election_timing(seconds)  # positive, and renew deadline / retry period derivable from it
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def _grace(text: str) -> float:
    """`--cleanup-grace`: a Go duration or plain seconds, at least zero."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return seconds


def _roles(role: str, pod_name: str) -> tuple[bool, bool]:
    """(node, controller). `auto` follows POD_NAME like the Go driver; outside a pod it runs both."""
    if role == "auto":
        if "csi-controller" in pod_name:
            role = "controller"
        elif "csi-node" in pod_name:
            role = "node"
        else:
            role = "all"
    return role in ("node", "all"), role in ("controller", "all")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog="juicefs-csi", description="JuiceFS CSI driver")
    parser.add_argument(
        "--endpoint",
        default=env.get("CSI_ENDPOINT", "unix:///var/lib/csi/sockets/csi.sock"),
        help="CSI unix socket, e.g. unix:///csi/csi.sock",
    )
    parser.add_argument("--nodeid", default=env.get("NODE_NAME", socket.gethostname()), help="this node's name")
    parser.add_argument(
        "--role",
        choices=["auto", "node", "controller", "all"],
        default="auto",
        help="which CSI services to serve (auto: from POD_NAME)",
    )
    parser.add_argument(
        "--by-process",
        action="store_true",
        default=env.get("BY_PROCESS", "").lower() == "true",
        help="run juicefs clients as processes of the driver instead of mount pods "
        "(also the mode when no Kubernetes API is configured)",
    )
    parser.add_argument("--driver-name", default=env.get("DRIVER_NAME", DRIVER_NAME))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(env.get("JUICEFS_CSI_STATE_DIR", "/var/lib/juicefs-csi")),
        help="where the driver keeps what it has mounted (survives driver restarts)",
    )
    parser.add_argument(
        "--mount-root",
        type=Path,
        default=Path(env.get("JUICEFS_MOUNT_PATH", "/var/lib/juicefs/volume")),
        help="where clients mount volumes on the node",
    )
    parser.add_argument(
        "--kubelet-dir", default=env.get("KUBELET_DIR", ""), help="if set, target paths must lie under this directory"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env.get("JUICEFS_CSI_WEB_PORT", DEFAULT_WEB_PORT)),
        help="port of the driver's /metrics (0 turns it off)",
    )
    parser.add_argument(
        "--client-metrics-host", default="0.0.0.0", help="address each juicefs client serves its own metrics on"
    )
    parser.add_argument(
        "--provisioner",
        action="store_true",
        help="run the in-process provisioner (PVC -> PV, pathPattern, reclaim, expansion) in the controller; "
        f"workers from PROVISION_WORKER_THREADS (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--leader-election",
        action="store_true",
        help="only the replica holding the Lease runs the provisioner and the cleanup",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default="",
        help="namespace of the Lease (default: the pod's namespace, POD_NAMESPACE or the service account's)",
    )
    parser.add_argument(
        "--leader-election-lease-duration",
        type=_duration,
        default=DEFAULT_LEASE_DURATION,
        help="lease duration, e.g. 15s; renew deadline and retry period scale with it as in client-go (15s/10s/2s)",
    )
    parser.add_argument(
        "--cleanup-grace",
        type=_grace,
        default=DEFAULT_CLEANUP_GRACE,
        help="controller: how long a node may lack its node plugin (a restart, a rollout) before its mount pods "
        "and helper Jobs are cleaned up, e.g. 2m",
    )
    parser.add_argument("--log-format", choices=["text", "json"], default=env.get("LOG_FORMAT", "text"))
    parser.add_argument("--log-level", default=env.get("LOG_LEVEL", "info"))
    parser.add_argument("--version", action="version", version=f"juicefs-csi {__version__}")
    return parser


def config_from_args(args: argparse.Namespace) -> DriverConfig:
    """Flags and environment to a DriverConfig; ValueError names what is wrong (a startup error)."""
    run_node, run_controller = _roles(args.role, os.environ.get("POD_NAME", ""))
    # A by-process node never talks to Kubernetes; a controller may (provisioner, election) in any mode.
    kube = kube_settings() if run_controller or not args.by_process else None
    namespace = args.leader_election_namespace or default_namespace() or ""
    workers = workers_from_env() if run_controller and args.provisioner else DEFAULT_WORKERS
    if run_controller:
        if args.provisioner and kube is None:
            raise ValueError("--provisioner needs Kubernetes: run in a pod (service account) or set KUBECONFIG")
        if args.leader_election and kube is None:
            raise ValueError("--leader-election needs Kubernetes: run in a pod (service account) or set KUBECONFIG")
        if args.leader_election and not namespace:
            raise ValueError(
                "--leader-election needs the Lease's namespace: --leader-election-namespace or POD_NAMESPACE"
            )
    return DriverConfig(
        by_process=args.by_process,
        kube=kube,
        endpoint=args.endpoint,
        node_id=args.nodeid,
        state_dir=args.state_dir,
        mount_root=args.mount_root,
        run_node=run_node,
        run_controller=run_controller,
        driver_name=args.driver_name,
        web_port=args.metrics_port or None,
        client_metrics_host=args.client_metrics_host,
        allowed_target_prefix=args.kubelet_dir,
        provisioner=args.provisioner,
        provisioner_workers=workers,
        leader_election=args.leader_election,
        leader_election_namespace=namespace or None,
        leader_election_lease_duration=args.leader_election_lease_duration,
        cleanup_grace=args.cleanup_grace,
    )


def kube_settings() -> KubeSettings | None:
    """Kubernetes is configured when running in a pod (service account) or when KUBECONFIG is set."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get("KUBECONFIG"):
        return KubeSettings.from_env()
    return None


async def _serve(config: DriverConfig) -> None:
    driver = Driver(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await driver.start()
    try:
        await stop.wait()
    finally:
        await driver.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quickstart"]:
        return quickstart.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2 with the usage line and the message
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
