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
# The new mount API (Linux 5.2; MOVE_MOUNT_BENEATH 6.5): one syscall number on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_BENEATH = 0x200
MOUNT_ATTR_RDONLY = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


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


def bind_beneath(source: str, target: str, read_only: bool = False) -> None:
    """Bind `source` under the mount on top of `target`: unmounting that top then reveals it, with no gap.

    Raises OSError where the kernel cannot (before Linux 6.5, or where propagation forbids it).
    """
    fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC)
    if fd < 0:
        _check(fd, "open_tree", source)
    try:
        if read_only:
            attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
            result = _libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
            _check(result, "read-only", source)
        flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH
        result = _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), flags)
        _check(result, "mount beneath", target)
    finally:
        os.close(fd)


def unmount(target: str, lazy: bool = True) -> bool:
    """True if something was unmounted; a path that is not a mount point is not an error."""
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if lazy else 0)
    if _libc.umount2(target.encode(), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, f"unmount {target}: {os.strerror(code)}")


def mount_fusectl(path: str) -> None:
    """The FUSE control file system: the only way to abort a connection whose daemon cannot answer."""
    _check(_libc.mount(b"fusectl", path.encode(), b"fusectl", 0, None), "mount fusectl at", path)


def abort_fuse_connection(fusectl: str, connection: int) -> bool:
    """Fail every pending and future request of a FUSE connection; False if it no longer exists."""
    try:
        with open(os.path.join(fusectl, str(connection), "abort"), "w", encoding="ascii") as handle:
            handle.write("1")
    except FileNotFoundError:
        return False
    return True
