"""Is a path served? Probed in a bounded thread pool, so a hung FUSE mount costs a thread, not the loop."""

from __future__ import annotations

import asyncio
import errno
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

_PROBES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="path-probe")
Stat = asyncio.Future[os.stat_result]
# The stat still running for a path, per event loop: a hung mount holds one probe thread, not the whole pool.
_PENDING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Stat]] = weakref.WeakKeyDictionary()
# Errors a FUSE mount answers with once its client is gone.
BROKEN_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ESTALE})


class PathState(Enum):
    HEALTHY = "healthy"
    BROKEN = "broken"
    MISSING = "missing"
    HUNG = "hung"
    NOT_MOUNTED = "not mounted"


async def probe(path: str, timeout: float = 5.0, root_inode: int | None = None) -> tuple[PathState, str]:
    """The state and a human reason (empty when healthy).

    With `root_inode`, `path` must be the root of a mount: a detached mount point
    stats fine, as the plain directory it was mounted on.
    """
    loop = asyncio.get_running_loop()
    pending = _PENDING.setdefault(loop, {})
    future = pending.get(path)
    if future is None:  # else join the stat in flight: a hung one must not take another thread
        future = pending[path] = loop.run_in_executor(_PROBES, os.stat, path)
        future.add_done_callback(lambda done: _finished(pending, path, done))
    try:
        result = await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        return PathState.HUNG, f"stat {path} did not answer within {timeout:.0f}s"
    except FileNotFoundError:
        return PathState.MISSING, f"{path} does not exist"
    except OSError as exc:
        if exc.errno in BROKEN_ERRNOS:
            return PathState.BROKEN, f"{path}: {os.strerror(exc.errno or 0)}"
        raise
    if root_inode is not None and result.st_ino != root_inode:
        return PathState.NOT_MOUNTED, f"{path} is not a mount point any more"
    return PathState.HEALTHY, ""


def _finished(pending: dict[str, Stat], path: str, done: Stat) -> None:
    if pending.get(path) is done:
        del pending[path]
    if not done.cancelled():
        done.exception()  # retrieved: a stat that answers after its caller gave up is not an error to log


async def statvfs(path: str, timeout: float = 5.0) -> os.statvfs_result:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(_PROBES, os.statvfs, path), timeout)
