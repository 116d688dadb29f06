"""File operations on a JuiceFS volume root: create, remove and size per-volume sub-directories."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from juicefs_csi.errors import FailedPrecondition, InvalidArgument
from juicefs_csi.juicefs.runner import JuiceFS
from juicefs_csi.mount.state import PublishInputs
from juicefs_csi.volume.options import MountOptions
from juicefs_csi.volume.secrets import parse_credentials
from juicefs_csi.volume.settings import VolumeSettings, clean_sub_path

ADMIN_LINGER_SECONDS = 30.0


class RootBorrower(Protocol):
    def borrow(self, settings: VolumeSettings, inputs: PublishInputs) -> contextlib.AbstractAsyncContextManager[str]:
        """Hold a mount of the file system root for the duration of the block."""


class VolumeFiles:
    """One shared root mount per file system serves every controller operation on it.

    The mount lingers briefly after the last operation, so a burst of CreateVolume
    calls pays for one client start, not one each.
    """

    def __init__(self, borrower: RootBorrower, juicefs: JuiceFS, linger: float = ADMIN_LINGER_SECONDS) -> None:
        self.borrower = borrower
        self.juicefs = juicefs
        self.linger = linger

    @contextlib.asynccontextmanager
    async def _root(self, secrets: Mapping[str, str]) -> AsyncIterator[str]:
        credentials = parse_credentials(secrets)
        settings = VolumeSettings(
            volume_id=f"admin-{credentials.name}",
            credentials=credentials,
            options=MountOptions(),
            delete_delay=self.linger,
        )
        inputs = PublishInputs(settings.volume_id, dict(secrets), {}, [])
        async with self.borrower.borrow(settings, inputs) as root:
            yield root

    async def create(self, secrets: Mapping[str, str], sub_path: str, capacity_bytes: int) -> None:
        sub_path = _checked(sub_path)
        async with self._root(secrets) as root:
            path = os.path.join(root, sub_path)
            await asyncio.to_thread(_make_shared_dir, path)
        if capacity_bytes > 0:
            await self.juicefs.set_quota(parse_credentials(secrets), sub_path, capacity_bytes)

    async def exists(self, secrets: Mapping[str, str], sub_path: str) -> bool:
        sub_path = _checked(sub_path)
        async with self._root(secrets) as root:
            return await asyncio.to_thread(os.path.isdir, os.path.join(root, sub_path))

    async def remove(self, secrets: Mapping[str, str], sub_path: str) -> None:
        """Removes the sub-directory and everything in it; never the root."""
        sub_path = _checked(sub_path)
        async with self._root(secrets) as root:
            path = os.path.join(root, sub_path)
            if await asyncio.to_thread(os.path.lexists, path):
                await self.juicefs.remove_tree(path)

    async def resize(self, secrets: Mapping[str, str], sub_path: str, capacity_bytes: int) -> None:
        await self.juicefs.set_quota(parse_credentials(secrets), _checked(sub_path), capacity_bytes)


def _checked(sub_path: str) -> str:
    cleaned = clean_sub_path(sub_path, "volume sub-path")
    if not cleaned:
        raise FailedPrecondition("refusing to operate on the file system root")
    if len(cleaned) > 4096:
        raise InvalidArgument("volume sub-path is too long")
    return cleaned


def _make_shared_dir(path: str) -> None:
    """World-writable, as in the Go driver: the workload's uid is unknown at creation time."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
