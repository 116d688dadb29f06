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
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc
from juicefs_csi.mount import fusectl, syscalls
from juicefs_csi.mount.mountinfo import MountEntry, read_mounts
from tests.support.observe import process_group

AccessMode = csi_pb2.VolumeCapability.AccessMode
GIB = 1 << 30
DRIVER_BIN = str(Path(sys.executable).with_name("juicefs-csi"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- what the requests carry ------------------------------------------------------------------------------


def capability(
    mode: AccessMode.Mode.ValueType = AccessMode.MULTI_NODE_MULTI_WRITER,
    mount_flags: tuple[str, ...] = (),
    block: bool = False,
) -> csi_pb2.VolumeCapability:
    if block:
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=AccessMode(mode=mode))
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=list(mount_flags)),
        access_mode=AccessMode(mode=mode),
    )


def sqlite_volume(workdir: Path, name: str) -> dict[str, str]:
    """The Secret of a volume on SQLite metadata and local object storage, formatted by the driver on first use."""
    return {
        "name": name,
        "metaurl": f"sqlite3://{workdir / f'{name}.db'}",
        "storage": "file",
        "bucket": f"{workdir / 'bucket'}/",
    }


# -- the driver process -----------------------------------------------------------------------------------


@dataclass
class DriverProcess:
    """One `juicefs-csi` process with its own socket, state and mount root under `workdir`."""

    workdir: Path
    node_id: str = "test-node"
    extra_args: list[str] = field(default_factory=list)
    # False: mount pod mode (with KUBECONFIG in `env`); the driver then runs no juicefs client itself.
    by_process: bool = True
    # Added to (or, with an empty value, removed from) the inherited environment.
    env: dict[str, str] = field(default_factory=dict)
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
            *(["--by-process"] if self.by_process else []),
            "--log-format=json",
            "--log-level=debug",
            *self.extra_args,
        ]
        env = {**os.environ, **self.env}
        for key in [k for k, v in self.env.items() if not v]:
            del env[key]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
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
        return [pid for pid in juicefs_pids_under(self.mount_root) if not is_supervised_worker(pid)]

    def publish(  # noqa: PLR0917 - existing signature, kept as is
        self,
        volume_id: str,
        target: Path | str,
        secrets: dict[str, str],
        volume_context: dict[str, str] | None = None,
        readonly: bool = False,
        cap: csi_pb2.VolumeCapability | None = None,
        timeout: float = 60,
    ) -> csi_pb2.NodePublishVolumeResponse:
        response: csi_pb2.NodePublishVolumeResponse = self.node.NodePublishVolume(
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
        return response

    def unpublish(self, volume_id: str, target: Path | str, timeout: float = 60) -> None:
        self.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)), timeout=timeout
        )

    def volume_stats(self, volume_id: str, path: Path | str, timeout: float = 30) -> csi_pb2.NodeGetVolumeStatsResponse:
        response: csi_pb2.NodeGetVolumeStatsResponse = self.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(path)), timeout=timeout
        )
        return response


@contextlib.contextmanager
def running_driver(workdir: Path, **kwargs: Any) -> Iterator[DriverProcess]:
    """A started driver (`kwargs` as for `DriverProcess`), stopped and cleaned up after."""
    driver = DriverProcess(workdir, **kwargs)
    try:
        yield driver.start()
    finally:
        driver.stop()
        cleanup(workdir)


# -- juicefs clients and mounts on the node ---------------------------------------------------------------


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


def juicefs_pids_under(path: Path | str) -> list[int]:
    """Every `juicefs mount` process (supervisors and FUSE workers) with `path` in its command line."""
    return [pid for pid, argv in juicefs_processes() if any(str(path) in arg for arg in argv)]


def is_supervised_worker(pid: int) -> bool:
    """The driver starts each client as a session leader; juicefs' FUSE worker is its child in that group."""
    pgid = process_group(pid)
    return pgid is not None and pgid != pid


def _mounts_under(path: Path | str) -> list[MountEntry]:
    prefix = str(path)
    return [m for m in read_mounts() if m.mount_point == prefix or m.mount_point.startswith(f"{prefix}/")]


def mounts_under(path: Path | str) -> list[str]:
    """The mount points at or below `path`."""
    return [m.mount_point for m in _mounts_under(path)]


def mounts_at_path(path: Path | str) -> int:
    """How many mounts are stacked exactly at `path`, per /proc/self/mountinfo."""
    return sum(1 for m in read_mounts() if m.mount_point == str(path))


def driver_processes_idle(driver: DriverProcess, workdir: Path) -> bool:
    """Nothing mounted under `workdir` and no juicefs client of this driver running."""
    return not mounts_under(workdir) and not juicefs_pids_under(driver.mount_root)


def cleanup(path: Path) -> None:
    """Leave nothing mounted or running under `path`, whatever state a test ended in.

    The FUSE connections go first: a juicefs 1.4.2 client SIGKILLed while a request to its own
    mount is in flight can wedge, and every later access to that mount then blocks for good.
    Aborted, every pending and future request fails instead; then the clients are killed and
    the mounts lazily unmounted.
    """
    connections = {fusectl.connection_of(m.device) for m in _mounts_under(path) if m.fs_type.split(".")[0] == "fuse"}
    if connections:
        fusectl.abort_connections(fusectl.fusectl_root(), connections)
    for pid in juicefs_pids_under(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for mount_point in sorted(mounts_under(path), key=len, reverse=True):
        with contextlib.suppress(OSError):
            syscalls.unmount(mount_point, lazy=True)


# -- calls and metrics ------------------------------------------------------------------------------------


def expect_rpc_error(code: grpc.StatusCode, call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """Call a stub method, assert it fails with exactly `code`, and return the error details."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        got = exc.code()
        details = exc.details() or ""
        assert got == code, f"expected {code.name}, got {got.name}: {details}"
        return str(details)
    raise AssertionError(f"expected {code.name}, but the call succeeded")


def http_get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def driver_metrics(driver: DriverProcess) -> str:
    return http_get(f"http://127.0.0.1:{driver.metrics_port}/metrics")


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called exactly `name` in Prometheus text exposition."""
    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def counter_value(text: str, name: str) -> float:
    """A counter's value summed over its series, however the client library suffixes it (`name` or `name_total`)."""
    samples = metric_samples(text, name) or metric_samples(text, f"{name}_total")
    return sum(value for _, value in samples)


def recoveries(driver: DriverProcess) -> float:
    """`juicefs_mount_recoveries` summed over volumes, from the driver's own /metrics."""
    return counter_value(driver_metrics(driver), "juicefs_mount_recoveries")
