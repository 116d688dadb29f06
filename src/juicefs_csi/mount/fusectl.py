"""The FUSE control file system: the last resort for a connection whose daemon cannot answer.

Writing to `<fusectl>/<connection>/abort` fails every pending and future request of that
connection, which releases whoever waits on it (the driver's own stats, app processes, a
client stuck on its own mount). Shared by the process mode (killing a client) and the
mount pod mode (a mount pod stuck terminating).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import read_mounts

log = logging.getLogger("juicefs_csi.fusectl")

FUSECTL = "/sys/fs/fuse/connections"
# Kernel-internal dev_t, which names a connection in fusectl: 12 bits major, 20 bits minor.
KERNEL_MINOR_BITS = 20


def fusectl_root() -> str | None:
    """Where fusectl is mounted, mounting it where systemd would if nobody has."""
    for entry in read_mounts():
        if entry.fs_type == "fusectl":
            return entry.mount_point
    try:
        syscalls.mount_fusectl(FUSECTL)
    except OSError as exc:
        log.warning("fusectl unavailable: stuck FUSE connections cannot be aborted", extra={"error": str(exc)})
        return None
    return FUSECTL


def connection_of(device: str) -> int:
    """A mount's `major:minor` (mountinfo) as the kernel-internal dev_t that names its FUSE connection."""
    major, minor = (int(part) for part in device.split(":"))
    return (major << KERNEL_MINOR_BITS) | minor


def abort_connections(fusectl: str | None, connections: Iterable[int]) -> list[int]:
    """Abort each connection; returns those aborted (one that no longer exists is not an error)."""
    wanted = sorted(set(connections))
    if wanted and fusectl is None:
        log.warning("cannot abort FUSE connections without fusectl", extra={"connections": wanted})
        return []
    aborted = []
    for connection in wanted:
        try:
            if fusectl and syscalls.abort_fuse_connection(fusectl, connection):
                log.info("aborted FUSE connection", extra={"connection": connection})
                aborted.append(connection)
        except OSError as exc:
            log.warning("cannot abort FUSE connection", extra={"connection": connection, "error": str(exc)})
    return aborted
