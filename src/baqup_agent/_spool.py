"""The filesystem spool of one job: JSON lines, appended and fsynced per message.

Layout (docs/architecture.md): ``SPOOL/JOB_ID/events.jsonl`` holds agent->controller
messages in ``seq`` order, ``SPOOL/JOB_ID/replayed`` the byte offset up to which they
were replayed to Redis, ``SPOOL/JOB_ID/control.jsonl`` controller->agent messages when
there is no Redis. Files are created on first use, so a job whose Redis never failed
leaves no spool behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

import orjson

from baqup_agent._durable import fdatasync, fsync_dir, write_file
from baqup_agent._keys import CONTROL_FILE, EVENTS_FILE, REPLAYED_FILE

# the modes keep staged data from being world-readable (contract section 7)
from baqup_agent.contract.wire import SPOOL_DIR_MODE as _DIR_MODE
from baqup_agent.contract.wire import SPOOL_FILE_MODE as _FILE_MODE

_TAIL_BYTES = 64 * 1024  # enough to find the last complete line (messages are < 10 KiB)
_READ_CHUNK = 256 * 1024


def read_lines(
    path: Path, offset: int = 0, limit: int | None = None
) -> tuple[list[tuple[int, bytes]], int]:
    """Up to ``limit`` complete lines of ``path`` after byte ``offset``, each with its
    end offset, and the offset to continue from next time.

    A trailing line without its newline is not returned (a writer may be halfway
    through it). Reads in chunks, so a long backlog is not read whole for one batch.
    """
    try:
        with open(path, "rb") as f:
            return _read_lines(f, offset, limit)
    except FileNotFoundError:
        return [], offset


def _read_lines(f: BinaryIO, offset: int, limit: int | None) -> tuple[list[tuple[int, bytes]], int]:
    lines: list[tuple[int, bytes]] = []
    f.seek(offset)
    buffer, start = b"", offset  # start: the file offset of buffer[0]
    while limit is None or len(lines) < limit:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            break
        buffer += chunk
        pos = 0
        while limit is None or len(lines) < limit:
            end = buffer.find(b"\n", pos)
            if end < 0:
                break
            if buffer[pos:end].strip():
                lines.append((start + end + 1, buffer[pos:end]))
            pos = end + 1
        buffer, start = buffer[pos:], start + pos
    return lines, start


class Spool:
    """The spool directory of one job (``root/JOB_ID``); thread-safe."""

    def __init__(self, root: str | Path, job_id: str) -> None:
        self.path = Path(root) / job_id
        self.events_path = self.path / EVENTS_FILE
        self.control_path = self.path / CONTROL_FILE
        self._replayed_path = self.path / REPLAYED_FILE
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = self._repair()
        self._replayed = self._read_replayed()

    def _repair(self) -> int:
        """Drop a partial last line left by a crash mid-append; return the file size.

        That message was never acknowledged (its fsync had not returned), and leaving
        it would glue it to the next line.
        """
        try:
            size = self.events_path.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        with open(self.events_path, "rb+") as f:
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
            if tail.endswith(b"\n"):
                return size
            cut = tail.rfind(b"\n")
            keep = size - len(tail) + cut + 1 if cut >= 0 else max(0, size - len(tail))
            f.truncate(keep)
            f.flush()
            fdatasync(f.fileno())
            return keep

    def _read_replayed(self) -> int:
        try:
            return int(self._replayed_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    @property
    def size(self) -> int:
        """Bytes in events.jsonl."""
        return self._size

    @property
    def replayed_offset(self) -> int:
        """Offset in events.jsonl up to which messages are in Redis."""
        return self._replayed

    @property
    def has_pending(self) -> bool:
        """Whether events.jsonl holds messages that Redis does not have yet."""
        return self._size > self._replayed

    def append(self, line: bytes) -> None:
        """Append one message (JSON without newline) and fsync it before returning."""
        with self._lock:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            data = line + b"\n"
            written = os.write(self._fd, data)
            if written != len(data):  # a short write (disk full): do not leave half a line
                os.ftruncate(self._fd, self._size)
                raise OSError(f"short write to {self.events_path}: {written} of {len(data)}")
            fdatasync(self._fd)
            self._size += len(data)

    def _open(self) -> None:
        created = not self.path.exists()
        if not self.path.parent.exists():  # the spool root: as private as a job's dir
            self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(self.path.parent, _DIR_MODE)  # whatever the umask
        self.path.mkdir(mode=_DIR_MODE, exist_ok=True)
        if created:
            os.chmod(self.path, _DIR_MODE)
        new_file = not self.events_path.exists()
        self._fd = os.open(
            self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE
        )
        if new_file:
            fsync_dir(self.path, best_effort=True)
        if created:
            fsync_dir(self.path.parent, best_effort=True)

    def pending(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` messages after the replayed offset, each with its end offset."""
        return read_lines(self.events_path, self._replayed, limit)[0]

    def mark_replayed(self, offset: int) -> None:
        """Record that every message before ``offset`` is in Redis (atomic replace)."""
        with self._lock:
            tmp = self._replayed_path.with_name(REPLAYED_FILE + ".tmp")
            write_file(tmp, f"{offset}\n".encode(), _FILE_MODE, exclusive=False)
            os.replace(tmp, self._replayed_path)
            self._replayed = offset

    def last_seq(self) -> int | None:
        """The ``seq`` of the last message in events.jsonl, None when there is none."""
        if self._size == 0:
            return None
        with open(self.events_path, "rb") as f:
            f.seek(max(0, self._size - _TAIL_BYTES))
            tail = f.read()
        for line in reversed(tail.splitlines()):
            try:
                seq = orjson.loads(line).get("seq")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(seq, int):
                return seq
        return None

    def holds_result(self, *, pending_only: bool = False) -> bool:
        """Whether events.jsonl holds a ``result`` message (only among the messages
        not replayed yet with ``pending_only``)."""
        lines, _ = read_lines(self.events_path, self._replayed if pending_only else 0)
        for _, line in lines:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("type") == "result":
                return True
        return False

    def close(self) -> None:
        """Close the append handle (the files stay)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
