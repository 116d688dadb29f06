"""`juicefs-csi quickstart`: play the kubelet against a real driver through the real gRPC API.

It provisions a volume on an embedded file system (SQLite metadata, local
object storage), publishes it to two target paths, shares data between them,
reads stats, expands it, and tears everything down again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc

from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.driver import Driver, DriverConfig
from juicefs_csi.logs import configure_logging
from juicefs_csi.mount.mountinfo import read_mounts

T = TypeVar("T")
GIB = 1 << 30
VOLUME_NAME = "pvc-quickstart"


def embedded_secret(state_dir: Path) -> dict[str, str]:
    """A file system that needs no servers: SQLite metadata and a local directory as object storage."""
    return {
        "name": "quickstart",
        "metaurl": f"sqlite3://{state_dir / 'meta.db'}",
        "storage": "file",
        "bucket": f"{state_dir / 'bucket'}/",
    }


AccessMode = csi_pb2.VolumeCapability.AccessMode


def mount_capability(mode: AccessMode.Mode.ValueType = AccessMode.MULTI_NODE_MULTI_WRITER) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(),
        access_mode=AccessMode(mode=mode),
    )


class Progress:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    async def step(self, title: str, action: Callable[[], Awaitable[T]]) -> T:
        print(f"  • {title} ...", end="", flush=True)
        started = time.perf_counter()
        result = await action()
        elapsed = time.perf_counter() - started
        self.steps.append((title, elapsed))
        print(f" ok ({elapsed * 1000:.0f} ms)", flush=True)
        return result


async def run(state_dir: Path) -> None:
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    secret = embedded_secret(state_dir)
    socket_path = state_dir / "csi.sock"
    driver = Driver(
        DriverConfig(
            endpoint=f"unix://{socket_path}",
            node_id="quickstart-node",
            state_dir=state_dir / "driver",
            mount_root=state_dir / "mounts",
            client_metrics_host="127.0.0.1",
        )
    )
    progress = Progress()
    print(f"JuiceFS CSI quickstart (state in {state_dir})")
    await progress.step("start the driver on a private CSI socket", driver.start)
    try:
        async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
            await _play_kubelet(channel, secret, state_dir, progress)
    finally:
        await progress.step("stop the driver", driver.stop)
    leftovers = [m.mount_point for m in read_mounts() if m.mount_point.startswith(str(state_dir))]
    if leftovers:
        raise RuntimeError(f"mounts left behind: {leftovers}")
    total = sum(seconds for _, seconds in progress.steps)
    print(f"\nDone in {total:.1f}s: {len(progress.steps)} steps through the CSI gRPC API; nothing left mounted.")


async def _play_kubelet(channel: grpc.aio.Channel, secret: dict[str, str], state_dir: Path, progress: Progress) -> None:
    identity = csi_pb2_grpc.IdentityStub(channel)
    controller = csi_pb2_grpc.ControllerStub(channel)
    node = csi_pb2_grpc.NodeStub(channel)
    info = await progress.step("GetPluginInfo", lambda: identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest()))
    print(f"    driver {info.name} {info.vendor_version}")
    probe = await progress.step("Probe (juicefs binary answers)", lambda: identity.Probe(csi_pb2.ProbeRequest()))
    if not probe.ready.value:
        raise RuntimeError("driver is not ready: the juicefs binary does not answer")
    created = await progress.step(
        "CreateVolume 1 GiB (formats the file system, makes the sub-directory, sets the quota)",
        lambda: controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=VOLUME_NAME,
                capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
                volume_capabilities=[mount_capability()],
                secrets=secret,
            )
        ),
    )
    volume = created.volume
    targets = [str(state_dir / "pods" / pod / "volumes" / VOLUME_NAME / "mount") for pod in ("app-a", "app-b")]
    for target in targets:
        await progress.step(
            f"NodePublishVolume -> {os.path.relpath(target, state_dir)}",
            lambda target=target: node.NodePublishVolume(
                csi_pb2.NodePublishVolumeRequest(  # type: ignore[misc]
                    volume_id=volume.volume_id,
                    target_path=target,
                    volume_capability=mount_capability(),
                    secrets=secret,
                    volume_context=volume.volume_context,
                )
            ),
        )
    message = f"hello from app-a at {time.strftime('%H:%M:%S')}\n"
    await progress.step(
        "write through app-a", lambda: asyncio.to_thread(Path(targets[0], "hello.txt").write_text, message)
    )
    seen = await progress.step("read through app-b", lambda: asyncio.to_thread(Path(targets[1], "hello.txt").read_text))
    if seen != message:
        raise RuntimeError("app-b did not see what app-a wrote")
    print(f"    app-b read: {seen.strip()!r}")
    stats = await progress.step(
        "NodeGetVolumeStats",
        lambda: node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=targets[1])
        ),
    )
    used = next(u for u in stats.usage if u.unit == csi_pb2.VolumeUsage.BYTES)
    print(
        f"    condition: {'abnormal' if stats.volume_condition.abnormal else 'normal'}, "
        f"used {used.used} of {used.total} bytes"
    )
    expanded = await progress.step(
        "ControllerExpandVolume to 2 GiB",
        lambda: controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=volume.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB), secrets=secret
            )
        ),
    )
    print(f"    capacity now {expanded.capacity_bytes // GIB} GiB")
    for target in targets:
        await progress.step(
            f"NodeUnpublishVolume <- {os.path.relpath(target, state_dir)}",
            lambda target=target: node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(  # type: ignore[misc]
                    volume_id=volume.volume_id, target_path=target
                )
            ),
        )
    await progress.step(
        "DeleteVolume (removes the sub-directory)",
        lambda: controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secret)),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="juicefs-csi quickstart")
    parser.add_argument("--state-dir", type=Path, default=Path(".state/quickstart").resolve())
    parser.add_argument("--verbose", action="store_true", help="show the driver's own log lines")
    args = parser.parse_args(argv)
    configure_logging("text", "info" if args.verbose else "error")
    if os.geteuid() != 0:
        print("quickstart mounts FUSE file systems and must run as root", file=sys.stderr)
        return 1
    try:
        asyncio.run(run(args.state_dir))
    except (grpc.aio.AioRpcError, RuntimeError) as exc:
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        print(f"\nquickstart failed: {detail}", file=sys.stderr)
        return 1
    return 0
