"""Process mode (`--by-process`): the driver runs one `juicefs mount` per client key on the node.

Every target is a bind of a sub-path of that client's mount point. The driver
watches each client: when one dies or its mount breaks, it remounts and
re-binds every target, so workloads see their files again without acting.

A client is a process group: `juicefs mount` in the foreground is a supervisor
that runs the FUSE server as its child (and restarts that child itself). The
driver starts it as a session leader, watches the leader and kills the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juicefs_csi.errors import AlreadyExists, DriverError, FailedPrecondition, Internal, Unavailable
from juicefs_csi.juicefs.commands import mount_command
from juicefs_csi.juicefs.runner import NOT_FORMATTED, JuiceFS, base_environment
from juicefs_csi.locks import KeyedLocks
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount import fusectl
from juicefs_csi.mount import targets as target_ops
from juicefs_csi.mount.base import PublishedTarget, PublishRequest
from juicefs_csi.mount.health import PathState, probe
from juicefs_csi.mount.mountinfo import MountTableWatch, mounts_at, read_mounts
from juicefs_csi.mount.state import ClientRecord, PublishInputs, StateStore, TargetRecord, fingerprint
from juicefs_csi.volume.secrets import redact
from juicefs_csi.volume.settings import VolumeSettings, parse_volume_settings

log = logging.getLogger("juicefs_csi.process")

JUICEFS_ROOT_INODE = 1
READY_POLL_SECONDS = 0.005
RECOVERY_RETRY_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0
# A stat that hangs this long is a hung client, not a dead one: never a reason to kill it.
HEALTH_PROBE_SECONDS = 5.0


@dataclass
class Client:
    """One running (or recovering) juicefs client and the targets bound to it."""

    record: ClientRecord
    settings: VolumeSettings
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Our own child, to reap; None for a client adopted from an earlier driver run.
    process: subprocess.Popen[bytes] | None = None
    watcher: asyncio.Task[None] | None = None
    stopping: bool = False
    stop_task: asyncio.Task[None] | None = None
    delayed_stop: asyncio.TimerHandle | None = None
    recovery: asyncio.Task[None] | None = None
    recovery_reason: str = ""
    # Publishes between picking this client and recording their target, and controller borrows.
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
        self._creation_locks = KeyedLocks[str]()
        self._target_locks = KeyedLocks[str]()
        self._health_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._fusectl: str | None = None
        config.mount_root.mkdir(parents=True, exist_ok=True)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._fusectl = await asyncio.to_thread(fusectl.fusectl_root)
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
        if self._health_task:
            self._health_task.cancel()
        for client in self.clients.values():
            for task in (client.watcher, client.recovery):
                if task:
                    task.cancel()
            if client.delayed_stop:
                client.delayed_stop.cancel()
                client.delayed_stop = None
            if not client.in_use:
                self._begin_stop(client)
        stops = [c.stop_task for c in self.clients.values() if c.stop_task]
        await asyncio.gather(*stops, return_exceptions=True)
        tasks = [t for t in (self._health_task, *self._tasks) if t]
        tasks += [c.watcher for c in self.clients.values() if c.watcher]
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
        async with self._target_locks.hold(target):
            existing = self.target_index.get(target)
            if existing is not None and existing != key:
                raise AlreadyExists(
                    f"target {target} is already published with a different volume or different mount settings"
                )
            client = await self._client_for(request.settings, request.inputs)
            try:
                published = await self._publish_to(client, target, request)
            finally:
                stop = self._release(client)
        if stop:  # a failed first publish: the client it started goes again
            await asyncio.wait({stop})
        return published

    async def _publish_to(self, client: Client, target: str, request: PublishRequest) -> PublishedTarget:
        """Bind only from a serving client: a dead one is recovered first, and the bind waits for it."""
        wanted = TargetRecord(request.settings.sub_path, request.read_only)
        for attempt in range(2):
            if client.recovery is not None:
                await asyncio.wait({client.recovery}, timeout=self.config.ready_timeout)
            async with client.lock:
                if self.clients.get(client.record.key) is not client:
                    raise Internal(f"the client of volume {request.settings.volume_id} stopped during publish")
                known = client.record.targets.get(target)
                if known is not None and known != wanted:
                    raise AlreadyExists(f"target {target} is already published with different sub-path or access")
                if known is None or not await self._target_serves(client, target):
                    healthy, reason = await self._check(client)
                    if healthy:
                        try:
                            await self._bind_target(client, target, wanted)
                        except DriverError as exc:
                            # The client may have died under the bind: then that is the failure to repair.
                            healthy, reason = await self._check(client)
                            if healthy:
                                raise
                            reason = f"{reason} ({exc.message})"
                    if not healthy:
                        if attempt:
                            raise Unavailable(f"the juicefs client of volume {request.settings.volume_id}: {reason}")
                        self._recover_soon(client, reason)
                        continue
                    client.record.targets[target] = wanted
                    self.target_index[target] = client.record.key
                    self.state.save(client.record)
                record = client.record
                return PublishedTarget(record.volume_id, target, record.mountpoint, record.metrics_port)
        raise AssertionError("unreachable")

    async def unpublish(self, target: str) -> None:
        """Forget the target before unmounting it, so a concurrent recovery never re-binds it."""
        target = target_ops.validate_target(target)
        stop = None
        async with self._target_locks.hold(target):
            key = self.target_index.get(target)
            client = self.clients.get(key) if key else None
            if client is not None:
                async with client.lock:
                    client.record.targets.pop(target, None)
                    self.target_index.pop(target, None)
                    self.state.save(client.record)
            try:
                await target_ops.remove_target(target)
            finally:
                if client is not None:
                    stop = self._stop_if_idle(client)
        if stop:  # the last target: kubelet may count on the volume being released when we answer
            await asyncio.wait({stop})

    @contextlib.asynccontextmanager
    async def borrow(self, settings: VolumeSettings, inputs: PublishInputs) -> AsyncIterator[str]:
        """The client's mount point, held without a target: for the controller's file operations."""
        client = await self._client_for(settings, inputs)
        try:
            yield client.record.mountpoint
        finally:
            stop = self._release(client)
            if stop:
                await asyncio.wait({stop})

    # -- clients -------------------------------------------------------------------------------

    async def _client_for(self, settings: VolumeSettings, inputs: PublishInputs) -> Client:
        """Exactly one client per key, however many publishes race for it.

        The caller becomes a borrower of the returned client, so it cannot stop
        before the caller records a target or calls `_release`.
        """
        key = settings.client_key
        async with self._creation_locks.hold(key):
            while (client := self.clients.get(key)) is not None:
                if not client.stopping:
                    if client.delayed_stop:
                        client.delayed_stop.cancel()
                        client.delayed_stop = None
                    client.borrowers += 1
                    return client
                # Its stop still owns the key's mount point and state; a new client waits for it.
                if client.stop_task is not None and not client.stop_task.done():
                    await asyncio.wait({client.stop_task})
                elif self.clients.get(key) is client:
                    del self.clients[key]
            record = ClientRecord(
                key=key,
                volume_id=settings.volume_id,
                mountpoint=str(self.config.mount_root / key),
                metrics_port=_free_port(self.config.metrics_host),
            )
            client = Client(record, settings, borrowers=1)
            async with client.lock:
                self.state.save_inputs(key, inputs)
                try:
                    await self._launch(client)
                except BaseException:
                    self.state.delete(key)
                    raise
                self.clients[key] = client
            return client

    def _release(self, client: Client) -> asyncio.Task[None] | None:
        """End a borrow; the stop it starts, if it was the last use."""
        client.borrowers -= 1
        return self._stop_if_idle(client)

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
        table = MountTableWatch()
        try:
            try:
                process = _spawn(command.argv, {**base_environment(), **command.env}, log_path)
            except OSError as exc:
                raise Internal(f"cannot start juicefs for volume {record.volume_id}: {exc.strerror}") from None
            client.process, record.pid = process, process.pid
            try:
                await self._wait_ready(client, log_path, table)
            except BaseException:
                await self._kill(client)
                await target_ops.unmount_all(mountpoint)
                raise
        finally:
            table.close()
        client.watcher = asyncio.create_task(self._watch_pid(client, process.pid), name=f"watch-{record.key}")
        self.state.save(record)
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

    async def _wait_ready(self, client: Client, log_path: Path, table: MountTableWatch) -> None:
        """Ready once the mount point is the client's root; looked at whenever the mount table changes,
        and every READY_POLL_SECONDS anyway to notice a client that exited."""
        process = client.process
        assert process is not None
        deadline = time.monotonic() + self.config.ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self._launch_error(client, log_path, f"exited with code {process.returncode}")
            if await asyncio.to_thread(_root_after_change, client.record.mountpoint, table, READY_POLL_SECONDS):
                return
        raise self._launch_error(client, log_path, f"was not ready within {self.config.ready_timeout:.0f}s")

    def _launch_error(self, client: Client, log_path: Path, what: str) -> DriverError:
        tail = redact(_tail(log_path), client.settings.credentials.secret_values())
        message = f"juicefs mount of volume {client.record.volume_id} {what}: {tail}"
        return FailedPrecondition(message) if NOT_FORMATTED in tail else Internal(message)

    def _stop_if_idle(self, client: Client) -> asyncio.Task[None] | None:
        """Stop now (returning the stop), or after the volume's delete delay so a returning workload reuses it."""
        if client.in_use or client.stopping or self.clients.get(client.record.key) is not client:
            return None
        delay = client.settings.delete_delay
        if delay > 0:
            if client.delayed_stop:
                client.delayed_stop.cancel()
            client.delayed_stop = asyncio.get_running_loop().call_later(delay, self._begin_stop, client)
            return None
        return self._begin_stop(client)

    def _begin_stop(self, client: Client) -> asyncio.Task[None] | None:
        """Marks the client stopping at once, so no publish picks it up while the stop runs."""
        client.delayed_stop = None
        if client.stopping:
            return client.stop_task
        if client.in_use or self.clients.get(client.record.key) is not client:
            return None
        client.stopping = True
        client.stop_task = self._background(self._stop(client), f"stop-{client.record.key}")
        return client.stop_task

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _stop(self, client: Client) -> None:
        """Unmount first so the client exits cleanly; kill it only if it will not."""
        record = client.record
        try:
            async with client.lock:
                for task in (client.watcher, client.recovery):
                    if task and task is not asyncio.current_task():
                        task.cancel()
                # Found while still mounted: once detached, only the connection id can free a stuck client.
                connections = await asyncio.to_thread(_client_connections, record)
                await target_ops.unmount_all(record.mountpoint)
                if record.pid and not await _exited(record.pid, record.mountpoint, STOP_GRACE_SECONDS):
                    await self._kill(client, connections)
                self._reap(client, record.pid)
                with contextlib.suppress(OSError):
                    os.rmdir(record.mountpoint)
                self.state.delete(record.key)
                with contextlib.suppress(KeyError):
                    self.metrics.mount_clients.remove(
                        self.metrics.node_name, record.volume_id, record.mountpoint, str(record.metrics_port)
                    )
                log.info("juicefs client stopped", extra={"volume_id": record.volume_id, "client": record.key})
        except Exception:
            log.exception("stopping juicefs client failed", extra={"client": record.key})
        finally:
            # Even a failed stop gives up the key: the next client unmounts whatever is left.
            if self.clients.get(record.key) is client:
                del self.clients[record.key]

    # -- recovery ------------------------------------------------------------------------------

    async def _adopt(self, client: Client) -> None:
        """After a driver restart: keep a healthy client, repair a dead one, stop an unused one."""
        record = client.record
        async with client.lock:
            if not client.in_use:
                log.info("stopping juicefs client without targets", extra={"client": record.key})
                self._stop_if_idle(client)
                return
            healthy, reason = await self._check(client)
            if not healthy:
                self._recover_soon(client, f"after driver restart: {reason}")
                return
            client.watcher = asyncio.create_task(self._watch_pid(client, record.pid), name=f"watch-{record.key}")
            try:
                for target, wanted in record.targets.items():
                    if not await self._target_serves(client, target):
                        await self._bind_target(client, target, wanted)
            except DriverError as exc:
                self._recover_soon(client, f"after driver restart: {exc.message}")
            log.info("adopted running juicefs client", extra={"client": record.key, "pid": record.pid})
            self.metrics.mount_clients.labels(
                self.metrics.node_name, record.volume_id, record.mountpoint, str(record.metrics_port)
            ).set(1)

    async def _watch_pid(self, client: Client, pid: int) -> None:
        """pidfd tells us at once when the client's leader exits, whether or not it is our child."""
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
        self._reap(client, pid)
        if client.stopping or client.record.pid != pid:
            return
        log.warning("juicefs client died", extra={"client": client.record.key, "pid": pid, "reason": reason})
        self._recover_soon(client, reason)

    def _recover_soon(self, client: Client, reason: str) -> None:
        """At most one recovery per client; a failure reported meanwhile makes it go round once more."""
        client.recovery_reason = reason
        if client.recovery is None:
            client.recovery = self._background(self._recover(client), f"recover-{client.record.key}")

    async def _recover(self, client: Client) -> None:
        """Remount and re-bind until it works or nobody uses the volume any more."""
        try:
            while client.recovery_reason:
                async with client.lock:
                    reason, client.recovery_reason = client.recovery_reason, ""
                    if client.stopping or not client.in_use or self.clients.get(client.record.key) is not client:
                        return
                    healthy, _ = await self._check(client)
                    if healthy:  # repaired meanwhile, or a stale report
                        continue
                    try:
                        await self._remount(client)
                    except (DriverError, OSError) as exc:
                        client.recovery_reason = client.recovery_reason or reason
                        error = exc.message if isinstance(exc, DriverError) else str(exc)
                        log.error("recovery failed, retrying", extra={"client": client.record.key, "error": error})
                    else:
                        record = client.record
                        self.metrics.mount_recoveries.labels(self.metrics.node_name, record.volume_id).inc()
                        log.info(
                            "recovered mount point",
                            extra={
                                "volume_id": record.volume_id,
                                "client": record.key,
                                "reason": reason,
                                "pid": record.pid,
                                "targets": len(record.targets),
                            },
                        )
                        continue
                await asyncio.sleep(RECOVERY_RETRY_SECONDS)
        finally:
            client.recovery = None

    async def _remount(self, client: Client) -> None:
        """The whole old group goes first: an orphaned FUSE worker would serve on, unsupervised.

        Targets stay on the dead mount (erroring) until the new bind replaces them:
        unmounted, they would be bare directories on the node's disk.
        """
        record = client.record
        if client.watcher:
            client.watcher.cancel()
            client.watcher = None
        await self._kill(client)
        await self._launch(client)
        for target, wanted in record.targets.items():
            await self._bind_target(client, target, wanted)
        self.state.save(record)

    async def _health_loop(self) -> None:
        """Catches what the leader's exit does not: a mount that breaks or is detached under a live client."""
        while True:
            await asyncio.sleep(self.config.health_interval)
            for client in list(self.clients.values()):
                if client.stopping or client.recovery or client.lock.locked() or not client.record.targets:
                    continue
                try:
                    healthy, reason = await self._check(client)
                except Exception:
                    log.exception("health check failed", extra={"client": client.record.key})
                    continue
                if not healthy and not (client.stopping or client.recovery or client.lock.locked()):
                    log.warning("mount point broken", extra={"client": client.record.key, "reason": reason})
                    self._recover_soon(client, reason)

    async def _check(self, client: Client) -> tuple[bool, str]:
        """Healthy: the leader runs and the mount point is still the client's juicefs root.

        A hung mount counts as healthy while a FUSE server runs: killing a client that is
        slow would lose its writes.
        """
        record = client.record
        if not _is_client_leader(record.pid, record.mountpoint):
            return False, f"juicefs client {record.pid} is not running"
        state, reason = await probe(record.mountpoint, HEALTH_PROBE_SECONDS, JUICEFS_ROOT_INODE)
        if state in (PathState.BROKEN, PathState.MISSING, PathState.NOT_MOUNTED):
            return False, reason
        if state is PathState.HUNG and not [p for p in _client_group(record.pid, record.mountpoint) if p != record.pid]:
            # Its supervisor could not restart the FUSE server: the new one is stuck closing, while it
            # execs, a file on the very mount it is to serve. Nothing will ever answer this mount again.
            return False, f"{reason}, and juicefs runs no FUSE server for it"
        return True, ""

    # -- helpers -------------------------------------------------------------------------------

    async def _bind_target(self, client: Client, target: str, wanted: TargetRecord) -> None:
        """Only ever from a live client mount: a bind of the bare directory below would serve local disk."""
        mountpoint = client.record.mountpoint
        state, reason = await probe(mountpoint, HEALTH_PROBE_SECONDS, JUICEFS_ROOT_INODE)
        if state is not PathState.HEALTHY:
            raise Unavailable(f"the juicefs client of volume {client.record.volume_id} is not serving: {reason}")
        source = os.path.join(mountpoint, wanted.sub_path)
        try:
            if wanted.sub_path:
                await asyncio.to_thread(os.makedirs, source, 0o777, True)
            await target_ops.replace_bind(source, target, wanted.read_only)
        except OSError as exc:
            raise Internal(f"bind {target}: {exc.strerror}") from None

    async def _target_serves(self, client: Client, target: str) -> bool:
        """Bound to this client's current mount (not a dead or replaced one) and answering."""
        entries = await asyncio.to_thread(read_mounts)
        at_target, at_client = mounts_at(entries, target), mounts_at(entries, client.record.mountpoint)
        if not at_target or not at_client or not at_target[-1].is_juicefs:
            return False
        if at_target[-1].device != at_client[-1].device:
            return False
        state, _ = await probe(target)
        return state is PathState.HEALTHY

    async def _kill(self, client: Client, connections: set[int] | None = None) -> None:
        """Kill the whole group (juicefs' supervisor and the FUSE server it restarts), then abort its connections.

        A supervisor thread can be blocked on a request to its own mount that the
        killed worker had already read: it never returns, the supervisor keeps the
        FUSE fd, and the connection with every access to the old mount (the driver's
        own included) hangs for good. Aborting the connection releases all of them.
        """
        record = client.record
        pid, mountpoint = record.pid, record.mountpoint
        found = await asyncio.to_thread(_client_connections, record)
        if connections is not None and connections - found:
            # Found earlier, before a detach: the id may have been reused since, by a mount of someone else.
            found |= connections - await asyncio.to_thread(_foreign_connections, record)
        if pid and _client_group(pid, mountpoint):
            _kill_group(pid)
        self._abort(found)
        if pid and not await _exited(pid, mountpoint, STOP_GRACE_SECONDS):
            log.error("juicefs client does not exit", extra={"client": record.key, "pid": pid})
        self._reap(client, pid)

    def _abort(self, connections: set[int]) -> None:
        fusectl.abort_connections(self._fusectl, connections)

    @staticmethod
    def _reap(client: Client, pid: int) -> None:
        """Our own child is reaped through its Popen; an adopted leader only if we are its reaper (pid 1)."""
        if not pid:
            return
        if client.process is not None and client.process.pid == pid:
            client.process.poll()
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


async def _exited(pid: int, mountpoint: str, timeout: float) -> bool:
    """Whether the client's process group is gone within `timeout`."""
    deadline = time.monotonic() + timeout
    while _client_group(pid, mountpoint):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _client_connections(record: ClientRecord) -> set[int]:
    """The FUSE connections of a client: of its mounts (mount point and targets) and held by its processes."""
    paths = {record.mountpoint, *record.targets}
    connections = {fusectl.connection_of(e.device) for e in read_mounts() if e.is_juicefs and e.mount_point in paths}
    if record.pid:
        connections |= _group_connections(record.pid, record.mountpoint)
    return connections


def _foreign_connections(record: ClientRecord) -> set[int]:
    """The device ids of every mount that is not the client's."""
    paths = {record.mountpoint, *record.targets}
    return {fusectl.connection_of(e.device) for e in read_mounts() if e.mount_point not in paths}


def _group_connections(pgid: int, mountpoint: str) -> set[int]:
    """Connections behind the /dev/fuse fds of the group's threads, zombie leaders' live threads included.

    Needs a kernel that names the connection in fdinfo; where it does not, the mounts must tell.
    """
    connections: set[int] = set()
    for entry in os.scandir("/proc"):
        found = _proc_state(int(entry.name)) if entry.name.isdigit() else None
        if found is None or found[1] != pgid:
            continue
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{entry.name}/task"):
                base = f"/proc/{entry.name}/task/{task.name}"
                if not _runs_for_path(f"{base}/cmdline", mountpoint):
                    continue
                for fd in os.scandir(f"{base}/fd"):
                    with contextlib.suppress(OSError, ValueError):
                        if os.readlink(fd.path) != "/dev/fuse":
                            continue
                        with open(f"{base}/fdinfo/{fd.name}", encoding="ascii") as handle:
                            for line in handle:
                                if line.startswith("fuse_connection:"):
                                    connections.add(int(line.split(":", 1)[1]))
                break  # threads share their fd table
    return connections


def _spawn(argv: tuple[str, ...], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A client in its own session, logging to its file.

    Not asyncio's subprocess: its transport kills a running child when it is
    collected, and clients must outlive the driver. Not in a worker thread either:
    a spawn there outlives a cancelled caller and would leave an untracked client.
    """
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, start_new_session=True
        )
    finally:
        os.close(log_fd)


def _root_after_change(path: str, table: MountTableWatch, timeout: float) -> bool:
    """Whether `path` is a juicefs root, now or after the next mount table change within `timeout`."""
    return _is_juicefs_root(path) or (table.wait(timeout) and _is_juicefs_root(path))


def _is_juicefs_root(path: str) -> bool:
    try:
        return os.stat(path).st_ino == JUICEFS_ROOT_INODE
    except OSError:
        return False


def _proc_state(pid: int) -> tuple[str, int] | None:
    """A process' state letter and process group."""
    return _proc_state_at(f"/proc/{pid}")


def _proc_state_at(proc: str) -> tuple[str, int] | None:
    """From `status`, not `stat`: reading `stat` blocks while the process is stuck in execve.

    As the FUSE worker juicefs restarts can be, closing its inherited files on the mount it is to serve.
    """
    state, pgid = "", -1
    try:
        with open(f"{proc}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("State:"):
                    state = line.split()[1]
                elif line.startswith("NSpgid:"):
                    pgid = int(line.split()[1])
                    break
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None
    return (state, pgid) if state and pgid >= 0 else None


def _runs_for(pid: int, mountpoint: str) -> bool:
    return _runs_for_path(f"/proc/{pid}/cmdline", mountpoint)


def _runs_for_path(cmdline: str, mountpoint: str) -> bool:
    """A juicefs process of this mount point: juicefs joins its argv into one string, the path stays a word."""
    try:
        with open(cmdline, "rb") as handle:
            words = b" " + handle.read().replace(b"\0", b" ") + b" "
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b" " + os.fsencode(mountpoint) + b" " in words


def _is_client_leader(pid: int, mountpoint: str) -> bool:
    """Alive, not a zombie, leading its own group, and our client: a recorded pid may have been reused."""
    found = _proc_state(pid) if pid else None
    return found is not None and found[0] != "Z" and found[1] == pid and _runs_for(pid, mountpoint)


def _client_group(pgid: int, mountpoint: str) -> list[int]:
    """Live members of the client's process group that run for its mount point."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        found = _proc_state(int(entry.name))
        if found and found[1] == pgid and _live_for(int(entry.name), found[0], mountpoint):
            members.append(int(entry.name))
    return members


def _live_for(pid: int, state: str, mountpoint: str) -> bool:
    """A zombie whose other threads still run (stuck in the kernel on its own mount) has not gone yet."""
    if state != "Z":
        return _runs_for(pid, mountpoint)
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            found = _proc_state_at(f"/proc/{pid}/task/{task.name}")
            if found and found[0] != "Z" and _runs_for_path(f"/proc/{pid}/task/{task.name}/cmdline", mountpoint):
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
