"""Target paths: validation, creation, binding and removal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import MountEntry, mounts_at, read_mounts

MAX_STACKED_UNMOUNTS = 16


def validate_target(target: str, allowed_prefix: str = "") -> str:
    if not target:
        raise InvalidArgument("target_path is required")
    if any(ord(c) < 0x20 for c in target):
        raise InvalidArgument("target_path contains control characters")
    if not posixpath.isabs(target):
        raise InvalidArgument(f"target_path {target!r} must be an absolute path")
    if ".." in target.split("/") or posixpath.normpath(target) != target.rstrip("/"):
        raise InvalidArgument(f"target_path {target!r} must be a normalized path without '..'")
    if allowed_prefix and not target.startswith(allowed_prefix.rstrip("/") + "/"):
        raise InvalidArgument(f"target_path {target!r} is outside the kubelet directory {allowed_prefix!r}")
    return target.rstrip("/")


async def bind(source: str, target: str, read_only: bool) -> None:
    await asyncio.to_thread(_bind_sync, source, target, read_only)


def _bind_sync(source: str, target: str, read_only: bool) -> None:
    os.makedirs(target, exist_ok=True)
    syscalls.bind_mount(source, target, read_only)


async def replace_bind(source: str, target: str, read_only: bool) -> None:
    """Bind `source` at `target`, replacing what is mounted there without ever leaving the bare directory.

    A workload writing through its volume path during a recovery must get errors
    from the dead mount, never write to the node's disk below it.
    """
    await asyncio.to_thread(_replace_bind_sync, source, target, read_only)


def _replace_bind_sync(source: str, target: str, read_only: bool) -> None:
    if not mounts_at(read_mounts(), target):
        _bind_sync(source, target, read_only)
        return
    try:
        syscalls.bind_beneath(source, target, read_only)
    except OSError:
        # Older kernel: stack on top. The dead mount stays hidden below until unpublish peels it.
        syscalls.bind_mount(source, target, read_only)
        return
    syscalls.unmount(target, lazy=True)


async def unmount_all(path: str) -> None:
    """Peel every stacked mount off a path (a dead bind may sit under a fresh one)."""
    await asyncio.to_thread(_unmount_all_sync, path)


def _unmount_all_sync(path: str) -> None:
    for _ in range(MAX_STACKED_UNMOUNTS):
        if not syscalls.unmount(path, lazy=True):
            return


async def remove_target(target: str) -> None:
    """Unmount and remove the directory, as CSI asks of NodeUnpublishVolume."""
    await unmount_all(target)
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread(os.rmdir, target)


async def mount_entries(path: str) -> list[MountEntry]:
    entries = await asyncio.to_thread(read_mounts)
    return mounts_at(entries, path)
