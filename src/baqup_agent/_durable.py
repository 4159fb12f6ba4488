"""Durable writes: data and directory entries fsynced before the caller goes on.

The staging area and the spool both promise that what they wrote survives a crash
(contract sections 3 and 4); these two helpers are that promise in one place.
"""

from __future__ import annotations

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
