"""What the benchmarks share: statistics, /proc readings, the machine table, docs/benchmarks.md, waiting
and SIGTERM handling.

Each benchmark owns one block of docs/benchmarks.md between its own start and end markers; `write_docs`
replaces only that block, so the benchmarks can be rerun independently.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from juicefs_csi.juicefs.runner import find_binary

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DOCS_HEADER = (
    "# Benchmarks\n\n"
    "Measured numbers of the driver, each section written by its benchmark under `bench/`.\n"
    "Rerun a benchmark with `--write-docs` to refresh its section; the others are left as they are.\n"
)
# A 1-min load above this per core when a run starts means other work shared the machine: the report says so.
BUSY_LOAD_PER_CORE = 0.25


# -- statistics and units --------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Interpolated percentile (`fraction` 0.9 is p90), the inclusive method: with 10 values, p90 sits
    between the two largest."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def p90(values: Sequence[float]) -> float:
    return percentile(values, 0.9)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def verdict(met: bool) -> str:
    return "✅" if met else "❌"


# -- running a benchmark -----------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], what: str, timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the cleanup in `finally` still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- /proc ---------------------------------------------------------------------------------------------


def proc_status_kib(pid: int, key: str = "VmRSS:") -> int:
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM, ...); 0 when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def load_average() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the machine -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    memory_gib: float
    kernel: str
    python: str
    juicefs: str

    @classmethod
    def describe(cls) -> Machine:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), ""
        )
        meminfo = Path("/proc/meminfo").read_text().split()
        total_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
        version = subprocess.run([find_binary(), "version"], capture_output=True, text=True, check=True).stdout
        return cls(
            cpu=model or platform.processor() or "unknown",
            cores=os.cpu_count() or 0,
            memory_gib=total_kib / (1 << 20),
            kernel=platform.release(),
            python=platform.python_version(),
            juicefs=version.strip().removeprefix("juicefs version "),
        )

    def rows(self, loads: tuple[str, str], memory_note: str = "") -> list[str]:
        """The machine table every section starts with; `loads` is the load average at start and end."""
        return [
            "| Machine | |",
            "|---|---|",
            f"| CPU | {self.cpu}, {self.cores} cores |",
            f"| Memory | {self.memory_gib:.1f} GiB{memory_note} |",
            f"| Kernel | {self.kernel} |",
            f"| Python | {self.python} |",
            f"| JuiceFS | {self.juicefs} |",
            f"| Load average (1/5/15 min) at start → end | {loads[0]} → {loads[1]} |",
            "",
        ]

    def busy_note(self, start_load: str, consequence: str) -> list[str]:
        """A paragraph when other work shared the machine as the run began; `consequence` says what that means."""
        busy = float(start_load.split(maxsplit=1)[0])
        if busy < BUSY_LOAD_PER_CORE * self.cores:
            return []
        return [
            f"The machine was shared with other work when the run started (1-min load {busy:.2f} on "
            f"{self.cores} cores): {consequence}",
            "",
        ]


# -- docs/benchmarks.md ----------------------------------------------------------------------------------


def write_docs(section: str, start_marker: str, end_marker: str, docs: Path = DOCS) -> None:
    """Replace only the block between this benchmark's markers (appended if absent); other benchmarks own
    the rest of the file."""
    docs.parent.mkdir(parents=True, exist_ok=True)
    text = docs.read_text() if docs.exists() else DOCS_HEADER
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_marker) :].removeprefix("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    docs.write_text(text)
