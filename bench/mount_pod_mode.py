"""Benchmark of mount pod mode: what one busy node costs the API server, in memory and in latency.

One node with 1,000 app pods over 100 volumes, each volume served by a mount pod
that runs the real juicefs client (SQLite metadata, local `file` storage). The
Kubernetes API is the in-process emulator, the node's kubelet is the test pod
runner (it runs mount pods and app pods as local processes), and the node plugin
is a separate process, so its memory is its own.

    .venv/bin/python -m bench.mount_pod_mode [--app-pods 1000 --volumes 100] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightkube.resources.core_v1 import Pod

from bench._report import (
    DOCS,
    Machine,
    load_average,
    median,
    mib,
    ms,
    p90,
    proc_status_kib,
    verdict,
    write_docs,
)
from juicefs_csi.kube.client import KubeSettings, TokenBucket, make_client, request_counter
from juicefs_csi.kube.informer import Event
from juicefs_csi.kube.node_pods import NodePods
from juicefs_csi.metrics import Metrics
from juicefs_csi.mount import pod as mount_pod
from juicefs_csi.mount import targets as mount_targets
from juicefs_csi.mount.base import PublishRequest
from juicefs_csi.mount.pod import PodMounter, PodMounterConfig
from juicefs_csi.mount.state import PublishInputs
from juicefs_csi.mountpod import spec as mountpod_spec
from juicefs_csi.mountpod.names import APP_NAME_MOUNT, LABEL_APP_NAME, reference_key, settings_hash
from juicefs_csi.mountpod.spec import MountPodEnvironment
from juicefs_csi.node.global_config import GlobalConfigWatcher
from juicefs_csi.node.reconciler import SAFETY_PASS_SECONDS, Reconciler
from juicefs_csi.volume.settings import parse_volume_settings

if TYPE_CHECKING:
    from tests.support.kube import Emulator, KubeAPI
    from tests.support.podrunner import PodRunner

# Parent-only modules (the emulator, the pod runner, test helpers) are imported inside the functions that
# use them: the node plugin child runs this same module and must load only what a node plugin loads.

REPO = Path(__file__).resolve().parent.parent
JUICEFS = str(Path(sys.executable).with_name("juicefs"))
NODE = "bench-node"
MOUNT_NAMESPACE = "kube-system"
APP_NAMESPACE = "bench-apps"
PRIORITY_CLASS = "juicefs-mount-priority-nonpreempting"
MOUNT_CONTAINER = "jfs-mount"
BENCH_AGENT = "juicefs-bench"
# Options that keep 100 real clients within memory: 32 MiB read/write buffer, no disk cache.
CLIENT_OPTIONS = "buffer-size=32,cache-size=0"
CLIENT_BUDGET_MIB = 100  # measured ~80 MiB per client with CLIENT_OPTIONS; budget with margin
APP_POD_BUDGET_MIB = 1  # a `sleep` process
MEMORY_RESERVE_MIB = 2048
BOOKMARK_SECONDS = 60.0  # kube-apiserver sends watch bookmarks about once a minute
RUNNER_LOG_SECONDS = 1.0  # the runner republishes container logs; 1 s keeps its CPU off the measurements
CREATE_PARALLELISM = 16
UNPUBLISH_PARALLELISM = 8
PROBE_SECONDS = 0.002
SETTLE_SECONDS = 5.0
RELIST_WATCH_SECONDS = 5.0
WAIT_TIMEOUT = 300.0
WARM_LIST_TARGET = 0
WARM_WRITES_TARGET = 3
RSS_TARGET_MIB = 150
READY_TO_RETURN_TARGET = 0.100
START_MARKER = "<!-- bench:mount-pod-mode:start -->"
END_MARKER = "<!-- bench:mount-pod-mode:end -->"
# `PodMounter._publish` steps timed in the node plugin, in order; the rest of a publish is the bind.
PUBLISH_STEPS = ("_pod_settings", "_attach", "_wait_ready", "_target_serves")
PHASE_LABELS = {
    "_pod_settings": "read PV and PVC, resolve settings",
    "settings_hash": "settings hash (PBKDF2 credential fingerprint)",
    "_attach": "attach: patch the reference / create Secret and pod, wait for it in the cache",
    "_wait_ready": "wait for Running and the mount point",
    "_target_serves": "check the target",
    "rest": "bind and the rest",
    "token_wait": "… of the above: waiting for the client's token bucket (KUBE_QPS 20, KUBE_BURST 30)",
}
NESTED_PHASES = frozenset({"token_wait", "read_mounts"})  # timed inside the steps above, not after them
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

log = logging.getLogger("bench.mount_pod_mode")
# Set while the node plugin child runs a publish: its steps are timed apart from the reconciler's.
PUBLISHING: contextvars.ContextVar[bool] = contextvars.ContextVar("publishing", default=False)


# -- the node plugin, as a child process --------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    """What the child needs to build the node plugin's mount pod machinery against the API."""

    kubeconfig: str
    mount_root: str
    list_from_cache: bool


class NodePlugin:
    """The node plugin's mount pod mode, assembled as `Driver._mount_pod_mode` does, driven over stdin.

    It also notes when its pod cache first showed each mount pod Running and Ready, so that the
    parent can tell how long a publish took after the pod was ready.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = Metrics(NODE)
        settings = KubeSettings(kubeconfig=config.kubeconfig, list_from_cache=config.list_from_cache)
        self.client = make_client(settings, request_counter(self.metrics.registry))
        self.pods = NodePods(NODE, self.client, self.metrics.registry)
        self.pods.add_handler(self._seen)
        self.watcher = GlobalConfigWatcher(self.client, MOUNT_NAMESPACE)
        environment = MountPodEnvironment(
            namespace=MOUNT_NAMESPACE,
            mount_root=config.mount_root,
            priority_class=PRIORITY_CLASS,
            preemption_policy="Never",
        )
        self.mounter = PodMounter(
            self.client, self.pods, PodMounterConfig(NODE, environment), self.watcher, self.metrics
        )
        self.reconciler = Reconciler(self.mounter)  # the production safety pass interval
        self.marks: dict[str, dict[str, float]] = {}
        self.phases: dict[str, float] = {}
        self.background: dict[str, float] = {}
        self.background_calls: dict[str, int] = {}
        self.passes: list[tuple[float, float]] = []  # (end, seconds) of each periodic safety pass
        self._time_phases()

    def _time_phases(self) -> None:
        """Timing wrappers (nothing else) around the steps of `PodMounter._publish`, to say where a publish
        spends its time; `settings_hash` is where the credential fingerprint (PBKDF2) is computed. The same
        steps run by the reconciler, outside any publish, are counted apart, with its periodic passes."""

        def note(name: str, started: float) -> None:
            book = self.phases if PUBLISHING.get() else self.background
            book[name] = book.get(name, 0.0) + time.perf_counter() - started
            if not PUBLISHING.get():
                self.background_calls[name] = self.background_calls.get(name, 0) + 1

        def timed(name: str, step: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await step(*args, **kwargs)
                finally:
                    note(name, started)

            return wrapper

        for name in PUBLISH_STEPS:
            setattr(self.mounter, name, timed(name, getattr(self.mounter, name)))
        reconcile_all = self.mounter.reconcile_all

        async def safety_pass() -> None:
            started = time.monotonic()
            try:
                await reconcile_all()
            finally:
                self.passes.append((time.monotonic(), time.monotonic() - started))

        self.mounter.reconcile_all = safety_pass  # type: ignore[method-assign]

        def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    note(name, started)

            return wrapper

        # spec.py and the mount modules call these by their module-level names
        mountpod_spec.settings_hash = counted("settings_hash", settings_hash)  # type: ignore[attr-defined]
        mount_targets.read_mounts = counted("read_mounts", mount_targets.read_mounts)  # type: ignore[attr-defined]
        mount_pod.read_mounts = counted("read_mounts", mount_pod.read_mounts)  # type: ignore[attr-defined]
        acquire = TokenBucket.acquire

        async def waited(bucket: TokenBucket) -> None:
            started = time.perf_counter()
            try:
                await acquire(bucket)
            finally:
                note("token_wait", started)

        TokenBucket.acquire = waited  # type: ignore[method-assign, assignment]

    def _seen(self, event: Event, pod: Pod) -> None:
        meta = pod.metadata
        if event is Event.DELETED or meta is None or (meta.labels or {}).get(LABEL_APP_NAME) != APP_NAME_MOUNT:
            return
        now = time.monotonic()
        marks = self.marks.setdefault(meta.name or "", {"added": now})
        status = pod.status
        if status is not None and status.phase == "Running":
            marks.setdefault("running", now)
        if status is not None and any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
            marks.setdefault("ready", now)

    async def start(self) -> dict[str, Any]:
        await self.watcher.start()
        await self.mounter.start()
        self.reconciler.start()
        await self.pods.wait_synced(WAIT_TIMEOUT)
        return {"ok": True}

    async def stop(self) -> dict[str, Any]:
        """Stops watching and reconciling; mounts and mount pods stay, as on a driver restart."""
        await self.reconciler.stop()
        await self.mounter.close()
        await self.watcher.stop()
        await self.client.close()
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        pods = self.pods.pods()
        mount = [
            p for p in pods if ((p.metadata.labels if p.metadata else None) or {}).get(LABEL_APP_NAME) == APP_NAME_MOUNT
        ]
        return {
            "synced": self.pods.synced,
            "pods": len(pods),
            "running": sum(1 for p in pods if p.status is not None and p.status.phase == "Running"),
            "mount_pods": len(mount),
            "passes": self.passes,
            "background": self.background,
            "background_calls": self.background_calls,
        }

    def _pod_of(self, target: str) -> str:
        key = reference_key(target)
        for pod in self.pods.pods():
            meta = pod.metadata
            if meta is not None and key in (meta.annotations or {}):
                return meta.name or ""
        return ""

    async def publish(
        self, target: str, volume_id: str, secret: dict[str, str], context: dict[str, str]
    ) -> dict[str, Any]:
        settings = parse_volume_settings(volume_id, secret, context, [])
        request = PublishRequest(settings, target, False, PublishInputs(volume_id, secret, context, []))
        self.phases = {}
        publishing = PUBLISHING.set(True)
        started = time.monotonic()
        try:
            await self.mounter.publish(request)
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            PUBLISHING.reset(publishing)
        returned = time.monotonic()
        pod = self._pod_of(target)
        return {
            "ok": True,
            "started": started,
            "returned": returned,
            "pod": pod,
            "marks": self.marks.get(pod, {}),
            "phases": self.phases,
        }

    async def unpublish(self, targets: list[str], parallel: int) -> dict[str, Any]:
        gate = asyncio.Semaphore(parallel)
        errors: list[str] = []

        async def one(target: str) -> None:
            async with gate:
                try:
                    await self.mounter.unpublish(target)
                except Exception as exc:
                    errors.append(f"{target}: {type(exc).__name__}: {exc}")

        started = time.monotonic()
        await asyncio.gather(*(one(t) for t in targets))
        return {"ok": not errors, "errors": errors[:5], "failed": len(errors), "seconds": time.monotonic() - started}

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.pop("op")
        if op == "start":
            return await self.start()
        if op == "status":
            return self.status()
        if op == "publish":
            return await self.publish(**message)
        if op == "unpublish":
            return await self.unpublish(**message)
        if op == "stop":
            return await self.stop()
        return {"ok": False, "error": f"unknown op {op!r}"}


async def node_child(config: NodeConfig) -> None:
    """Entry point of the child: one JSON request per stdin line, one JSON answer per stdout line."""
    # The real node plugin also loads the CSI gRPC service, the metrics server and the process mounter:
    # import them, so that the RSS measured here includes the code a node plugin carries.
    import juicefs_csi.driver  # noqa: F401, PLC0415

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    plugin = NodePlugin(config)

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    answer({"ok": True, "hello": os.getpid()})
    while line := await reader.readline():
        message = json.loads(line)
        op = message.get("op")
        try:
            reply = await plugin.handle(message)
        except Exception as exc:
            log.exception("node plugin request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer(reply)
        if op == "stop":
            return


# -- parent side: small helpers ------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process we started (never a scan of /proc: other processes can hang readers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """A process and its descendants, from /proc/PID/task/*/children (a juicefs client is more than one)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    queue.extend(int(c) for c in (task / "children").read_text().split())
    return found


def proc_pss_kib(pid: int) -> int:
    """Proportional set size: pages shared between clients (the juicefs binary) counted once overall."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def mem_available_mib() -> int:
    return proc_meminfo("MemAvailable:") // 1024


def proc_meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


# -- the API request log --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """One request as the API server saw it; `client` from its User-Agent."""

    at: float
    client: str
    verb: str
    resource: str
    query: tuple[tuple[str, str], ...]

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    def describe(self) -> str:
        params = self.params
        shown = [f"{k}={params[k]}" for k in ("fieldSelector", "labelSelector") if k in params]
        if self.verb in ("list", "watch"):
            rv = params.get("resourceVersion")
            shown.append(f"resourceVersion={rv}" if rv is not None else "no resourceVersion")
        return f"{self.verb.upper()} {self.resource}" + (f" ({', '.join(shown)})" if shown else "")


def client_of(agent: str) -> str:
    """lightkube (httpx2) is only used by the node plugin; aiohttp by the pod runner; urllib by test helpers."""
    if agent == BENCH_AGENT or agent.startswith("Python-urllib"):
        return "bench"
    if "httpx" in agent:
        return "node"
    if "aiohttp" in agent:
        return "kubelet"
    return "other"


def install_request_log() -> tuple[list[ApiRequest], Callable[[], None]]:
    """Make the emulator note every request with its query and User-Agent; `request_counts()` has neither."""
    from aiohttp import web  # noqa: PLC0415 - parent only

    from tests.support.kube import emulator as emulator_module  # noqa: PLC0415 - parent only
    from tests.support.kube.server import Server, Target  # noqa: PLC0415 - parent only

    entries: list[ApiRequest] = []

    class LoggingServer(Server):
        def _parse(self, request: web.Request, parts: list[str]) -> Target | None:
            target = super()._parse(request, parts)
            verb = target.verb if target is not None else request.method.lower()
            resource = target.resource if target is not None else request.path
            agent = request.headers.get("User-Agent", "")
            entries.append(ApiRequest(time.monotonic(), client_of(agent), verb, resource, tuple(request.query.items())))
            return target

    emulator_module.Server = LoggingServer  # type: ignore[attr-defined]

    def restore() -> None:
        emulator_module.Server = Server  # type: ignore[attr-defined]

    return entries, restore


def between(entries: Sequence[ApiRequest], start: float, end: float, client: str | None = "node") -> list[ApiRequest]:
    return [r for r in entries if start <= r.at <= end and (client is None or r.client == client)]


@dataclass
class RequestTally:
    """Requests of one window split the way the targets are stated."""

    total: int = 0
    lists: int = 0
    writes: int = 0
    reads: int = 0
    watches: int = 0
    mix: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, requests: Iterable[ApiRequest]) -> RequestTally:
        tally = cls()
        for r in requests:
            tally.total += 1
            tally.mix[(r.verb, r.resource)] += 1
            if r.verb == "list":
                tally.lists += 1
            elif r.verb == "watch":
                tally.watches += 1
            elif r.verb in WRITE_VERBS:
                tally.writes += 1
            else:
                tally.reads += 1
        return tally

    @classmethod
    def of_counts(cls, before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> RequestTally:
        """The same split from `request_counts()` deltas (every client, no query strings)."""
        tally = cls()
        for key, count in after.items():
            delta = count - before.get(key, 0)
            if delta <= 0:
                continue
            verb = key[0]
            tally.total += delta
            tally.mix[key] += delta
            if verb == "list":
                tally.lists += delta
            elif verb == "watch":
                tally.watches += delta
            elif verb in WRITE_VERBS:
                tally.writes += delta
            else:
                tally.reads += delta
        return tally


def mix_text(mix: Counter[tuple[str, str]], per: int = 1) -> str:
    parts = []
    for (verb, resource), count in sorted(mix.items()):
        times = count / per
        shown = f"{times:g}" if per == 1 else f"{times:.2f}".rstrip("0").rstrip(".")
        parts.append(f"{verb} {resource}" + ("" if shown == "1" else f" x{shown}"))
    return ", ".join(parts) or "none"


# -- the node plugin child, seen from the parent -------------------------------------------------


class NodeChild:
    """Runs `NodePlugin` in its own process (`--node-child`) and talks JSON lines to it."""

    def __init__(self, config: NodeConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.spawned = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def spawn(self) -> None:
        """Start the process; returns once its imports are done, before it talks to the API."""
        with self.log_path.open("ab") as log_file:
            self.spawned = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.mount_pod_mode",
                "--node-child",
                json.dumps(asdict(self.config)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                cwd=REPO,
                start_new_session=True,  # Ctrl-C reaches only the benchmark, which shuts the child down itself
                limit=1 << 24,
            )
        await self._read(60)

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the node plugin exited; see {self.log_path}:\n{self.log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, op: str, timeout: float = 120.0, **params: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        async with self._lock:
            self.process.stdin.write((json.dumps({"op": op, **params}) + "\n").encode())
            await self.process.stdin.drain()
            reply = await self._read(timeout)
        if reply.get("ok") is False:
            raise RuntimeError(f"node plugin {op} failed: {reply.get('error') or reply.get('errors')}")
        return reply

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self) -> None:
        """A clean stop (watches closed, mounts kept); a child that does not answer is killed."""
        if not self.alive():
            return
        assert self.process is not None
        with contextlib.suppress(Exception):
            await self.call("stop", timeout=30)
        if self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


class MountProber:
    """Notes when a volume's mount point under the mount root first answers with the root inode.

    This is the client being ready, seen from outside the node plugin, so the time the plugin
    takes to notice (its own poll) counts against it.
    """

    def __init__(self, root: Path, prefix: str) -> None:
        self.root = root
        self.prefix = prefix
        self.seen: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{prefix}", daemon=True)

    def __enter__(self) -> MountProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.root):
                    if entry.name.startswith(self.prefix) and os.stat(entry.path).st_ino == 1:
                        self.seen = time.monotonic()
                        return
            time.sleep(PROBE_SECONDS)


# -- scenario objects ----------------------------------------------------------------------------


@dataclass
class Volume:
    index: int
    root: Path
    mount_options: str

    @property
    def pv(self) -> str:
        return f"pv-bench-{self.index:03d}"

    @property
    def pvc(self) -> str:
        return f"pvc-bench-{self.index:03d}"

    @property
    def fs_name(self) -> str:
        return f"bench-vol-{self.index:03d}"

    @property
    def secret(self) -> dict[str, str]:
        """No storage: formatted beforehand, so mount pods do not format (no init container)."""
        return {"name": self.fs_name, "metaurl": f"sqlite3://{self.root / 'meta.db'}"}

    @property
    def context(self) -> dict[str, str]:
        return {"mountOptions": self.mount_options}

    def format(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                JUICEFS,
                "format",
                "--storage=file",
                f"--bucket={self.root / 'bucket'}/",
                self.secret["metaurl"],
                self.fs_name,
            ],
            check=True,
            capture_output=True,
        )


@dataclass
class AppPod:
    name: str
    uid: str
    volume: Volume
    target: str


@dataclass
class PublishSample:
    cold: bool
    seconds: float
    node: RequestTally
    everyone: RequestTally
    to_running: float | None = None
    running_to_answer: float | None = None
    ready_to_return: float | None = None
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class Window:
    """Requests of one steady-state window, per minute."""

    seconds: float
    node: RequestTally
    everyone: RequestTally
    by_client: Counter[str]
    node_cpu: float
    lists: list[str]


@dataclass
class ModeResults:
    """What one node plugin process measured: start-up, steady state, relist, memory."""

    list_from_cache: bool
    startup: list[str] = field(default_factory=list)
    startup_pods: int = 0
    window: Window | None = None
    relist: list[str] = field(default_factory=list)
    passes: list[float] = field(default_factory=list)  # safety passes that ended in the window, seconds
    background_calls: dict[str, int] = field(default_factory=dict)  # reconciler's calls in the window
    background_seconds: dict[str, float] = field(default_factory=dict)
    mountinfo_lines: int = 0
    rss_kib: int = 0
    cached_pods: int = 0


@dataclass
class Results:
    volumes_requested: int = 0
    volumes: int = 0
    app_pods: int = 0
    scaled_down: str = ""
    mem_available_mib: int = 0
    app_pod_bytes: float = 0.0
    mount_pod_bytes: float = 0.0
    rss_imports: int = 0
    rss_started: int = 0
    started_pods: int = 0
    rss_first: int = 0
    rss_published: int = 0
    published_pods: int = 0
    clients_rss_kib: int = 0
    clients_pss_kib: int = 0
    clients: int = 0
    publishes: list[PublishSample] = field(default_factory=list)
    background_node_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    publish_phase_seconds: float = 0.0
    unpublish_seconds: float = 0.0
    modes: list[ModeResults] = field(default_factory=list)
    app_pods_start_seconds: float = 0.0

    def samples(self, cold: bool) -> list[PublishSample]:
        return [s for s in self.publishes if s.cold is cold]


# -- the benchmark ---------------------------------------------------------------------------------


class Bench:
    """Holds the API, the runner, the node plugin and every object created, so cleanup can undo all of it."""

    def __init__(self, workdir: Path, app_pods: int, volumes: int, steady_seconds: float) -> None:
        self.workdir = workdir
        self.requested_app_pods = app_pods
        self.requested_volumes = volumes
        self.steady_seconds = steady_seconds
        self.mount_root = workdir / "volume"
        self.results = Results(volumes_requested=volumes, app_pods=app_pods)
        self.kube_api: KubeAPI | None = None
        self.runner: PodRunner | None = None
        self.child: NodeChild | None = None
        self.requests: list[ApiRequest] = []
        self.volumes: list[Volume] = []
        self.apps: list[AppPod] = []
        self.published: set[str] = set()

    @property
    def api(self) -> KubeAPI:
        assert self.kube_api is not None
        return self.kube_api

    @property
    def emulator(self) -> Emulator:
        assert self.kube_api is not None and self.kube_api.emulator is not None
        return self.kube_api.emulator

    @property
    def node(self) -> NodeChild:
        assert self.child is not None
        return self.child

    # -- sizing and set-up --

    def size(self) -> None:
        """Scale the volume count down if 100 real clients cannot fit; never fake a mount."""
        r = self.results
        r.mem_available_mib = mem_available_mib()
        volumes = self.requested_volumes
        budget = r.mem_available_mib - MEMORY_RESERVE_MIB - self.requested_app_pods * APP_POD_BUDGET_MIB
        fits = max(1, budget // CLIENT_BUDGET_MIB)
        if fits < volumes:
            r.scaled_down = (
                f"scaled down from {volumes} to {fits} volumes: {r.mem_available_mib} MiB available, "
                f"{CLIENT_BUDGET_MIB} MiB budgeted per juicefs client"
            )
            print(f"NOTE: {r.scaled_down}")
            volumes = fits
        r.volumes = volumes
        options = f"{CLIENT_OPTIONS},cache-dir={self.workdir / 'cache'}"
        self.volumes = [Volume(i, self.workdir / "fs" / f"{i:03d}", options) for i in range(volumes)]

    def format_volumes(self) -> None:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(Volume.format, self.volumes))

    def create_objects(self) -> None:
        """Namespace, PriorityClass, and per volume a node-publish Secret, a bound PVC and PV."""
        api = self.api
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}})
        api.create(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": PRIORITY_CLASS},
                "value": 1000000000,
                "preemptionPolicy": "Never",
            }
        )
        for v in self.volumes:
            secret = f"{v.fs_name}-secret"
            api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret, "namespace": APP_NAMESPACE},
                    "stringData": v.secret,
                }
            )
            pvc = api.create(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": v.pvc, "namespace": APP_NAMESPACE, "labels": {"app": v.fs_name}},
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "10Gi"}},
                        "storageClassName": "",
                        "volumeName": v.pv,
                    },
                }
            )
            api.create(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": v.pv, "labels": {"juicefs-name": v.fs_name}},
                    "spec": {
                        "capacity": {"storage": "10Gi"},
                        "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "claimRef": {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "namespace": APP_NAMESPACE,
                            "name": v.pvc,
                            "uid": pvc["metadata"]["uid"],
                        },
                        "csi": {
                            "driver": "csi.juicefs.com",
                            "volumeHandle": v.pv,
                            "fsType": "juicefs",
                            "nodePublishSecretRef": {"name": secret, "namespace": APP_NAMESPACE},
                            "volumeAttributes": v.context,
                        },
                    },
                }
            )
            api.patch("persistentvolumes", v.pv, {"status": {"phase": "Bound"}}, subresource="status")
            api.patch(
                "persistentvolumeclaims",
                v.pvc,
                {"status": {"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Gi"}}},
                namespace=APP_NAMESPACE,
                subresource="status",
            )

    def app_pod_body(self, index: int, volume: Volume) -> dict[str, Any]:
        """A Deployment-style pod that `sleep`s; an emptyDir stands in for the PVC volume, which the pod
        runner cannot mount (it would keep the pod Pending and retry) and the node plugin never reads."""
        app = f"app-{volume.index:03d}"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{app}-{index:04d}",
                "namespace": APP_NAMESPACE,
                "labels": {"app": app, "pod-template-hash": "6d4b9c8f7"},
                "annotations": {"bench/volume": volume.pvc},
            },
            "spec": {
                "nodeName": NODE,
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.k8s.io/pause:3.9",
                        "command": ["/bin/sleep", "3600"],
                        "env": [{"name": "DATA_DIR", "value": "/data"}],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        }

    async def create_app_pods(self) -> None:
        """All app pods at once (16 in flight), then until the runner runs them and the node's cache shows
        them Running."""
        count = self.requested_app_pods
        assignments = [(i, self.volumes[i % len(self.volumes)]) for i in range(count)]
        gate = asyncio.Semaphore(CREATE_PARALLELISM)
        started = time.monotonic()
        async with self.api.session(headers={"User-Agent": BENCH_AGENT}) as session:

            async def create(index: int, volume: Volume) -> AppPod:
                async with (
                    gate,
                    session.post(
                        f"/api/v1/namespaces/{APP_NAMESPACE}/pods", json=self.app_pod_body(index, volume)
                    ) as resp,
                ):
                    body = await resp.json()
                    if resp.status >= 300:
                        raise RuntimeError(f"creating an app pod: {resp.status} {body}")
                uid = body["metadata"]["uid"]
                target = self.workdir / "kubelet/pods" / uid / "volumes/kubernetes.io~csi" / volume.pv / "mount"
                return AppPod(body["metadata"]["name"], uid, volume, str(target))

            self.apps = list(await asyncio.gather(*(create(i, v) for i, v in assignments)))

        async def all_running() -> bool:
            assert self.runner is not None
            running = sum(1 for ns, _ in self.runner.running_pods() if ns == APP_NAMESPACE)
            status = await self.node.call("status")
            print(f"  runner runs {running}/{count} app pods; node cache: {status['running']} Running")
            return running >= count and status["running"] >= count

        await self.until(all_running, "app pods to run and show Running in the node's cache", interval=3.0)
        self.results.app_pods_start_seconds = time.monotonic() - started

    async def until(
        self, check: Callable[[], Any], what: str, interval: float = 0.5, timeout: float = WAIT_TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(interval)

    async def start_node(self, list_from_cache: bool) -> ModeResults:
        """A fresh node plugin process; records its start-up requests and the RSS after imports."""
        config = NodeConfig(self.api.kubeconfig_path.as_posix(), str(self.mount_root), list_from_cache)
        self.child = NodeChild(config, self.workdir / "node-plugin.log")
        await self.child.spawn()
        mode = ModeResults(list_from_cache)
        rss_imports = self.child.rss_kib()
        started = time.monotonic()
        await self.child.call("start", timeout=WAIT_TIMEOUT)
        await asyncio.sleep(1.0)  # the watches are opened right after the lists
        mode.startup = [r.describe() for r in between(self.requests, started, time.monotonic())]
        mode.startup_pods = int((await self.child.call("status"))["pods"])
        if not self.results.modes:
            self.results.rss_imports = rss_imports
        self.results.modes.append(mode)
        return mode

    # -- publishing --

    async def publish(self, app: AppPod, cold: bool) -> PublishSample:
        counts = self.emulator.request_counts()
        prober = MountProber(self.mount_root, f"{app.volume.pv}-") if cold else contextlib.nullcontext()
        with prober:
            reply = await self.node.call(
                "publish",
                target=app.target,
                volume_id=app.volume.pv,
                secret=app.volume.secret,
                context=app.volume.context,
            )
        self.published.add(app.target)
        started, returned = float(reply["started"]), float(reply["returned"])
        sample = PublishSample(
            cold,
            returned - started,
            RequestTally.of(between(self.requests, started, returned)),
            RequestTally.of_counts(counts, self.emulator.request_counts()),
        )
        sample.phases = {k: float(v) for k, v in reply["phases"].items()}
        steps = sum(v for k, v in sample.phases.items() if k not in NESTED_PHASES)
        sample.phases["rest"] = sample.seconds - steps
        if isinstance(prober, MountProber):
            running = reply["marks"].get("running")
            if running is None or prober.seen is None:
                raise RuntimeError(f"first publish of {app.volume.pv}: no Running/mount time ({reply}, {prober.seen})")
            ready = max(running, prober.seen)
            sample.to_running = running - started
            sample.running_to_answer = prober.seen - running
            sample.ready_to_return = returned - ready
        return sample

    async def publish_all(self) -> None:
        """First publishes one volume after another (each creates a mount pod), then every other app pod."""
        r = self.results
        by_volume: dict[int, list[AppPod]] = {}
        for app in self.apps:
            by_volume.setdefault(app.volume.index, []).append(app)
        phase_start = time.monotonic()
        for index, apps in sorted(by_volume.items()):
            r.publishes.append(await self.publish(apps[0], cold=True))
            if index % 10 == 9:
                print(f"  first publishes: {index + 1}/{len(by_volume)}")
        r.rss_first = self.node.rss_kib()
        warm = [app for apps in by_volume.values() for app in apps[1:]]
        for done, app in enumerate(warm, 1):
            r.publishes.append(await self.publish(app, cold=False))
            if done % 100 == 0:
                print(f"  warm publishes: {done}/{len(warm)}")
        phase_end = time.monotonic()
        r.publish_phase_seconds = phase_end - phase_start
        covered: Counter[tuple[str, str]] = Counter()
        for sample in r.publishes:
            covered.update(sample.node.mix)
        everything = Counter((q.verb, q.resource) for q in between(self.requests, phase_start, phase_end))
        r.background_node_requests = everything - covered
        await asyncio.to_thread(self.verify, by_volume)

    def verify(self, by_volume: dict[int, list[AppPod]]) -> None:
        """Every target is a mount, and a file written through one app pod is read through another."""
        broken = [a.target for a in self.apps if not os.path.ismount(a.target)]
        if broken:
            raise RuntimeError(f"{len(broken)} targets are not mounted, e.g. {broken[0]}")
        for apps in by_volume.values():
            first, last = Path(apps[0].target), Path(apps[-1].target)
            (first / "bench.txt").write_text(first.as_posix())
            if (last / "bench.txt").read_text() != first.as_posix():
                raise RuntimeError(f"{last} does not show what {first} wrote")

    def mount_pods(self) -> list[dict[str, Any]]:
        listed = self.api.list("pods", MOUNT_NAMESPACE, label_selector=f"{LABEL_APP_NAME}={APP_NAME_MOUNT}")
        return list(listed["items"])

    def measure_clients(self) -> None:
        """Total RSS of the juicefs clients, each process tree found from the runner's container pid."""
        assert self.runner is not None
        rss = pss = clients = 0
        pods = self.mount_pods()
        for pod in pods:
            pid = self.runner.pid_of(MOUNT_NAMESPACE, pod["metadata"]["name"], MOUNT_CONTAINER)
            if pid is None:
                continue
            clients += 1
            for member in process_tree(pid):
                with contextlib.suppress(OSError):
                    rss += proc_status_kib(member)
                    pss += proc_pss_kib(member)
        self.results.clients, self.results.clients_rss_kib, self.results.clients_pss_kib = clients, rss, pss
        sizes = [len(json.dumps(p)) for p in pods]
        self.results.mount_pod_bytes = sum(sizes) / max(len(sizes), 1)
        apps = self.api.list("pods", APP_NAMESPACE)["items"]
        self.results.app_pod_bytes = sum(len(json.dumps(p)) for p in apps) / max(len(apps), 1)

    # -- steady state --

    async def steady(self, mode: ModeResults) -> None:
        """Nothing changes for a while: what the node plugin still asks of the API server, and its CPU."""
        await asyncio.sleep(SETTLE_SECONDS)
        before = await self.node.call("status")
        counts = self.emulator.request_counts()
        cpu = self.node.cpu_seconds()
        start = time.monotonic()
        await asyncio.sleep(self.steady_seconds)
        end = time.monotonic()
        cpu = self.node.cpu_seconds() - cpu
        after = await self.node.call("status")
        everyone = between(self.requests, start, end, client=None)
        node = [q for q in everyone if q.client == "node"]
        mode.window = Window(
            end - start,
            RequestTally.of(node),
            RequestTally.of_counts(counts, self.emulator.request_counts()),
            Counter(q.client for q in everyone),
            cpu / (end - start),
            [q.describe() for q in node if q.verb == "list"],
        )
        mode.passes = [float(seconds) for ended, seconds in after["passes"] if start <= ended <= end]
        mode.background_calls = {
            k: int(v) - int(before["background_calls"].get(k, 0)) for k, v in after["background_calls"].items()
        }
        mode.background_seconds = {
            k: float(v) - float(before["background"].get(k, 0.0)) for k, v in after["background"].items()
        }
        mode.mountinfo_lines = len(Path("/proc/self/mountinfo").read_text().splitlines())
        mode.rss_kib = self.node.rss_kib()
        mode.cached_pods = int(after["pods"])

    async def relist(self, mode: ModeResults) -> None:
        """Watches end and their resourceVersion expired (410), as after an API server restart."""
        self.emulator.inject_error("watch", "pods", status=410, times=2)  # the node's and the runner's
        self.emulator.inject_error("watch", "configmaps", status=410, times=1)
        start = time.monotonic()
        self.emulator.close_watches()
        await asyncio.sleep(RELIST_WATCH_SECONDS)
        self.emulator.clear_faults()
        mode.relist = [q.describe() for q in between(self.requests, start, time.monotonic())]

    # -- whole run --

    async def run(self) -> None:
        from tests.support.kube import start_kube_api  # noqa: PLC0415 - parent only
        from tests.support.podrunner import PodRunner  # noqa: PLC0415 - parent only

        r = self.results
        self.size()
        print(f"formatting {len(self.volumes)} juicefs volumes under {self.workdir}")
        await asyncio.to_thread(self.format_volumes)
        self.requests, restore = install_request_log()
        try:
            with start_kube_api(bookmark_interval=BOOKMARK_SECONDS) as kube_api:
                self.kube_api = kube_api
                try:
                    await self.scenario(PodRunner)
                finally:
                    await self.close()
        finally:
            restore()
        print(f"done: {len(r.publishes)} publishes")

    async def scenario(self, runner_class: type[PodRunner]) -> None:
        r = self.results
        print(f"creating {len(self.volumes)} PVs, PVCs and Secrets")
        await asyncio.to_thread(self.create_objects)
        self.runner = runner_class(self.api, NODE, self.workdir, log_interval=RUNNER_LOG_SECONDS)
        await self.runner.start()
        print("starting the node plugin (no list cache)")
        first = await self.start_node(list_from_cache=False)
        print(f"creating {self.requested_app_pods} app pods")
        await self.create_app_pods()
        await asyncio.sleep(SETTLE_SECONDS)
        r.rss_started = self.node.rss_kib()
        r.started_pods = int((await self.node.call("status"))["pods"])
        print(f"publishing {len(self.apps)} targets over {len(self.volumes)} volumes")
        await self.publish_all()
        await asyncio.to_thread(self.measure_clients)
        await asyncio.sleep(SETTLE_SECONDS)
        r.rss_published = self.node.rss_kib()
        r.published_pods = int((await self.node.call("status"))["pods"])
        print(f"steady state for {self.steady_seconds:.0f} s (no list cache)")
        await self.steady(first)
        await self.relist(first)
        print("restarting the node plugin with ENABLE_APISERVER_LIST_CACHE=true")
        await self.node.stop()
        second = await self.start_node(list_from_cache=True)
        print(f"steady state for {self.steady_seconds:.0f} s (list cache)")
        await self.steady(second)
        await self.relist(second)

    async def close(self) -> None:
        """Undo everything, whatever state the run stopped in: targets, mount pods, app pods, processes, mounts."""
        from tests.support.driver import cleanup  # noqa: PLC0415 - parent only

        try:
            if self.child is not None and self.child.alive() and self.published:
                print(f"unpublishing {len(self.published)} targets")
                try:
                    reply = await self.child.call(
                        "unpublish", timeout=600, targets=sorted(self.published), parallel=UNPUBLISH_PARALLELISM
                    )
                    self.results.unpublish_seconds = float(reply["seconds"])
                    self.published.clear()
                    await self.until(
                        lambda: asyncio.to_thread(lambda: not self.mount_pods()),
                        "mount pods to be deleted",
                        timeout=120,
                    )
                except Exception as exc:
                    print(f"unpublishing failed: {exc}", file=sys.stderr)
            if self.child is not None:
                await self.child.stop()
            if self.kube_api is not None and self.runner is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        self.api.request,
                        "DELETE",
                        f"/api/v1/namespaces/{APP_NAMESPACE}/pods",
                        body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
                    )
                    runner = self.runner

                    async def stopped() -> bool:
                        return not runner.running_pods()

                    await self.until(stopped, "app pods to stop", timeout=60)
        finally:
            if self.runner is not None:
                await self.runner.stop()
            await asyncio.to_thread(cleanup, self.workdir)


# -- report ------------------------------------------------------------------------------------------


def stats_row(label: str, values: Sequence[float], target: str = "—", met: bool | None = None) -> str:
    if not values:
        return f"| {label} | — | — | — | {target} | |"
    cell = "" if met is None else verdict(met)
    return f"| {label} | {ms(median(values))} | {ms(p90(values))} | {ms(max(values))} | {target} | {cell} |"


def background_rate(mode: ModeResults, name: str) -> str:
    seconds = mode.window.seconds if mode.window else 60.0
    return f"{mode.background_calls.get(name, 0) * 60 / seconds:.0f}"


def background_seconds(mode: ModeResults, name: str) -> str:
    seconds = mode.window.seconds if mode.window else 60.0
    return f"{mode.background_seconds.get(name, 0.0) * 60 / seconds:.1f}"


def phase_cell(samples: Sequence[PublishSample], name: str) -> str:
    values = [s.phases[name] for s in samples if name in s.phases]
    return ms(median(values)) if values else "—"


def requests_cell(lines: Sequence[str]) -> str:
    """In the order sent, repeats folded into a count."""
    counted = Counter(lines)
    return "<br>".join(f"{line}" + (f" x{n}" if n > 1 else "") for line, n in counted.items()) or "none"


def report(
    bench: Bench, machine: Machine, loads: tuple[str, str], date: str, command: str
) -> tuple[str, dict[str, bool]]:
    """The Markdown section, and whether each target is met."""
    r = bench.results
    cold, warm = r.samples(cold=True), r.samples(cold=False)
    warm_lists = max((s.node.lists for s in warm), default=0)
    warm_writes = max((s.node.writes for s in warm), default=0)
    cold_lists = max((s.node.lists for s in cold), default=0)
    ready = [s.ready_to_return for s in cold if s.ready_to_return is not None]
    rss_values = [r.rss_published, *(m.rss_kib for m in r.modes)]
    met = {
        "warm_lists": warm_lists <= WARM_LIST_TARGET and cold_lists == 0,
        "warm_writes": warm_writes <= WARM_WRITES_TARGET,
        "rss": max(rss_values) < RSS_TARGET_MIB * 1024,
        "ready": bool(ready) and p90(ready) < READY_TO_RETURN_TARGET,
    }
    per_volume = r.app_pods // max(r.volumes, 1)

    def mean(values: Iterable[float]) -> float:
        items = list(values)
        return sum(items) / len(items) if items else 0.0

    def publish_row(label: str, samples: list[PublishSample]) -> str:
        if not samples:
            return f"| {label} | 0 | | | | | | |"
        node = [s.node for s in samples]
        return (
            f"| {label} | {len(samples)} | {mean(t.total for t in node):.2f} (max {max(t.total for t in node)}) "
            f"| {max(t.lists for t in node)} | {mean(t.writes for t in node):.2f} (max {max(t.writes for t in node)}) "
            f"| {mean(t.reads for t in node):.2f} | {mean(s.everyone.total for s in samples):.2f} "
            f"| {mix_text(sum((t.mix for t in node), Counter()), len(samples))} |"
        )

    lines = [
        START_MARKER,
        "## Mount pod mode",
        "",
        f"Measured {date} with `{command}`: one node with {r.app_pods} app pods over {r.volumes} volumes "
        f"({per_volume} app pods per volume), each volume served by a mount pod running the real juicefs client "
        f"(its own SQLite metadata and local `file` storage, formatted beforehand; mount options "
        f"`{CLIENT_OPTIONS}` plus a `cache-dir` in the scratch dir, through the volume's `mountOptions` attribute). "
        "The Kubernetes API is the in-process emulator (`tests/support/kube`, watch bookmarks every "
        f"{BOOKMARK_SECONDS:.0f} s), the node's kubelet is the test pod runner (mount pods and app pods are local "
        "processes), and the node plugin is a separate process built like `Driver._mount_pod_mode` (client with "
        "request counter, `NodePods` watching the API server, `GlobalConfigWatcher`, `PodMounter`, `Reconciler` "
        f"with its production {SAFETY_PASS_SECONDS:.0f} s safety pass) and driven through `PodMounter.publish`. "
        "App pods are Pod objects bound to the node whose container is `/bin/sleep 3600`, run by the pod runner so "
        "that they carry a kubelet's status; an emptyDir stands in for their PVC volume, which the pod runner "
        "cannot mount and the node plugin never reads. Targets use the kubelet layout "
        "`<root>/kubelet/pods/<pod uid>/volumes/kubernetes.io~csi/<pv>/mount`.",
        "",
    ]
    if r.scaled_down:
        lines += [f"**Scaled down:** {r.scaled_down}.", ""]
    lines += machine.rows(loads, f" ({r.mem_available_mib / 1024:.1f} GiB available at start)")
    lines += machine.busy_note(
        loads[0], "latencies are noisier than on an idle node; request counts and memory are not affected."
    )
    lines += [
        "| Target | Measured | Met |",
        "|---|---|---|",
        f"| LISTs per publish: 0 | first publishes: max {cold_lists}; later publishes: max {warm_lists} "
        f"| {verdict(met['warm_lists'])} |",
        f"| Writes per publish once the volume's mount pod runs: at most {WARM_WRITES_TARGET} | max {warm_writes} "
        f"| {verdict(met['warm_writes'])} |",
        f"| Node plugin RSS with {r.app_pods} app pods + {r.volumes} mount pods in its cache: < {RSS_TARGET_MIB} MiB "
        f"| {' / '.join(mib(v) for v in rss_values)} "
        "(all published / after the steady window / restarted with list cache) "
        f"| {verdict(met['rss'])} |",
        f"| Mount pod ready → publish returns: < {READY_TO_RETURN_TARGET * 1000:.0f} ms (p90 of first publishes) "
        f"| median {ms(median(ready))}, p90 {ms(p90(ready))}, max {ms(max(ready, default=0.0))} "
        f"| {verdict(met['ready'])} |",
        "",
        "### API requests per publish",
        "",
        "Counted by the emulator, per request with its query string and User-Agent (the node plugin is the only "
        "client using lightkube/httpx), inside the window between `publish` being called and returning. "
        "Publishes run one at a time. The last column is the `request_counts()` delta over the same call, every "
        "client included (the pod runner reports the new mount pod's status, records events, renews its lease).",
        "",
        "| Publish | Count | Node plugin requests (mean) | LIST | Writes (mean) | Reads (mean) "
        "| All clients (mean) | Node plugin requests, per publish |",
        "|---|---|---|---|---|---|---|---|",
        publish_row("First of a volume: creates the Secret and the mount pod", cold),
        publish_row("Later: the volume's mount pod already runs", warm),
        "",
    ]
    background = sum(r.background_node_requests.values())
    lines += [
        f"Node plugin requests outside every publish window during the {r.publish_phase_seconds:.0f} s of "
        f"publishing (reconciler reacting to pod changes): {background}"
        + (f" ({mix_text(r.background_node_requests)})." if background else "."),
        "",
        "### Requests at steady state",
        "",
        f"Everything published, nothing changing, for {bench.steady_seconds:.0f} s per mode; the reconciler's "
        "safety pass runs meanwhile. The second node plugin process was started after the first one stopped, "
        "with `KubeSettings(list_from_cache=True)` (`ENABLE_APISERVER_LIST_CACHE=true`), against the same node.",
        "",
        "| | No list cache | `ENABLE_APISERVER_LIST_CACHE=true` |",
        "|---|---|---|",
    ]
    modes = r.modes

    def per_minute(get: Callable[[Window], float]) -> list[str]:
        return [f"{get(m.window) * 60 / m.window.seconds:.1f}" if m.window else "—" for m in modes]

    def row(label: str, cells: Sequence[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += [
        row("Node plugin requests / min", per_minute(lambda w: w.node.total)),
        row("… of which LIST", per_minute(lambda w: w.node.lists)),
        row("… of which WATCH (re-opened)", per_minute(lambda w: w.node.watches)),
        row("… of which writes", per_minute(lambda w: w.node.writes)),
        row("All clients / min (`request_counts()` delta)", per_minute(lambda w: w.everyone.total)),
        row(
            "… by client in the request log",
            [
                ", ".join(f"{c} {n * 60 / m.window.seconds:.1f}" for c, n in sorted(m.window.by_client.items()))
                or "none"
                if m.window
                else "—"
                for m in modes
            ],
        ),
        row(
            "Node plugin CPU (average over the window)",
            [f"{m.window.node_cpu:.1%}" if m.window else "—" for m in modes],
        ),
        row(
            f"Periodic safety passes over {r.volumes} mount pods that ended in the window: count, median duration",
            [f"{len(m.passes)}, {ms(median(m.passes))}" if m.passes else "none ended" for m in modes],
        ),
        row(
            "Reconciler work in the window, per minute: target checks (`_target_serves`), "
            "/proc/self/mountinfo parses (lines each)",
            [
                f"{background_rate(m, '_target_serves')} checks, {background_rate(m, 'read_mounts')} parses "
                f"({m.mountinfo_lines} lines), {background_seconds(m, 'read_mounts')} s parsing"
                if m.window
                else "—"
                for m in modes
            ],
        ),
        row("LISTs seen in the window", [requests_cell(m.window.lists) if m.window else "—" for m in modes]),
        "",
        "Every request the node plugin sent at start-up and after its watches expired (the emulator ended every "
        "watch and answered the next pods and ConfigMap watch with 410 Gone, as after an API server restart):",
        "",
        "| Moment | No list cache | `ENABLE_APISERVER_LIST_CACHE=true` |",
        "|---|---|---|",
        row(
            "Start-up (pods in the API for this node)",
            [f"{requests_cell(m.startup)}<br>({m.startup_pods} pods)" for m in modes],
        ),
        row(f"Watches expired, first {RELIST_WATCH_SECONDS:.0f} s", [requests_cell(m.relist) for m in modes]),
        "",
        "### Memory",
        "",
        "VmRSS of the node plugin process from /proc (no forced GC). The process imports `juicefs_csi.driver` "
        "(gRPC, CSI services, metrics server) like the real node plugin, but runs no gRPC server. Emulated pods "
        f"carry no `managedFields`: the app pods average {r.app_pod_bytes / 1024:.1f} KiB of JSON and the mount pods "
        f"{r.mount_pod_bytes / 1024:.1f} KiB; on a real API server the same pods are larger.",
        "",
        "| Node plugin state | Pods in its cache | VmRSS | Target | Met |",
        "|---|---|---|---|---|",
        f"| Imports done, not yet connected | 0 | {mib(r.rss_imports)} | | |",
        f"| Started, {r.app_pods} app pods Running, nothing published | {r.started_pods} | {mib(r.rss_started)} | | |",
        f"| First publishes done: {r.volumes} targets, {r.volumes} mount pods | {r.started_pods + r.volumes} "
        f"| {mib(r.rss_first)} | | |",
        f"| All {len(bench.apps)} targets published ({r.volumes} mount pods) | {r.published_pods} "
        f"| {mib(r.rss_published)} | < {RSS_TARGET_MIB} MiB | {verdict(r.rss_published < RSS_TARGET_MIB * 1024)} |",
        *(
            f"| After the steady window, {'list cache' if m.list_from_cache else 'no list cache'}"
            f"{' (restarted process)' if m.list_from_cache else ''} | {m.cached_pods} | {mib(m.rss_kib)} "
            f"| < {RSS_TARGET_MIB} MiB | {verdict(m.rss_kib < RSS_TARGET_MIB * 1024)} |"
            for m in modes
        ),
        "",
        f"The {r.clients} juicefs clients (supervisor and FUSE worker each) use {mib(r.clients_pss_kib)} together "
        f"by PSS ({mib(r.clients_pss_kib / max(r.clients, 1))} each; the juicefs binary's pages are shared), "
        f"{mib(r.clients_rss_kib)} by summed RSS.",
        "",
        "### Latency",
        "",
        "Times taken in the node plugin around `PodMounter.publish` (CLOCK_MONOTONIC, shared by all processes). "
        'For a first publish, "Running" is when the plugin\'s pod cache first showed the new mount pod Running '
        "(a mount pod has no readiness probe, so it is Running and Ready once its container started, before the "
        'juicefs mount answers), and "mount '
        f"answers\" is when a {PROBE_SECONDS * 1000:.0f} ms poll from the benchmark first saw the client's mount "
        "point return the root inode; the pod is ready at the later of the two.",
        "",
        "| Measurement | Median | p90 | Max | Target | Met |",
        "|---|---|---|---|---|---|",
        stats_row(f"First publish of a volume, total ({len(cold)}, one at a time)", [s.seconds for s in cold]),
        stats_row(
            "… publish called → mount pod Running in the plugin's cache",
            [s.to_running for s in cold if s.to_running is not None],
        ),
        stats_row(
            "… Running → mount point answers (juicefs client start-up)",
            [s.running_to_answer for s in cold if s.running_to_answer is not None],
        ),
        stats_row(
            "… mount pod ready → publish returns",
            ready,
            f"< {READY_TO_RETURN_TARGET * 1000:.0f} ms (p90)",
            met["ready"],
        ),
        stats_row(f"Later publish, the volume's mount pod runs ({len(warm)}, back to back)", [s.seconds for s in warm]),
        stats_row(
            "… the same without waiting for the client's token bucket",
            [s.seconds - s.phases.get("token_wait", 0.0) for s in warm],
        ),
        "",
        "Where a publish spends its time, from timing wrappers around the steps of `PodMounter._publish` in the "
        "node plugin (median per step; they add up to about the median total):",
        "",
        "| Step (median) | First publish | Later publish |",
        "|---|---|---|",
        *(
            f"| {PHASE_LABELS[name]} | {phase_cell(cold, name)} | {phase_cell(warm, name)} |"
            for name in (
                "_pod_settings",
                "settings_hash",
                "_attach",
                "_wait_ready",
                "_target_serves",
                "rest",
                "token_wait",
            )
        ),
        "",
        f"Unpublishing all {len(bench.apps)} targets ({UNPUBLISH_PARALLELISM} at a time, each volume's last one "
        f"deletes its mount pod) took {r.unpublish_seconds:.1f} s; {r.app_pods} app pods were created and shown "
        f"Running in the plugin's cache within {r.app_pods_start_seconds:.1f} s.",
        END_MARKER,
    ]
    return "\n".join(lines) + "\n", met


# -- entry point -------------------------------------------------------------------------------------


async def run_bench(bench: Bench) -> None:
    """SIGTERM cancels the run like Ctrl-C, so `Bench.close` still undoes everything."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await bench.run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mount_pod_mode", description=__doc__.splitlines()[0])
    parser.add_argument("--app-pods", type=int, default=1000, help="app pods on the node (default 1000)")
    parser.add_argument("--volumes", type=int, default=100, help="volumes, one mount pod each (default 100)")
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="steady-state window per mode (60)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the results into {DOCS}")
    parser.add_argument("--node-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node_child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        asyncio.run(node_child(NodeConfig(**json.loads(args.node_child))))
        return 0
    if args.app_pods < 1 or args.volumes < 1 or args.app_pods < args.volumes:
        parser.error("--app-pods and --volumes must be positive, with at least one app pod per volume")
    if os.geteuid() != 0:
        print("the benchmark mounts FUSE file systems and must run as root", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from tests.support.driver import mounts_under  # noqa: PLC0415 - parent only

    machine = Machine.describe()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    start_load = load_average()
    command = "python -m bench.mount_pod_mode " + " ".join(
        [f"--app-pods {args.app_pods}", f"--volumes {args.volumes}"]
        + ([f"--steady-seconds {args.steady_seconds:g}"] if args.steady_seconds != 60.0 else [])
        + (["--write-docs"] if args.write_docs else [])
    )
    workdir = Path(tempfile.mkdtemp(prefix="bmp-", dir="/tmp"))
    bench = Bench(workdir, args.app_pods, args.volumes, args.steady_seconds)
    started = time.monotonic()
    try:
        asyncio.run(run_bench(bench))
    except (Exception, KeyboardInterrupt, asyncio.CancelledError):
        if bench.child is not None:
            print(f"benchmark failed; node plugin log tail:\n{bench.child.log_tail()}", file=sys.stderr)
        raise
    finally:
        left = mounts_under(workdir)
        if not left:
            shutil.rmtree(workdir, ignore_errors=True)
    section, met = report(bench, machine, (start_load, load_average()), date, command)
    print()
    print(section)
    print(f"run took {time.monotonic() - started:.0f} s")
    if args.write_docs:
        write_docs(section, START_MARKER, END_MARKER)
        print(f"wrote {DOCS}")
    if left:
        print(f"left behind: mounts {left}", file=sys.stderr)
        return 1
    return 0 if all(met.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
