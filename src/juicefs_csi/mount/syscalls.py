"""mount(2) and umount2(2) through libc: no `mount` binary, no shell, no argv to parse."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str, path: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what} {path}: {os.strerror(code)}")


def bind_mount(source: str, target: str, read_only: bool = False) -> None:
    """A read-only bind needs a second remount: the kernel ignores MS_RDONLY on the first call."""
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), "bind", target)
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        result = _libc.mount(None, target.encode(), None, flags, None)
        if result != 0:
            code = ctypes.get_errno()
            _libc.umount2(target.encode(), MNT_DETACH)
            raise OSError(code, f"read-only remount {target}: {os.strerror(code)}")


def unmount(target: str, lazy: bool = True) -> bool:
    """True if something was unmounted; a path that is not a mount point is not an error."""
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if lazy else 0)
    if _libc.umount2(target.encode(), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, f"unmount {target}: {os.strerror(code)}")
