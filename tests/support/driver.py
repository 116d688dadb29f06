"""Runs the real driver as a separate process, talks to it over its real CSI socket, and cleans up.

Tests drive it exactly as kubelet would; restarting it is stopping this process
and starting another on the same state directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import read_mounts

AccessMode = csi_pb2.VolumeCapability.AccessMode
GIB = 1 << 30
DRIVER_BIN = str(Path(sys.executable).with_name("juicefs-csi"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def capability(
    mode: AccessMode.Mode.ValueType = AccessMode.MULTI_NODE_MULTI_WRITER,
    mount_flags: tuple[str, ...] = (),
    block: bool = False,
) -> csi_pb2.VolumeCapability:
    if block:
        return csi_pb2.VolumeCapability(
            block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=AccessMode(mode=mode)
        )
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=list(mount_flags)),
        access_mode=AccessMode(mode=mode),
    )


@dataclass
class DriverProcess:
    """One `juicefs-csi` process with its own socket, state and mount root under `workdir`."""

    workdir: Path
    node_id: str = "test-node"
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    _channel: grpc.Channel | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "csi.sock"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def mount_root(self) -> Path:
        return self.workdir / "mounts"

    @property
    def log_path(self) -> Path:
        return self.workdir / "driver.log"

    def start(self, timeout: float = 20.0) -> DriverProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        argv = [
            DRIVER_BIN,
            f"--endpoint=unix://{self.socket_path}",
            f"--nodeid={self.node_id}",
            f"--state-dir={self.state_dir}",
            f"--mount-root={self.mount_root}",
            f"--metrics-port={self.metrics_port}",
            "--client-metrics-host=127.0.0.1",
            "--log-format=json",
            "--log-level=debug",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"driver exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            if self.socket_path.exists():
                try:
                    self.identity.Probe(csi_pb2.ProbeRequest(), timeout=5)
                    return self
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("driver did not start in time")

    def stop(self, kill: bool = False) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, kill: bool = False) -> DriverProcess:
        self.stop(kill=kill)
        return self.start()

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
        return self._channel

    @property
    def identity(self) -> csi_pb2_grpc.IdentityStub:
        return csi_pb2_grpc.IdentityStub(self.channel)

    @property
    def controller(self) -> csi_pb2_grpc.ControllerStub:
        return csi_pb2_grpc.ControllerStub(self.channel)

    @property
    def node(self) -> csi_pb2_grpc.NodeStub:
        return csi_pb2_grpc.NodeStub(self.channel)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client_pids(self) -> list[int]:
        """The juicefs clients this driver started: one supervisor process each (not their FUSE workers)."""
        return [
            pid
            for pid, argv in juicefs_processes()
            if any(str(self.mount_root) in a for a in argv) and not is_supervised_worker(pid)
        ]

    def publish(
        self,
        volume_id: str,
        target: Path | str,
        secrets: dict[str, str],
        volume_context: dict[str, str] | None = None,
        readonly: bool = False,
        cap: csi_pb2.VolumeCapability | None = None,
        timeout: float = 60,
    ) -> csi_pb2.NodePublishVolumeResponse:
        return self.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                target_path=str(target),
                volume_capability=cap or capability(),
                readonly=readonly,
                secrets=secrets,
                volume_context=volume_context or {},
            ),
            timeout=timeout,
        )

    def unpublish(self, volume_id: str, target: Path | str, timeout: float = 60) -> None:
        self.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)), timeout=timeout
        )


def juicefs_processes() -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            if len(argv) == 1:  # juicefs rewrites its argv into one string (to hide passwords)
                argv = argv[0].split(" ")
            if len(argv) > 1 and argv[0].endswith("juicefs") and argv[1] == "mount":
                found.append((int(entry.name), argv))
    return found


def is_supervised_worker(pid: int) -> bool:
    """The driver starts each client as a session leader; juicefs' FUSE worker is its child in that group."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return int(fields[2]) != pid


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    return [m.mount_point for m in read_mounts() if m.mount_point.startswith(prefix)]


def cleanup(path: Path) -> None:
    """Leave nothing mounted or running under `path`, whatever state a test ended in."""
    for pid, argv in juicefs_processes():
        if any(str(path) in arg for arg in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for mount_point in sorted(mounts_under(path), key=len, reverse=True):
        with contextlib.suppress(OSError):
            syscalls.unmount(mount_point, lazy=True)


@contextlib.contextmanager
def running_driver(workdir: Path, **kwargs: object) -> Iterator[DriverProcess]:
    driver = DriverProcess(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield driver.start()
    finally:
        driver.stop()
        cleanup(workdir)
