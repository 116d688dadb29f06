"""Benchmark of the process mount mode: what the driver adds on top of a bare `juicefs mount`.

Everything runs in one invocation on one embedded volume (SQLite metadata, local
`file` object storage), formatted once, so that bare and driver numbers differ
only by the driver. The driver is the real `juicefs-csi` binary, driven over its
CSI socket like kubelet drives it.

    .venv/bin/python -m bench.process_mode [--rounds N] [--write-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench._report import (
    DOCS,
    Machine,
    load_average,
    median,
    mib,
    ms,
    p90,
    proc_status_kib,
    terminate_as_interrupt,
    verdict,
    wait_until,
    write_docs,
)
from juicefs_csi.juicefs.runner import base_environment, find_binary
from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import MountTableWatch
from tests.support.driver import DriverProcess, cleanup, juicefs_processes, mounts_under

JUICEFS = find_binary()
VOLUME_NAME = "benchvol"
VOLUME_ID = "bench-vol"
READY_POLL_SECONDS = 0.005  # the driver's own wait (mount/process.py): on mount table changes, or after this
JUICEFS_ROOT_INODE = 1
SETTLE_SECONDS = 1.0
WAIT_TIMEOUT = 60.0
WARM_ROUNDS = 100
CONCURRENT_TARGETS = 50
RSS_TARGETS = 200
RSS_VOLUMES = 10
RSS_PUBLISH_PARALLELISM = 8
COLD_OVERHEAD_TARGET = 0.10
WARM_MEDIAN_TARGET = 0.030
START_MARKER = "<!-- bench:process-mode:start -->"
END_MARKER = "<!-- bench:process-mode:end -->"
JUICEFS_LOG_LINE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}) juicefs\[\d+\] <\w+>: (.*)$")


# -- small helpers -----------------------------------------------------------------------------


def is_juicefs_root(path: Path) -> bool:
    try:
        return os.stat(path).st_ino == JUICEFS_ROOT_INODE
    except OSError:
        return False


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields after the command name: [state, ppid, pgrp, ...]; None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group: a juicefs client is a supervisor plus the FUSE worker it forks."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat_fields(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def cpu_seconds(pid: int) -> float:
    """CPU time of all threads of a process, in ns resolution (schedstat), unlike the 10 ms ticks of /proc/stat."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def run_concurrently(calls: Sequence[Callable[[], object]], parallelism: int | None = None) -> float:
    """Wall time of running all calls at once, measured from a common start line (a barrier)."""
    workers = parallelism or len(calls)
    barrier = threading.Barrier(workers + 1)
    queue = list(calls)
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        while True:
            with lock:
                if not queue:
                    return
                call = queue.pop()
            call()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
        barrier.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        return time.perf_counter() - started


# -- logs: where the time of one mount goes -----------------------------------------------------


@dataclass
class LogCursor:
    """Reads only what a log file gained since the cursor was placed, so rounds do not mix."""

    path: Path
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def new_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode(errors="replace").splitlines()


def client_milestones(lines: Sequence[str]) -> tuple[float, float] | None:
    """(first log line, "Mounting volume") as wall-clock times: the client's start and its FUSE mount call."""
    first = mounting = None
    for line in lines:
        match = JUICEFS_LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y/%m/%d %H:%M:%S.%f").timestamp()  # local time, like juicefs
        first = first if first is not None else stamp
        if match.group(2).startswith("Mounting volume"):
            mounting = stamp
            break
    return (first, mounting) if first is not None and mounting is not None else None


def driver_ready_time(lines: Sequence[str]) -> float | None:
    """When the driver saw the client answer ("juicefs client ready", millisecond timestamps)."""
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("msg") == "juicefs client ready":
                return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
    return None


@dataclass
class Phases:
    """One mount split at the client's first log line and at its FUSE mount call."""

    to_client_start: list[float] = field(default_factory=list)
    client_startup: list[float] = field(default_factory=list)
    fuse_to_ready: list[float] = field(default_factory=list)
    ready_to_return: list[float] = field(default_factory=list)
    # CPU the supervising side burnt meanwhile: on a busy machine, it is taken from the starting client.
    supervisor_cpu: list[float] = field(default_factory=list)

    def add(self, started: float, milestones: tuple[float, float] | None, ready: float | None, done: float) -> None:
        if milestones is None:
            return
        first, mounting = milestones
        self.to_client_start.append(first - started)
        self.client_startup.append(mounting - first)
        if ready is not None:
            self.fuse_to_ready.append(ready - mounting)
            self.ready_to_return.append(done - ready)
        else:
            self.fuse_to_ready.append(done - mounting)


# -- the volume and the bare client -------------------------------------------------------------


@dataclass
class Volume:
    root: Path

    @property
    def meta(self) -> str:
        return f"sqlite3://{self.root / 'meta.db'}"

    @property
    def secret(self) -> dict[str, str]:
        """No `storage`: the volume is already formatted, so the driver must not format it again."""
        return {"name": VOLUME_NAME, "metaurl": self.meta}

    def format(self) -> str:
        """Formats the volume and returns its UUID (its default cache directory is named after it)."""
        result = subprocess.run(
            [JUICEFS, "format", "--storage=file", f"--bucket={self.root / 'bucket'}/", self.meta, VOLUME_NAME],
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.search(r'"UUID": "([0-9a-f-]+)"', result.stdout + result.stderr)
        return found.group(1) if found else ""


class BareMount:
    """`juicefs mount META MOUNTPOINT` in the foreground, started and supervised like the driver does it."""

    def __init__(self, volume: Volume, mountpoint: Path, log_path: Path) -> None:
        self.volume = volume
        self.mountpoint = mountpoint
        self.log = LogCursor(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        mountpoint.mkdir(parents=True, exist_ok=True)

    def round(self, phases: Phases) -> float:
        """Seconds from spawn until the mount point's inode is 1; unmounts and waits for the exit."""
        self.log.mark()
        table = MountTableWatch()  # detects the mount exactly as the driver does, so neither side is favoured
        with open(self.log.path, "ab") as log:
            cpu = cpu_seconds(os.getpid())
            wall = time.time()
            started = time.perf_counter()
            self.process = subprocess.Popen(
                [JUICEFS, "mount", self.volume.meta, str(self.mountpoint)],
                env=base_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            while not is_juicefs_root(self.mountpoint):
                if self.process.poll() is not None:
                    tail = "\n".join(self.log.new_lines()[-10:])
                    raise RuntimeError(f"bare juicefs mount exited with {self.process.returncode}:\n{tail}")
                table.wait(READY_POLL_SECONDS)
            elapsed = time.perf_counter() - started
            phases.supervisor_cpu.append(cpu_seconds(os.getpid()) - cpu)
            phases.add(wall, client_milestones(self.log.new_lines()), None, wall + elapsed)
        finally:
            table.close()
            self.stop()
        return elapsed

    def stop(self) -> None:
        """Unmount first so the client exits cleanly, as the driver does; kill only a client that hangs."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(OSError):
            syscalls.unmount(str(self.mountpoint), lazy=True)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        wait_until(lambda: not group_members(process.pid), "the bare client's worker to exit", WAIT_TIMEOUT)
        self.process = None


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything one run measured; times in seconds, memory in KiB."""

    uuid: str = ""
    bare: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    bare_phases: Phases = field(default_factory=Phases)
    cold_phases: Phases = field(default_factory=Phases)
    warm_publish: list[float] = field(default_factory=list)
    warm_unpublish: list[float] = field(default_factory=list)
    burst_publish: float = 0.0
    burst_unpublish: float = 0.0
    rss_idle: int = 0
    rss_after: int = 0
    # (driver RSS, number of clients, clients' total RSS)
    rss_one_volume: tuple[int, int, int] = (0, 0, 0)
    rss_ten_volumes: tuple[int, int, int] = (0, 0, 0)


class Bench:
    """Holds the driver, the volume and every target it published, so that cleanup can undo all of it."""

    def __init__(self, workdir: Path, rounds: int) -> None:
        self.workdir = workdir
        self.rounds = rounds
        self.volume = Volume(workdir / "volume")
        self.volume.root.mkdir(parents=True)
        self.driver = DriverProcess(workdir / "driver", node_id="bench-node", extra_args=["--log-level=info"])
        self.bare = BareMount(self.volume, workdir / "bare-mp", workdir / "bare.log")
        self.published: dict[Path, str] = {}
        self.counter = 0
        self.results = Results()

    # -- publishing --

    def target(self, label: str) -> Path:
        self.counter += 1
        return self.workdir / "pods" / f"{label}-{self.counter}" / "mount"

    def publish(self, target: Path, volume_id: str = VOLUME_ID, sub_path: str = "") -> float:
        context = {"subPath": sub_path} if sub_path else {}
        started = time.perf_counter()
        self.driver.publish(volume_id, target, self.volume.secret, context)
        elapsed = time.perf_counter() - started
        self.published[target] = volume_id
        return elapsed

    def unpublish(self, target: Path) -> float:
        started = time.perf_counter()
        self.driver.unpublish(self.published[target], target)
        elapsed = time.perf_counter() - started
        del self.published[target]
        return elapsed

    def unpublish_all(self, parallelism: int = RSS_PUBLISH_PARALLELISM) -> None:
        run_concurrently([partial(self.unpublish, t) for t in list(self.published)], parallelism)

    def client_log(self) -> LogCursor:
        logs = sorted((self.driver.state_dir / "node" / "logs").glob("*.log"))
        if len(logs) != 1:
            raise RuntimeError(f"expected the log of one client, found {len(logs)}")
        return LogCursor(logs[0])

    def wait_no_clients(self) -> None:
        """A cold publish must find nothing: no client process, no mount, no mount point left to reuse."""
        root = self.driver.mount_root

        def gone() -> bool:
            running = [pid for pid, argv in juicefs_processes() if any(str(root) in a for a in argv)]
            leftovers = list(root.iterdir()) if root.exists() else []
            return not running and not self.driver.client_pids() and not mounts_under(root) and not leftovers

        wait_until(gone, "the driver's juicefs clients to stop", WAIT_TIMEOUT)

    def client_rss(self) -> tuple[int, int]:
        """(number of clients, total VmRSS in KiB of their processes, supervisor and FUSE worker)."""
        clients = self.driver.client_pids()
        return len(clients), sum(proc_status_kib(pid) for client in clients for pid in group_members(client))

    @property
    def driver_pid(self) -> int:
        assert self.driver.process is not None
        return self.driver.process.pid

    def driver_rss(self) -> int:
        return proc_status_kib(self.driver_pid)

    def verify_served(self, targets: Sequence[Path]) -> None:
        broken = [t for t in targets if not os.path.ismount(t)]
        if broken:
            raise RuntimeError(f"{len(broken)} targets are not mounted, e.g. {broken[0]}")

    # -- scenarios --

    def bare_and_cold(self) -> None:
        """Interleaved, so that any drift of the machine hits both the same; one untimed warm-up pair first."""
        r = self.results
        throwaway = Phases()
        driver_log = LogCursor(self.driver.log_path)
        for index in range(self.rounds + 1):
            warm_up = index == 0
            self.wait_no_clients()
            bare_time = self.bare.round(throwaway if warm_up else r.bare_phases)
            self.wait_no_clients()
            target = self.target("cold")
            driver_log.mark()
            client_log = self.client_log() if not warm_up else None
            if client_log:
                client_log.mark()
            cpu = cpu_seconds(self.driver_pid)
            wall = time.time()
            cold_time = self.publish(target)
            cpu = cpu_seconds(self.driver_pid) - cpu
            if not is_juicefs_root(target):
                raise RuntimeError(f"cold publish returned but {target} does not serve the volume root")
            if client_log:
                r.cold_phases.supervisor_cpu.append(cpu)
                ready = driver_ready_time(driver_log.new_lines())
                r.cold_phases.add(wall, client_milestones(client_log.new_lines()), ready, wall + cold_time)
            self.unpublish(target)
            if not warm_up:
                r.bare.append(bare_time)
                r.cold.append(cold_time)
            print(f"  round {index}{' (warm-up)' if warm_up else ''}: bare {ms(bare_time)}, cold {ms(cold_time)}")
        self.wait_no_clients()

    def warm(self) -> None:
        """New targets of a volume whose client already runs: the path of every pod after the first."""
        anchor = self.target("anchor")
        self.publish(anchor)
        for _ in range(WARM_ROUNDS):
            target = self.target("warm")
            self.results.warm_publish.append(self.publish(target))
            self.results.warm_unpublish.append(self.unpublish(target))
        self.unpublish(anchor)
        self.wait_no_clients()

    def concurrent(self) -> None:
        """A deployment scaling up at once: the first publish starts the client, the rest must wait for it."""
        self.wait_no_clients()
        targets = [self.target("burst") for _ in range(CONCURRENT_TARGETS)]
        self.results.burst_publish = run_concurrently([partial(self.publish, t) for t in targets])
        self.verify_served(targets)
        clients = len(self.driver.client_pids())
        if clients != 1:
            raise RuntimeError(f"{CONCURRENT_TARGETS} concurrent publishes of one volume started {clients} clients")
        self.results.burst_unpublish = run_concurrently([partial(self.unpublish, t) for t in targets])
        self.wait_no_clients()

    def memory(self) -> None:
        """Driver RSS with many targets; clients reported apart, since they are juicefs' memory, not ours."""
        time.sleep(SETTLE_SECONDS)
        self.results.rss_idle = self.driver_rss()

        targets = [self.target("rss1") for _ in range(RSS_TARGETS)]
        run_concurrently([partial(self.publish, t) for t in targets], RSS_PUBLISH_PARALLELISM)
        self.verify_served(targets)
        time.sleep(SETTLE_SECONDS)
        self.results.rss_one_volume = (self.driver_rss(), *self.client_rss())
        self.unpublish_all()
        self.wait_no_clients()

        per_volume = RSS_TARGETS // RSS_VOLUMES
        spread = [
            (f"{VOLUME_ID}-{v}", self.target(f"rss10-v{v}")) for v in range(RSS_VOLUMES) for _ in range(per_volume)
        ]
        run_concurrently([partial(self.publish, t, v, sub_path=v) for v, t in spread], RSS_PUBLISH_PARALLELISM)
        self.verify_served([t for _, t in spread])
        time.sleep(SETTLE_SECONDS)
        self.results.rss_ten_volumes = (self.driver_rss(), *self.client_rss())
        self.unpublish_all()
        self.wait_no_clients()
        time.sleep(SETTLE_SECONDS)
        self.results.rss_after = self.driver_rss()

    # -- whole run --

    def run(self) -> None:
        print(f"formatting the volume in {self.volume.root}")
        self.results.uuid = self.volume.format()
        print(f"volume UUID {self.results.uuid or '(unknown)'}")
        print("starting the driver")
        self.driver.start()
        print(f"bare juicefs mount vs cold NodePublishVolume, {self.rounds} rounds each, interleaved")
        self.bare_and_cold()
        print(f"warm NodePublishVolume, {WARM_ROUNDS} rounds")
        self.warm()
        print(f"{CONCURRENT_TARGETS} concurrent publishes and unpublishes")
        self.concurrent()
        print(f"memory with {RSS_TARGETS} targets on 1 and on {RSS_VOLUMES} volumes")
        self.memory()

    def close(self) -> None:
        """Undo everything, whatever state the run stopped in: targets, driver, clients, mounts, files."""
        try:
            with contextlib.suppress(Exception):
                self.bare.stop()
            if self.driver.process is not None and self.driver.process.poll() is None:
                for target in list(self.published):
                    with contextlib.suppress(Exception):
                        self.unpublish(target)
            with contextlib.suppress(Exception):
                self.driver.stop()
        finally:
            cleanup(self.workdir)
            if self.results.uuid:
                shutil.rmtree(Path("/var/jfsCache") / self.results.uuid, ignore_errors=True)
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- report ------------------------------------------------------------------------------------


def phase_rows(bare: Phases, cold: Phases) -> list[str]:
    def cell(values: list[float]) -> str:
        return ms(median(values)) if values else "—"

    return [
        "| Phase (median) | Bare `juicefs mount` | Cold NodePublishVolume |",
        "|---|---|---|",
        f"| Start → client's first log line (bare: exec; cold: gRPC + driver work before the spawn + exec) "
        f"| {cell(bare.to_client_start)} | {cell(cold.to_client_start)} |",
        f"| Client's first log line → its FUSE mount call | {cell(bare.client_startup)} "
        f"| {cell(cold.client_startup)} |",
        f'| FUSE mount call → root inode seen (cold: driver\'s "client ready" log, ms resolution) '
        f"| {cell(bare.fuse_to_ready)} | {cell(cold.fuse_to_ready)} |",
        f"| Client ready → RPC returns (bind, state file, response) | — | {cell(cold.ready_to_return)} |",
        f"| CPU time the supervising side used meanwhile, all threads (bare: this benchmark's wait loop; "
        f"cold: the driver) | {cell(bare.supervisor_cpu)} | {cell(cold.supervisor_cpu)} |",
    ]


def report(bench: Bench, machine: Machine, loads: tuple[str, str], date: str) -> tuple[str, dict[str, bool]]:
    """The Markdown section, and whether each target is met."""
    r = bench.results
    bare, cold, warm, warm_un = r.bare, r.cold, r.warm_publish, r.warm_unpublish
    overhead = (median(cold) - median(bare)) / median(bare)
    met = {"cold": overhead < COLD_OVERHEAD_TARGET, "warm": median(warm) < WARM_MEDIAN_TARGET}
    one, ten = r.rss_one_volume, r.rss_ten_volumes
    lines = [
        START_MARKER,
        "## Process mount mode",
        "",
        f"Measured {date} with `python -m bench.process_mode --rounds {bench.rounds} --write-docs` "
        "(the real `juicefs-csi` driver over its CSI socket, the real juicefs client). "
        "One volume for everything: SQLite metadata and local `file` object storage under /tmp, "
        "formatted once beforehand; the Secret names no storage, so the driver never formats.",
        "",
        *machine.rows(loads),
        *machine.busy_note(
            loads[0], "expect noise of several ms per mount; bare and cold rounds alternate, so it hits both alike."
        ),
        "| Measurement | Median | p90 | Target | Met |",
        "|---|---|---|---|---|",
        f"| Bare `juicefs mount` until the mount point's inode is 1 ({len(bare)} rounds) "
        f"| {ms(median(bare))} | {ms(p90(bare))} | — | |",
        f"| Cold NodePublishVolume: no client runs yet ({len(cold)} rounds, interleaved with bare) "
        f"| {ms(median(cold))} | {ms(p90(cold))} | — | |",
        f"| Cold overhead: (cold - bare) / bare, medians | {overhead:+.1%} | | < 10 % | {verdict(met['cold'])} |",
        f"| Warm NodePublishVolume: client already running, new target ({len(warm)} rounds) "
        f"| {ms(median(warm))} | {ms(p90(warm))} | median < 30 ms | {verdict(met['warm'])} |",
        f"| Warm NodeUnpublishVolume, client keeps running ({len(warm_un)} rounds) "
        f"| {ms(median(warm_un))} | {ms(p90(warm_un))} | — | |",
        f"| {CONCURRENT_TARGETS} concurrent publishes of one volume, fresh client: wall time "
        f"| {ms(r.burst_publish)} (1 client started) | | — | |",
        f"| {CONCURRENT_TARGETS} concurrent unpublishes: wall time | {ms(r.burst_unpublish)} | | — | |",
        "",
        f"Memory: VmRSS from /proc after a {SETTLE_SECONDS:.0f} s settle (no forced GC). "
        "The juicefs clients (supervisor and FUSE worker each) are counted apart from the driver.",
        "",
        "| Driver state | Driver RSS | juicefs clients | Clients' RSS |",
        "|---|---|---|---|",
        f"| Idle, nothing published | {mib(r.rss_idle)} | 0 | — |",
        f"| {RSS_TARGETS} targets of 1 volume | {mib(one[0])} | {one[1]} | {mib(one[2])} |",
        f"| {RSS_TARGETS} targets over {RSS_VOLUMES} volumes | {mib(ten[0])} | {ten[1]} "
        f"| {mib(ten[2])} ({mib(ten[2] // max(ten[1], 1))} each) |",
        f"| Idle again, everything unpublished | {mib(r.rss_after)} | 0 | — |",
        "",
        "Where a mount's time goes, from the client's own log timestamps (µs) and the driver's log (ms). "
        "The last row matters on a small machine: CPU the driver burns while the client starts is taken "
        "from the client's own start-up.",
        "",
        *phase_rows(r.bare_phases, r.cold_phases),
        END_MARKER,
    ]
    return "\n".join(lines) + "\n", met


# -- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.process_mode", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="bare and cold rounds each (default 10)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the results into {DOCS}")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if os.geteuid() != 0:
        print("the benchmark mounts FUSE file systems and must run as root", file=sys.stderr)
        return 1
    machine = Machine.describe()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    start_load = load_average()
    bench = Bench(Path(tempfile.mkdtemp(prefix="bpm-", dir="/tmp")), args.rounds)
    with terminate_as_interrupt():
        try:
            bench.run()
        except Exception:
            print(f"benchmark failed; driver log tail:\n{bench.driver.log_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            bench.close()
    section, met = report(bench, machine, (start_load, load_average()), date)
    print()
    print(section)
    if args.write_docs:
        write_docs(section, START_MARKER, END_MARKER)
        print(f"wrote {DOCS}")
    leftovers = [pid for pid, argv in juicefs_processes() if any(str(bench.workdir) in a for a in argv)]
    if leftovers or mounts_under(bench.workdir):
        print(f"left behind: processes {leftovers}, mounts {mounts_under(bench.workdir)}", file=sys.stderr)
        return 1
    return 0 if all(met.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
