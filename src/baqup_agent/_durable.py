"""OS primitives of durable output: fsynced writes, a no-replace rename, an inode-checked lock.

The staging area and the spool both promise that what they wrote survives a crash and
that two runs of one job never share a directory (contract sections 3 and 4); these
helpers are that promise in one place, over the system calls they need.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_dir(path: Path, *, best_effort: bool = False) -> None:
    """Make the entries of directory ``path`` (new files, renames) durable.

    ``best_effort``: ignore filesystems that cannot open or fsync a directory (the spool
    must keep working there); otherwise the OSError propagates.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:
            raise
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int, *, exclusive: bool = True) -> None:
    """Write ``data`` to ``path`` (never through a symlink) and fsync it.

    ``exclusive``: fail when ``path`` exists; otherwise it is truncated.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fdatasync(fd: int) -> None:
    """Flush ``fd``'s data and size: enough for appends, and cheaper than fsync on Linux."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def flock_exclusive(path: Path, mode: int) -> int:
    """An open descriptor of ``path`` (created with ``mode``, never through a symlink)
    holding an exclusive ``flock``; ``BlockingIOError`` when another process holds it.

    The holder unlinks the file when done (see ``unlock_and_remove``); a lock on an
    unlinked inode protects nothing, so after locking, the path is checked to still
    name the locked inode, and the lock taken again on the new file when it does not.
    """
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def unlock_and_remove(path: Path, fd: int) -> None:
    """Release a lock taken by ``flock_exclusive``: unlink ``path`` while still holding
    it (a waiter re-checks the inode), then close ``fd``."""
    path.unlink(missing_ok=True)
    os.close(fd)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that never replaces ``dst`` (plain rename replaces an empty directory).

    Uses ``renameat2(RENAME_NOREPLACE)``; where the kernel or filesystem lacks it, an
    existence check before a plain rename (``FileExistsError`` when ``dst`` exists).
    """
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        if (
            renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
            == 0
        ):
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # not supported here: fall back
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)
