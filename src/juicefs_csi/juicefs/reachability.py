"""Fail fast when a metadata engine is unreachable.

The juicefs client retries a closed Redis port for over a minute; a publish
should instead say at once which address does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib

from juicefs_csi.errors import Unavailable
from juicefs_csi.volume.secrets import MetaURL

DEFAULT_PORTS = {
    "redis": 6379,
    "rediss": 6379,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "tikv": 2379,
    "etcd": 2379,
}


def meta_address(meta: MetaURL) -> tuple[str, int] | None:
    """host:port of a single-host network engine; None when there is nothing simple to check."""
    port = DEFAULT_PORTS.get(meta.scheme)
    if port is None:
        return None
    rest = meta.url_without_password.split("://", 1)[1]
    authority = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2].strip("()")
    if not authority or "," in authority:
        return None
    host, colon, port_text = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
    if not colon:
        host = authority
    elif port_text.isdigit():
        port = int(port_text)
    else:
        return None
    return host.strip("[]") or "127.0.0.1", port


async def check_meta_reachable(meta: MetaURL, timeout: float = 5.0) -> None:
    address = meta_address(meta)
    if address is None:
        return
    host, port = address
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise Unavailable(f"metadata engine {meta.scheme}://{host}:{port} is unreachable: {reason}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
