"""Every write in a staging tree, as it happens: Linux inotify through ctypes (no binding
to install; the suite must run wherever Python does).

A ``TreeWatch`` watches a directory and each directory created below it (a directory is
watched from the moment its creation event is read; what was created inside it before
that is found by listing it then). A listing comes after the watch, so what is created
between the two is both listed and reported by a queued event read later: its first
event being its creation, the listing saw that creation and its "listed" is dropped, the
queued events keep the order (else a manifest made in that gap was listed before the
artifact writes queued ahead of it). The events are kept in order, each as (kind, relative
path); the checks judge their order (the manifest last, nothing outside the allowed
places). Where inotify is missing, ``TreeWatch.open`` returns None and the checks judge
the final tree only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_Q_OVERFLOW = 0x4000
_IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
_KINDS = (
    (_IN_CREATE, "create"),
    (_IN_MODIFY, "modify"),
    (_IN_CLOSE_WRITE, "close-write"),
    (_IN_MOVED_FROM, "moved-from"),
    (_IN_MOVED_TO, "moved-to"),
    (_IN_DELETE, "delete"),
)


@dataclass(frozen=True)
class Event:
    """One change in the tree: ``kind`` create, modify, close-write, moved-from, moved-to,
    delete or listed (found when its directory began to be watched); ``path`` relative to
    the watched root; ``is_dir``."""

    kind: str
    path: str
    is_dir: bool = False


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return lib


class TreeWatch:
    """The events of one directory tree, read on each ``poll``."""

    def __init__(self, lib: ctypes.CDLL, fd: int, root: Path) -> None:
        self._lib = lib
        self._fd = fd
        self.root = root
        self._dirs: dict[int, str] = {}  # watch descriptor -> relative directory ("" = root)
        self._moving: dict[int, str] = {}  # rename cookie -> the directory's old path
        self._events: list[Event] = []
        self._listed: dict[str, int] = {}  # listed path -> its event's index, until its next event
        self._dropped: set[int] = set()  # listings of what a queued event shows created later
        self.overflowed = False
        self._stop = threading.Event()
        self._watch("")
        # a thread of its own, woken by each event: a directory the agent creates is
        # watched within microseconds, before most of what it writes inside
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if poller.poll(50):
                self.poll()

    @classmethod
    def open(cls, root: Path) -> TreeWatch | None:
        """A watch of ``root`` (which must exist), None where inotify is not available."""
        lib = _libc()
        if lib is None:
            return None
        fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None
        return cls(lib, fd, root)

    def _watch(self, rel: str) -> None:
        path = self.root / rel if rel else self.root
        wd = self._lib.inotify_add_watch(self._fd, os.fsencode(path), _MASK)
        if wd < 0:
            return  # gone already: its creation and removal are in the events
        if self._dirs.get(wd) == rel:
            # Watched already: listed as its parent was, and now its creation event is
            # read too. Listed again, what was written in it since would be listed
            # before the queued events of those writes, out of order (a manifest listed,
            # then the artifact written before it seen as written after it).
            return
        self._dirs[wd] = rel
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(path), key=lambda e: e.name):
                sub = f"{rel}/{entry.name}" if rel else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                self._listed[sub] = len(self._events)
                self._events.append(Event("listed", sub, is_dir))
                if is_dir:
                    self._watch(sub)

    @property
    def events(self) -> list[Event]:
        """The events so far, in the order they happened."""
        return [e for i, e in enumerate(self._events) if i not in self._dropped]

    def watching(self, rel: str) -> bool:
        """Whether the directory ``rel`` (relative to the root) is watched yet."""
        return rel in self._dirs.values()

    def poll(self) -> None:
        """Read every pending event (the watch's thread does; ``close`` once more)."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return
            offset = 0
            while offset < len(data):
                wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset : offset + length].rstrip(b"\0").decode("utf-8", "replace")
                offset += length
                self._event(wd, mask, cookie, name)

    def _event(self, wd: int, mask: int, cookie: int, name: str) -> None:
        if mask & _IN_Q_OVERFLOW:
            self.overflowed = True
            return
        base = self._dirs.get(wd)
        if base is None or not name:
            return
        rel = f"{base}/{name}" if base else name
        is_dir = bool(mask & _IN_ISDIR)
        listed = self._listed.pop(rel, None)
        if listed is not None and mask & (_IN_CREATE | _IN_MOVED_TO):
            self._dropped.add(listed)  # created after the watch: the queued events tell when
        for bit, kind in _KINDS:
            if mask & bit:
                self._events.append(Event(kind, rel, is_dir))
        if is_dir and mask & _IN_MOVED_FROM:
            self._moving[cookie] = rel
        if is_dir and mask & _IN_MOVED_TO and cookie in self._moving:
            # the watches follow the directories: rename the paths they report
            old = self._moving.pop(cookie)
            for d, path in self._dirs.items():
                if path == old or path.startswith(old + "/"):
                    self._dirs[d] = rel + path[len(old) :]
        elif is_dir and mask & (_IN_CREATE | _IN_MOVED_TO):
            self._watch(rel)

    def close(self) -> None:
        """Stop the thread, read what is left and release the descriptor."""
        self._stop.set()
        self._thread.join()
        self.poll()
        with contextlib.suppress(OSError):
            os.close(self._fd)
