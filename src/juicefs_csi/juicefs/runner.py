"""Runs `juicefs` commands without a shell and turns failures into safe, precise errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from juicefs_csi.errors import DeadlineExceeded, DriverError, FailedPrecondition, Internal, Unavailable
from juicefs_csi.juicefs.commands import Command, format_command, quota_set_command, rmr_command
from juicefs_csi.juicefs.reachability import check_meta_reachable
from juicefs_csi.volume.secrets import Credentials, redact

NOT_FORMATTED = "database is not formatted"
OUTPUT_TAIL_LINES = 20


def find_binary() -> str:
    """`JUICEFS_BINARY`, else the one installed beside this interpreter, else PATH."""
    configured = os.environ.get("JUICEFS_BINARY")
    if configured:
        return configured
    beside = Path(sys.executable).with_name("juicefs")
    if beside.exists():
        return str(beside)
    return shutil.which("juicefs") or "juicefs"


def base_environment() -> dict[str, str]:
    """The driver's environment minus anything credential-like it may have inherited."""
    inherited = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    return {k: v for k, v in os.environ.items() if k in inherited}


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str

    def tail(self, lines: int = OUTPUT_TAIL_LINES) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


class JuiceFS:
    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_binary()

    async def run(self, command: Command, timeout: float = 60.0) -> Result:
        """Output is redacted before it leaves this method."""
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv,
                env={**base_environment(), **command.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise Unavailable(f"cannot run {command.argv[0]}: {exc.strerror}") from None
        try:
            raw, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise DeadlineExceeded(f"juicefs {command.name} did not finish within {timeout:.0f}s") from None
        output = redact(raw.decode(errors="replace"), command.secret_values)
        return Result(process.returncode or 0, output)

    async def check(self, command: Command, timeout: float = 60.0) -> Result:
        result = await self.run(command, timeout)
        if result.returncode != 0:
            raise classify_failure(command, result)
        return result

    async def version(self) -> str:
        result = await self.check(Command((self.binary, "version")), timeout=10)
        return result.output.strip()

    async def format(self, credentials: Credentials) -> None:
        await check_meta_reachable(credentials.meta)
        await self.check(format_command(self.binary, credentials), timeout=120)

    async def set_quota(self, credentials: Credentials, path: str, capacity_bytes: int) -> None:
        await self.check(quota_set_command(self.binary, credentials, path, capacity_bytes), timeout=60)

    async def remove_tree(self, path: str) -> None:
        await self.check(rmr_command(self.binary, path), timeout=600)


def classify_failure(command: Command, result: Result) -> DriverError:
    tail = result.tail()
    if NOT_FORMATTED in result.output:
        return FailedPrecondition(
            "the JuiceFS volume is not formatted and the Secret names no 'storage' to format it with: " + tail
        )
    return Internal(f"juicefs {command.name} failed (exit {result.returncode}): {tail}")
