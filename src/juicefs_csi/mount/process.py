"""Process mode (`--by-process`): the driver runs one `juicefs mount` per client key on the node.

Every target is a bind of a sub-path of that client's mount point. The driver
watches each client: when one dies or its mount breaks, it remounts and
re-binds every target, so workloads see their files again without acting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juicefs_csi.errors import AlreadyExists, DriverError, FailedPrecondition, Internal
from juicefs_csi.juicefs.commands import mount_command
from juicefs_csi.juicefs.runner import NOT_FORMATTED, JuiceFS, base_environment
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount import targets as target_ops
from juicefs_csi.mount.base import PublishedTarget, PublishRequest
from juicefs_csi.mount.health import PathState, probe
from juicefs_csi.mount.state import ClientRecord, PublishInputs, StateStore, TargetRecord, fingerprint
from juicefs_csi.volume.secrets import redact
from juicefs_csi.volume.settings import VolumeSettings, parse_volume_settings

log = logging.getLogger("juicefs_csi.process")

JUICEFS_ROOT_INODE = 1
READY_POLL_SECONDS = 0.005
RECOVERY_RETRY_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0


@dataclass
class Client:
    """One running (or recovering) juicefs client and the targets bound to it."""

    record: ClientRecord
    settings: VolumeSettings
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    process: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None
    stopping: bool = False
    delayed_stop: asyncio.TimerHandle | None = None
    borrowers: int = 0

    @property
    def in_use(self) -> bool:
        return bool(self.record.targets) or self.borrowers > 0


@dataclass(frozen=True)
class ProcessMounterConfig:
    state_dir: Path
    mount_root: Path
    metrics_host: str = "0.0.0.0"
    ready_timeout: float = 30.0
    health_interval: float = 2.0
    allowed_target_prefix: str = ""


class ProcessMounter:
    def __init__(self, config: ProcessMounterConfig, juicefs: JuiceFS, metrics: Metrics) -> None:
        self.config = config
        self.juicefs = juicefs
        self.metrics = metrics
        self.state = StateStore(config.state_dir)
        self.clients: dict[str, Client] = {}
        self.target_index: dict[str, str] = {}
        self._creation_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._target_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._health_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        config.mount_root.mkdir(parents=True, exist_ok=True)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        for record, inputs in self.state.load_all():
            if inputs is None:
                log.warning("dropping client state without inputs", extra={"client": record.key})
                self.state.delete(record.key)
                continue
            try:
                settings = parse_volume_settings(
                    inputs.volume_id, inputs.secrets, inputs.volume_context, inputs.mount_flags
                )
            except DriverError as exc:
                log.error("cannot restore client", extra={"client": record.key, "error": exc.message})
                continue
            client = Client(record, settings)
            self.clients[record.key] = client
            self.target_index.update(dict.fromkeys(record.targets, record.key))
            await self._adopt(client)
        self._health_task = asyncio.create_task(self._health_loop(), name="process-mount-health")

    async def close(self) -> None:
        """Idle clients (no targets, e.g. lingering after controller work) stop; the rest stay up."""
        idle = [c for c in self.clients.values() if not c.in_use and not c.stopping]
        for client in idle:
            if client.delayed_stop:
                client.delayed_stop.cancel()
            client.stopping = True
        await asyncio.gather(*(self._stop(c) for c in idle))
        tasks = [t for t in (self._health_task, *self._tasks) if t]
        tasks += [c.watcher for c in self.clients.values() if c.watcher]
        for client in self.clients.values():
            if client.delayed_stop:
                client.delayed_stop.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- Mounter -------------------------------------------------------------------------------

    def published(self, target: str) -> PublishedTarget | None:
        key = self.target_index.get(target)
        client = self.clients.get(key) if key else None
        if client is None:
            return None
        record = client.record
        return PublishedTarget(record.volume_id, target, record.mountpoint, record.metrics_port)

    async def publish(self, request: PublishRequest) -> PublishedTarget:
        target = target_ops.validate_target(request.target, self.config.allowed_target_prefix)
        key = request.settings.client_key
        async with self._target_locks[target]:
            existing = self.target_index.get(target)
            if existing is not None and existing != key:
                raise AlreadyExists(
                    f"target {target} is already published with a different volume or different mount settings"
                )
            client = await self._client_for(request.settings, request.inputs)
            async with client.lock:
                if client.stopping or self.clients.get(key) is not client:
                    raise Internal(f"the client of volume {request.settings.volume_id} stopped during publish")
                wanted = TargetRecord(request.settings.sub_path, request.read_only)
                known = client.record.targets.get(target)
                if known is not None and known != wanted:
                    raise AlreadyExists(f"target {target} is already published with different sub-path or access")
                if known is None or not await self._target_serves(client, target):
                    await self._bind_target(client, target, wanted)
                    client.record.targets[target] = wanted
                    self.target_index[target] = key
                    self.state.save(client.record)
            record = client.record
            return PublishedTarget(record.volume_id, target, record.mountpoint, record.metrics_port)

    async def unpublish(self, target: str) -> None:
        target = target_ops.validate_target(target)
        async with self._target_locks[target]:
            key = self.target_index.get(target)
            await target_ops.remove_target(target)
            client = self.clients.get(key) if key else None
            if client is None:
                return
            async with client.lock:
                client.record.targets.pop(target, None)
                self.target_index.pop(target, None)
                self.state.save(client.record)
                if not client.in_use:
                    self._schedule_stop(client)
        self._target_locks.pop(target, None)

    @contextlib.asynccontextmanager
    async def borrow(self, settings: VolumeSettings, inputs: PublishInputs) -> AsyncIterator[str]:
        """The client's mount point, held without a target: for the controller's file operations."""
        client = await self._client_for(settings, inputs)
        client.borrowers += 1
        try:
            yield client.record.mountpoint
        finally:
            client.borrowers -= 1
            if not client.in_use:
                self._schedule_stop(client)

    # -- clients -------------------------------------------------------------------------------

    async def _client_for(self, settings: VolumeSettings, inputs: PublishInputs) -> Client:
        """Exactly one client per key, however many publishes race for it."""
        key = settings.client_key
        async with self._creation_locks[key]:
            client = self.clients.get(key)
            if client is not None and not client.stopping:
                if client.delayed_stop:
                    client.delayed_stop.cancel()
                    client.delayed_stop = None
                return client
            if client is not None:
                async with client.lock:
                    pass  # a stop in progress finishes before the key is reused
            record = ClientRecord(
                key=key,
                volume_id=settings.volume_id,
                mountpoint=str(self.config.mount_root / key),
                metrics_port=_free_port(self.config.metrics_host),
            )
            client = Client(record, settings)
            async with client.lock:
                self.state.save_inputs(key, inputs)
                try:
                    await self._launch(client)
                except BaseException:
                    self.state.delete(key)
                    raise
                self.clients[key] = client
                self.state.save(record)
            return client

    async def _launch(self, client: Client) -> None:
        """Format if asked to, start the client and wait until its mount point answers."""
        settings, record = client.settings, client.record
        creds = settings.credentials
        if creds.formats:
            marker = fingerprint(record.key, creds.meta.url_without_password, creds.name, creds.storage, creds.bucket)
            if not self.state.is_formatted(marker):
                await self.juicefs.format(creds)
                self.state.mark_formatted(marker)
        mountpoint = record.mountpoint
        await target_ops.unmount_all(mountpoint)
        await asyncio.to_thread(os.makedirs, mountpoint, exist_ok=True)
        command = mount_command(
            self.juicefs.binary,
            creds,
            settings.options,
            mountpoint,
            f"{self.config.metrics_host}:{record.metrics_port}",
        )
        log_path = self.state.log_path(record.key)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv,
                env={**base_environment(), **command.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        client.process, record.pid, client.stopping = process, process.pid, False
        try:
            await self._wait_ready(client, log_path)
        except BaseException:
            await self._kill(process.pid)
            await target_ops.unmount_all(mountpoint)
            raise
        client.watcher = asyncio.create_task(self._watch_child(client, process), name=f"watch-{record.key}")
        self.metrics.mount_clients.labels(
            self.metrics.node_name, record.volume_id, mountpoint, str(record.metrics_port)
        ).set(1)
        log.info(
            "juicefs client ready",
            extra={
                "volume_id": record.volume_id,
                "client": record.key,
                "pid": process.pid,
                "metrics_port": record.metrics_port,
                "meta": str(creds.meta),
            },
        )

    async def _wait_ready(self, client: Client, log_path: Path) -> None:
        process = client.process
        assert process is not None
        deadline = time.monotonic() + self.config.ready_timeout
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise self._launch_error(client, log_path, f"exited with code {process.returncode}")
            if await asyncio.to_thread(_is_juicefs_root, client.record.mountpoint):
                return
            await asyncio.sleep(READY_POLL_SECONDS)
        raise self._launch_error(client, log_path, f"was not ready within {self.config.ready_timeout:.0f}s")

    def _launch_error(self, client: Client, log_path: Path, what: str) -> DriverError:
        tail = redact(_tail(log_path), client.settings.credentials.secret_values())
        message = f"juicefs mount of volume {client.record.volume_id} {what}: {tail}"
        return FailedPrecondition(message) if NOT_FORMATTED in tail else Internal(message)

    def _schedule_stop(self, client: Client) -> None:
        """Stop now, or after the volume's delete delay so a returning workload reuses the client."""
        delay = client.settings.delete_delay
        if delay > 0:
            client.delayed_stop = asyncio.get_running_loop().call_later(delay, self._stop_if_unused, client)
        else:
            self._stop_if_unused(client)

    def _stop_if_unused(self, client: Client) -> None:
        client.delayed_stop = None
        if client.in_use:
            return
        client.stopping = True
        self._background(self._stop(client), f"stop-{client.record.key}")

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self, client: Client) -> None:
        """Unmount first so the client exits cleanly; kill it only if it will not."""
        async with client.lock:
            if client.in_use:
                client.stopping = False
                return
            record = client.record
            if client.watcher:
                client.watcher.cancel()
            await target_ops.unmount_all(record.mountpoint)
            if record.pid:
                await self._wait_exit(record.pid, STOP_GRACE_SECONDS)
            with contextlib.suppress(OSError):
                os.rmdir(record.mountpoint)
            self.state.delete(record.key)
            with contextlib.suppress(KeyError):
                self.metrics.mount_clients.remove(
                    self.metrics.node_name, record.volume_id, record.mountpoint, str(record.metrics_port)
                )
            if self.clients.get(record.key) is client:
                del self.clients[record.key]
            log.info("juicefs client stopped", extra={"volume_id": record.volume_id, "client": record.key})

    # -- recovery ------------------------------------------------------------------------------

    async def _adopt(self, client: Client) -> None:
        """After a driver restart: keep a healthy client, repair a dead one."""
        record = client.record
        state, _ = await probe(record.mountpoint)
        if record.pid and _alive(record.pid) and state is PathState.HEALTHY:
            client.watcher = asyncio.create_task(self._watch_pid(client, record.pid), name=f"watch-{record.key}")
            for target, wanted in record.targets.items():
                if not await self._target_serves(client, target):
                    await self._bind_target(client, target, wanted)
            log.info("adopted running juicefs client", extra={"client": record.key, "pid": record.pid})
            self.metrics.mount_clients.labels(
                self.metrics.node_name, record.volume_id, record.mountpoint, str(record.metrics_port)
            ).set(1)
        else:
            self._recover_soon(client, "client not running after driver restart")

    async def _watch_child(self, client: Client, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._on_exit(client, process.pid, f"client exited with code {code}")

    async def _watch_pid(self, client: Client, pid: int) -> None:
        """pidfd tells us at once when a process that is not our child exits."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._on_exit(client, pid, "client process is gone")
            return
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        self._on_exit(client, pid, "client process exited")

    def _on_exit(self, client: Client, pid: int, reason: str) -> None:
        if client.stopping or client.record.pid != pid:
            return
        log.warning("juicefs client died", extra={"client": client.record.key, "pid": pid, "reason": reason})
        self._recover_soon(client, reason)

    def _recover_soon(self, client: Client, reason: str) -> None:
        self._background(self._recover(client, reason), f"recover-{client.record.key}")

    async def _recover(self, client: Client, reason: str) -> None:
        """Remount and re-bind until it works or nobody uses the volume any more."""
        while True:
            async with client.lock:
                if client.stopping or not client.in_use or self.clients.get(client.record.key) is not client:
                    return
                record = client.record
                try:
                    await self._kill(record.pid)
                    for target in record.targets:
                        await target_ops.unmount_all(target)
                    await self._launch(client)
                    for target, wanted in record.targets.items():
                        await self._bind_target(client, target, wanted)
                    self.state.save(record)
                except DriverError as exc:
                    log.error("recovery failed, retrying", extra={"client": record.key, "error": exc.message})
                else:
                    self.metrics.mount_recoveries.labels(self.metrics.node_name, record.volume_id).inc()
                    log.info(
                        "recovered mount point",
                        extra={
                            "volume_id": record.volume_id,
                            "client": record.key,
                            "reason": reason,
                            "targets": len(record.targets),
                        },
                    )
                    return
            await asyncio.sleep(RECOVERY_RETRY_SECONDS)

    async def _health_loop(self) -> None:
        """Catches what process exit does not: a mount that breaks under a live client."""
        while True:
            await asyncio.sleep(self.config.health_interval)
            for client in list(self.clients.values()):
                if client.stopping or client.lock.locked() or not client.record.targets:
                    continue
                state, reason = await probe(client.record.mountpoint)
                if state in (PathState.BROKEN, PathState.MISSING):
                    log.warning("mount point broken", extra={"client": client.record.key, "reason": reason})
                    self._recover_soon(client, reason)

    # -- helpers -------------------------------------------------------------------------------

    async def _bind_target(self, client: Client, target: str, wanted: TargetRecord) -> None:
        source = os.path.join(client.record.mountpoint, wanted.sub_path)
        if wanted.sub_path:
            await asyncio.to_thread(os.makedirs, source, 0o777, True)
        await target_ops.unmount_all(target)
        try:
            await target_ops.bind(source, target, wanted.read_only)
        except OSError as exc:
            raise Internal(f"bind {target}: {exc.strerror}") from None

    async def _target_serves(self, client: Client, target: str) -> bool:
        entries = await target_ops.mount_entries(target)
        if not entries or not entries[-1].is_juicefs:
            return False
        state, _ = await probe(target)
        return state is PathState.HEALTHY

    async def _kill(self, pid: int) -> None:
        """The client is a process group: juicefs' own supervisor and the FUSE server it restarts."""
        if pid and _group_alive(pid):
            _kill_group(pid)
            await self._wait_exit(pid, STOP_GRACE_SECONDS)

    async def _wait_exit(self, pid: int, timeout: float) -> None:
        """Give the client's process group `timeout` to exit, then SIGKILL it and wait as long again."""
        for attempt in range(2):
            deadline = time.monotonic() + timeout
            while _group_alive(pid):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            else:
                return
            if attempt == 0:
                _kill_group(pid)
        log.error("juicefs client does not exit", extra={"pid": pid})


def _is_juicefs_root(path: str) -> bool:
    try:
        return os.stat(path).st_ino == JUICEFS_ROOT_INODE
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _group_alive(pgid: int) -> bool:
    """Any live member of the process group the client was started in (it leads its own session)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1" if host in ("0.0.0.0", "") else host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 4096, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - limit))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
