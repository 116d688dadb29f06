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
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=AccessMode(mode=mode))
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
        return [
            pid
            for pid, argv in juicefs_processes()
            if any(str(self.mount_root) in a for a in argv) and not is_supervised_worker(pid)
        ]

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


# -- helpers for the CSI behaviour tests (appended) -----------------------------------------------


def expect_rpc_error(code: grpc.StatusCode, call: object, *args: object, **kwargs: object) -> str:
    """Call a stub method, assert it fails with exactly `code`, and return the error details."""
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except grpc.RpcError as exc:
        got = exc.code()  # type: ignore[attr-defined]
        details = exc.details() or ""  # type: ignore[attr-defined]
        assert got == code, f"expected {code.name}, got {got.name}: {details}"
        return str(details)
    raise AssertionError(f"expected {code.name}, but the call succeeded")


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll `predicate()` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = predicate()  # type: ignore[operator]
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def mounts_at_path(path: Path | str) -> int:
    """How many mounts are stacked exactly at `path`, per /proc/self/mountinfo."""
    return sum(1 for m in read_mounts() if m.mount_point == str(path))


def http_get(url: str, timeout: float = 10.0) -> str:
    import urllib.request  # noqa: PLC0415 - appended helper, keeps the module's imports untouched

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def driver_metrics(driver: DriverProcess) -> str:
    return http_get(f"http://127.0.0.1:{driver.metrics_port}/metrics")


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called exactly `name` in Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def driver_processes_idle(driver: DriverProcess, workdir: Path) -> bool:
    """Nothing mounted under `workdir` and no juicefs client of this driver running."""
    return not mounts_under(workdir) and not [
        pid for pid, argv in juicefs_processes() if any(str(driver.mount_root) in a for a in argv)
    ]


# -- slow failures, run once in the background ---------------------------------------------------------

from concurrent.futures import Future, ThreadPoolExecutor  # noqa: E402 - appended section

#
# A client that cannot reach its metadata engine is given up on only after the driver's ready
# timeout (30 s). Tests that need such a failure start all of them together, each on a private
# driver, so the waits overlap each other and the rest of the run; each test then reads the
# recorded outcome.


@dataclass(frozen=True)
class PublishOutcome:
    """What one publish on a private driver ended with, recorded before that driver went away."""

    secrets: dict[str, str]
    elapsed: float
    code: grpc.StatusCode
    details: str
    log_text: str
    leftovers: list[str]
    argv_leaks: list[str]


def _secret_token(prefix: str) -> str:
    import secrets  # noqa: PLC0415

    return f"{prefix}{secrets.token_hex(12)}"


# name -> (the test that reads it, the Secret of the failing publish)
SLOW_FAILURES: dict[str, tuple[str, dict[str, str]]] = {
    "unreachable-redis": (
        "test_unreachable_redis_fails_in_bounded_time",
        {"name": "unreachable", "metaurl": "redis://127.0.0.1:1/1"},
    ),
    "unreachable-redis-with-secrets": (
        "test_no_secret_in_errors_or_the_log_when_publish_fails",
        {
            "name": "unreachable",
            "metaurl": f"redis://:{_secret_token('PWSLOW')}@127.0.0.1:1/1",
            "access-key": _secret_token("AKSLOW"),
            "secret-key": _secret_token("SKSLOW"),
            "envs": f'{{"JFS_SLOW_TOKEN": "{_secret_token("ENVSLOW")}"}}',
        },
    ),
}
_slow_runs: dict[str, Future[PublishOutcome]] = {}
_slow_pool: ThreadPoolExecutor | None = None


def _url_password(metaurl: str) -> set[str]:
    userinfo = metaurl.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
    return {userinfo.partition(":")[2]} - {""}


def _argv_leaks(values: set[str]) -> set[str]:
    """`pid: argv` of every process whose command line holds one of `values`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if any(value in argv for value in values if len(value) >= 3):
                    found.add(f"{entry.name}: {argv[:200]}")
    return found


def _failing_publish(secrets: dict[str, str]) -> PublishOutcome:
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="jfs-"))
    try:
        with running_driver(workdir / "driver") as driver:
            target = workdir / "pods/slow/mount"
            started = time.monotonic()
            call = driver.node.NodePublishVolume.future(
                csi_pb2.NodePublishVolumeRequest(
                    volume_id="pv-slow", target_path=str(target), volume_capability=capability(), secrets=secrets
                ),
                timeout=120,
            )
            argv_leaks: set[str] = set()
            while not call.done():  # meanwhile, what every process on the node shows in its argv
                argv_leaks.update(_argv_leaks(set(secrets.values()) | _url_password(secrets.get("metaurl", ""))))
                time.sleep(0.1)
            code, details = call.code(), call.details() or ""
            elapsed = time.monotonic() - started
            leftovers = mounts_under(workdir) + [
                f"juicefs pid {pid}" for pid, argv in juicefs_processes() if any(str(workdir) in a for a in argv)
            ]
            log_text = driver.log_text()
        return PublishOutcome(secrets, elapsed, code, str(details), log_text, leftovers, sorted(argv_leaks))
    finally:
        cleanup(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def start_slow_failures(selected_tests: set[str]) -> None:
    """Start every slow failure some selected test will read (once per session)."""
    global _slow_pool  # noqa: PLW0603 - one pool for the session
    for name, (reader, secrets) in SLOW_FAILURES.items():
        if name in _slow_runs or reader not in selected_tests:
            continue
        if _slow_pool is None:
            _slow_pool = ThreadPoolExecutor(max_workers=len(SLOW_FAILURES), thread_name_prefix="slow-failure")
        _slow_runs[name] = _slow_pool.submit(_failing_publish, secrets)


def slow_failure(name: str, timeout: float = 150) -> PublishOutcome:
    if name not in _slow_runs:
        start_slow_failures({SLOW_FAILURES[name][0]})
    return _slow_runs[name].result(timeout=timeout)
