"""Tar archives (contract sections 4 and 7): safe streaming extraction and tree archiving.

``extract_tar`` reads a tar stream member by member and writes nothing it has not
checked: no entry may land, or point, outside the target. It never follows a
symlink while writing (every path is walked with ``O_NOFOLLOW`` directory fds), never
writes into an existing file (it replaces it), and refuses device and FIFO nodes.
``create_tar`` writes a directory tree as a tar stream that ``extract_tar`` accepts.
The rules are listed in docs/output.md.

Both sides read and write the tar format themselves (POSIX ustar with PAX extended
headers; GNU long names are read too) rather than through ``tarfile``: per entry,
``tarfile`` costs several times what the syscalls do, which dominated trees of many
small files (docs/output.md has the figures). Headers are built into 1 MiB buffers
and parsed from 256 KiB chunks that a reading thread decompresses ahead; extended
headers are bounded before they are read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from baqup_agent._errors import DataError
from baqup_agent._paths import NAME_MAX, PATH_MAX, relative_parts
from baqup_agent._tar_size import BLOCK, MAX_OCTAL, RECORD, USTAR_FIELD, pax_record

if TYPE_CHECKING:
    from baqup_agent._artifacts import ByteSink, ByteSource
    from baqup_agent._logger import Logger

_COPY_SIZE = 1 << 20
# The reading thread's chunks, and how many it may hold ahead of the extraction: it
# reads at most about 1.5 MiB past what was parsed (a refused header stops it there).
_CHUNK = 256 << 10
_READ_AHEAD = 4
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_HEAD_CACHE = 2048  # name prefixes whose checks are remembered (bounded: constant memory)
_DIR_CACHE = 16  # open directory fds kept between members (archives list a dir's entries together)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL: never into an existing file; whatever is there (a symlink, a hard link to a
# file outside) is unlinked first, and only then the file is created
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# errnos that mean "this name cannot be created safely": the archive's fault, not the disk's
_NAME_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EEXIST, errno.EISDIR}
# An extended header (PAX records, GNU long name or link name) is read whole into
# memory: a tiny compressed artifact could declare gigabytes of one. Ours hold a path
# and a few numbers; 1 MiB is far beyond any real one. Past it the archive is refused.
MAX_EXTENDED_HEADER = 1 << 20
# Extended headers before one member: PAX, long name, long link name in practice.
_MAX_HEADER_CHAIN = 8

# -- the format: POSIX.1-2001 ustar headers and PAX records ------------------------------

_ZERO_BLOCK = bytes(BLOCK)
_NO_BYTES = memoryview(b"")
_REGULAR, _AREGULAR, _CONTIGUOUS = b"0", b"\0", b"7"
_HARDLINK, _SYMLINK, _DIRECTORY = b"1", b"2", b"5"
_PAX, _GLOBAL_PAX, _SOLARIS_PAX = b"x", b"g", b"X"
_LONGNAME, _LONGLINK, _SPARSE = b"L", b"K", b"S"
_EXTENDED = {_PAX, _GLOBAL_PAX, _SOLARIS_PAX, _LONGNAME, _LONGLINK}
_FILE_TYPES = {_REGULAR, _AREGULAR, _CONTIGUOUS}
# name mode uid gid size mtime chksum type linkname magic version uname gname
# devmajor devminor prefix (padding)
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_USTAR = b"ustar\x00"  # POSIX; GNU tar writes b"ustar  \x00", with no prefix field
# What ``_TarReader.small_file`` reads of a header: name, mode, size, mtime, checksum,
# type, magic and the prefix's first byte (the other fields do not matter for a file).
_SMALL_HEADER = struct.Struct("100s8s16x12s12s8sc100x6s82xc")
# The largest file ``small_file`` hands over whole: beyond it, copying in pieces is as cheap.
_SMALL = 64 << 10
_MAX_OCTAL_8, _MAX_OCTAL_12 = MAX_OCTAL[8], MAX_OCTAL[12]
# A header after the link name: magic, version, empty user and group names, device
# numbers 0, no prefix, padding. Its bytes' sum and 8 spaces (the checksum field, as
# the checksum counts it) are added to the checksum of every header built.
_USTAR_TAIL = _USTAR + b"00" + bytes(64) + b"0000000\0" * 2 + bytes(155 + 12)
_TAIL_SUM = sum(_USTAR_TAIL) + 8 * 0x20


def _checksum(block: bytes | bytearray | memoryview, field: bytes) -> int:
    """The unsigned header checksum: the sum of the bytes, with the checksum field (its
    bytes are ``field``) as spaces. Two halves through adler32, whose low 16 bits are
    1 + the sum of the bytes modulo 65521, exact for 256 bytes: far cheaper than
    summing in Python."""
    low = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    return low - sum(field) + 8 * 0x20


def _number(field: bytes, name: str) -> int:
    """A numeric header field: octal, or GNU base-256 (first byte 0x80 or 0xff)."""
    try:  # the usual "0000644\0": one call; anything else takes the careful way
        return int(field.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        pass
    raw = bytes(field)
    if raw[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(raw[1:], "big")
        return value - (256 ** (len(raw) - 1)) if raw[0] == 0xFF else value
    try:
        return int(raw.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise DataError(f"corrupt tar archive: invalid {name} field {raw!r}") from None


def _text(field: bytes) -> str:
    """A name field up to its first NUL, as a str (as ``os.fsdecode``, without its checks)."""
    return field.split(b"\0", 1)[0].decode(_FS_ENCODING, _FS_ERRORS)


def _pax_records(data: bytes) -> dict[str, str]:
    """The records ``"<length> <key>=<value>\\n"`` of a PAX header; values keep NULs."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 20)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        end = pos + length
        equals = data.find(b"=", space, end)
        if length <= 0 or end > len(data) or data[end - 1] != 0x0A or equals < 0:
            raise DataError(f"corrupt tar archive: invalid PAX record at {pos}")
        records[os.fsdecode(data[space + 1 : equals])] = os.fsdecode(data[equals + 1 : end - 1])
        pos = end
    return records


class _Member:
    """One archive entry: what the extractor needs of a header."""

    __slots__ = ("linkname", "mode", "mtime", "name", "size", "type")

    def __init__(
        self, name: str, type: bytes, linkname: str, size: int, mode: int, mtime: float
    ) -> None:
        self.name, self.type, self.linkname = name, type, linkname
        self.size, self.mode, self.mtime = size, mode, mtime


@dataclass
class TarStats:
    """What an archive held: entries by kind, regular-file bytes, entries skipped."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    skipped: int = 0


def file_mode(mode: int) -> int:
    """The mode a restored file gets: no setuid/setgid/sticky, no group/other write,
    owner read/write always."""
    return (mode & 0o755) | 0o600


def dir_mode(mode: int) -> int:
    """The mode a restored directory gets: as ``file_mode``, owner rwx always."""
    return (mode & 0o755) | 0o700


def check_symlink(parts: tuple[str, ...], linkname: str) -> None:
    """Raise ``DataError`` unless a symlink at ``parts`` with target ``linkname`` stays inside.

    The target must be relative and non-empty, without NUL; its ``..`` segments may only
    lead (``../../x``, climbing real directories) and may not climb above the root;
    ``..`` after a name (``a/../x``) is refused, because ``a`` may itself be a symlink
    and the climb would then start elsewhere. Descending segments meet only real
    directories and symlinks that obey the same rule, so resolution stays inside.
    """
    name = "/".join(parts)
    if not linkname or "\x00" in linkname or len(os.fsencode(linkname)) > PATH_MAX:
        raise DataError(f"unsafe symlink {name!r}: empty, NUL or too long target")
    if linkname.startswith("/"):
        raise DataError(f"unsafe symlink {name!r} -> {linkname!r}: absolute target")
    segments = [s for s in linkname.split("/") if s not in ("", ".")]
    climbs = 0
    while climbs < len(segments) and segments[climbs] == "..":
        climbs += 1
    if ".." in segments[climbs:]:
        raise DataError(f"unsafe symlink {name!r} -> {linkname!r}: '..' after a name")
    if climbs > len(parts) - 1:
        raise DataError(f"unsafe symlink {name!r} -> {linkname!r}: points outside")


# -- reading ----------------------------------------------------------------------------------


class _ReadAhead:
    """Reads ``fileobj`` in chunks in a thread of its own, a few chunks ahead.

    The decompressor behind an artifact reader (zstd, zlib) releases the GIL, so it
    runs on another core while this one extracts. Whatever the read raises (a corrupt
    stream, a cancelled job at the reader's checkpoint) is raised again by ``read``
    in the extracting thread, in stream order.
    """

    def __init__(self, fileobj: ByteSource) -> None:
        self._f = fileobj
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(_READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="baqup-tar-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._f.read(_CHUNK)
                self._chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the extracting thread
            self._chunks.put(exc)

    def read(self) -> bytes:
        """The next chunk; b"" at the end of the stream."""
        chunk = self._chunks.get()
        if isinstance(chunk, BaseException):
            self._chunks.put(chunk)  # every later read fails the same way
            raise chunk
        if not chunk:
            self._chunks.put(chunk)
        return chunk

    def close(self) -> None:
        """Stop the thread (after at most the read it is in) and wait for it: the caller
        may close ``fileobj`` once this returns."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # make room, should it wait to put
                self._chunks.get(timeout=0.05)
        self._thread.join()


class _TarReader:
    """Reads a tar stream header by header from the chunks ``read`` returns."""

    def __init__(self, read: Callable[[], bytes]) -> None:
        self._read = read
        self._buf = _NO_BYTES
        self._pos = 0
        self.offset = 0  # stream offset of the next unread byte
        self._global: dict[str, str] = {}  # global PAX records, applied to every member
        self._global_bytes = 0

    def _take(self, n: int) -> memoryview:
        """The next ``n`` bytes (fewer only at the end of the stream); copied only when
        they span chunks."""
        if len(self._buf) - self._pos < n:
            self._fill(n)
        end = min(self._pos + n, len(self._buf))
        view = self._buf[self._pos : end]
        self._pos = end
        self.offset += len(view)
        return view

    def _take_some(self, n: int) -> memoryview:
        """Up to ``n`` bytes, never copied: what is left of the current chunk, or of the
        next one; empty only at the end of the stream."""
        if self._pos == len(self._buf):
            self._buf, self._pos = memoryview(self._read()), 0
        end = min(self._pos + n, len(self._buf))
        view = self._buf[self._pos : end]
        self._pos = end
        self.offset += len(view)
        return view

    def _take_exactly(self, n: int, what: str) -> memoryview:
        view = self._take(n)
        if len(view) < n:
            raise DataError(f"corrupt tar archive: truncated in {what}")
        return view

    def _fill(self, n: int) -> bool:
        """Make the next ``n`` bytes one view (joining chunks); False when the stream ends
        first (what there is stays readable). Only what spans chunks is copied."""
        have = len(self._buf) - self._pos
        pieces: list[bytes | memoryview] = [self._buf[self._pos :]] if have else []
        while have < n:
            chunk = self._read()
            if not chunk:
                break
            pieces.append(chunk)
            have += len(chunk)
        joined = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._buf, self._pos = memoryview(joined), 0
        return have >= n

    def small_file(self) -> tuple[bytes, int, int, memoryview] | None:
        """The next member, consumed, as (name, mode, mtime, data) when it is the usual
        one: a file of at most ``_SMALL`` bytes in one valid ustar header, no extended
        header before it. Anything else gives None and is left for ``next``, which
        decides (and words the errors). One call where ``next`` and ``copy`` make a dozen:
        per small file, Python's calls cost more than the syscalls (docs/output.md)."""
        if len(self._buf) - self._pos < BLOCK and not self._fill(BLOCK):
            return None
        buf, pos = self._buf, self._pos
        name, mode, size, mtime, stored, kind, magic, prefix = _SMALL_HEADER.unpack_from(buf, pos)
        if kind not in _FILE_TYPES or (magic == _USTAR and prefix != b"\0") or self._global:
            return None
        try:
            length = int(size.rstrip(b"\0 "), 8)
            checksum = int(stored.rstrip(b"\0 "), 8)
            mode_bits, seconds = int(mode.rstrip(b"\0 "), 8), int(mtime.rstrip(b"\0 "), 8)
        except ValueError:
            return None
        # adler32's low half is 1 + the sum of the bytes (see _checksum); the checksum
        # field counts as 8 spaces
        if (
            not 0 <= length <= _SMALL
            or checksum
            != (zlib.adler32(buf[pos : pos + 256]) & 0xFFFF)
            + (zlib.adler32(buf[pos + 256 : pos + BLOCK]) & 0xFFFF)
            - (zlib.adler32(stored) & 0xFFFF)
            + 255
        ):
            return None
        raw = name.split(b"\0", 1)[0]
        if not raw or raw.endswith(b"/"):
            return None
        end = pos + BLOCK + length + -length % BLOCK
        if end > len(buf):
            if not self._fill(end - pos):
                return None
            buf, pos, end = self._buf, 0, end - pos
        self._pos = end
        self.offset += end - pos
        data = buf[pos + BLOCK : pos + BLOCK + length]
        return raw, mode_bits, seconds, data

    def next(self) -> _Member | None:
        """The next member, or None at the end-of-archive block."""
        pax: dict[str, str] = dict(self._global)
        longname = longlink = None
        chain = 0
        while True:
            at = self.offset
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                what = "empty stream" if at == 0 and not block else f"no header at byte {at}"
                raise DataError(f"not a valid tar archive: {what} (truncated)")
            if not block[0] and block == _ZERO_BLOCK:  # the first byte settles most headers
                if chain:
                    raise DataError(
                        f"corrupt tar archive: extended header without a member at {at}"
                    )
                return None
            fields = _HEADER.unpack(block)
            stored = _number(fields[6], "checksum")
            if stored != _checksum(block, fields[6]) and stored != _signed_checksum(block):
                raise DataError(f"corrupt tar archive: no valid header at byte {at}")
            kind, size = fields[7], _number(fields[4], "size")
            if size < 0:
                raise DataError(f"corrupt tar archive: negative size at byte {at}")
            if kind in _EXTENDED:
                chain += 1
                if kind == _GLOBAL_PAX:
                    self._global_bytes += size
                if size > MAX_EXTENDED_HEADER or self._global_bytes > MAX_EXTENDED_HEADER:
                    raise DataError(
                        f"refused tar archive: extended header of {size} bytes at byte {at} "
                        f"(at most {MAX_EXTENDED_HEADER})"
                    )
                if chain > _MAX_HEADER_CHAIN:
                    raise DataError(
                        f"refused tar archive: more than {_MAX_HEADER_CHAIN} extended "
                        f"headers in a row at byte {at}"
                    )
                data = self._take_exactly(size + -size % BLOCK, "an extended header")[
                    :size
                ].tobytes()
                if kind == _LONGNAME:
                    longname = _text(data)
                elif kind == _LONGLINK:
                    longlink = _text(data)
                else:
                    records = _pax_records(data)
                    if kind == _GLOBAL_PAX:
                        self._global.update(records)
                    pax.update(records)
                continue
            if not chain and not pax and kind in _FILE_TYPES and fields[9] == _USTAR:
                # the usual member, a file with one ustar header: the fields as they are
                prefix, name = fields[15], _text(fields[0])
                if prefix[0]:
                    name = _text(prefix) + "/" + name
                if not name.endswith("/"):  # else an old tar's directory: the long way
                    mtime = _number(fields[5], "mtime")
                    return _Member(name, kind, "", size, _number(fields[1], "mode"), mtime)
            return self._member(fields, kind, size, pax, longname, longlink, at)

    def _member(
        self,
        fields: tuple[bytes, ...],
        kind: bytes,
        size: int,
        pax: dict[str, str],
        longname: str | None,
        longlink: str | None,
        at: int,
    ) -> _Member:
        name = longname
        if name is None:
            name = _text(fields[0])
            prefix = fields[15] if fields[9] == _USTAR else b""
            if prefix[:1] not in (b"", b"\0"):
                name = _text(prefix) + "/" + name
        linkname = _text(fields[8]) if longlink is None else longlink
        mtime: float = _number(fields[5], "mtime")
        if pax:
            if any(key.startswith("GNU.sparse.") for key in pax):
                kind = _SPARSE
            name = pax.get("path", name)
            linkname = pax.get("linkpath", linkname)
            try:
                size = int(pax.get("size", size))
                mtime = float(pax.get("mtime", mtime))
            except ValueError:
                raise DataError(f"corrupt tar archive: invalid PAX number at byte {at}") from None
        if kind == _SPARSE:
            raise DataError(f"refused entry {name!r}: sparse files are never extracted")
        if kind == _AREGULAR and name.endswith("/"):
            kind = _DIRECTORY  # old tars marked directories by the name only
        return _Member(name, kind, linkname, size, _number(fields[1], "mode"), mtime)

    def copy(self, fd: int, size: int, name: str) -> None:
        """Write the next ``size`` bytes (a member's data) to ``fd``; skip the padding."""
        padded = size + -size % BLOCK
        if padded <= _COPY_SIZE:  # a small file: data and padding in one take, one write
            view = self._take(padded)
            if len(view) < padded:
                raise DataError(f"corrupt tar archive: {name!r} is truncated")
            view = view[:size]
            while view:
                view = view[os.write(fd, view) :]
            return
        left = size
        while left:
            view = self._take_some(left)
            if not view:
                raise DataError(f"corrupt tar archive: {name!r} is truncated")
            left -= len(view)
            while view:
                view = view[os.write(fd, view) :]
        self._take_exactly(-size % BLOCK, f"the padding of {name!r}")

    def skip(self, size: int, name: str) -> None:
        """Pass over ``size`` bytes of data and the padding."""
        left = size + -size % BLOCK
        while left:
            view = self._take_some(left)
            if not view:
                raise DataError(f"corrupt tar archive: {name!r} is truncated")
            left -= len(view)

    def drain(self) -> None:
        """Read the stream to its end: what follows the end-of-archive block is ignored,
        but a decompressor still has to see it whole (a cut or corrupt tail raises)."""
        while self._read():
            pass


def _signed_checksum(block: bytes | memoryview) -> int:
    """The checksum as some old tars computed it, with signed bytes (rare: slow is fine)."""
    data = bytes(block[:148]) + b" " * 8 + bytes(block[156:])
    return sum(b - 256 if b > 127 else b for b in data)


# -- extraction ------------------------------------------------------------------------------


def extract_tar(
    fileobj: ByteSource,
    target: str | os.PathLike[str],
    *,
    logger: Logger | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> TarStats:
    """Extract the tar stream ``fileobj`` into ``target`` (created if missing).

    Streaming, constant memory (extended headers are refused past
    ``MAX_EXTENDED_HEADER``). Every entry is checked before anything is written for
    it; an unsafe or corrupt entry raises ``DataError`` (exit 65). When ``target`` was
    empty or missing, a failure removes everything this call wrote, so no partial
    restore is left; otherwise what was written before the bad entry (all inside
    ``target``) stays. ``checkpoint`` is called before each entry and once at the end
    (a cancelled job raises there). The stream is read to its end.
    """
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    with os.scandir(root) as entries:
        was_empty = next(entries, None) is None
    extractor = _Extractor(root)
    ahead = _ReadAhead(fileobj)
    reader = _TarReader(ahead.read)
    try:
        while True:
            # the checkpoint before each entry (and at the end block) is in here
            extractor.extract_small_files(reader, checkpoint)
            member = reader.next()
            if member is None:
                break
            extractor.extract(reader, member)
        reader.drain()
    except BaseException:
        ahead.close()
        _rollback(root, was_empty, logger)
        raise
    finally:
        ahead.close()
        extractor.close()
    if logger is not None:
        logger.info("archive extracted", target=str(root), **asdict(extractor.stats))
    return extractor.stats


class _Extractor:
    """Writes checked tar members below one root directory fd."""

    def __init__(self, root: Path) -> None:
        self.stats = TarStats()
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # fds of recently used directories, least recent first; a hard link needs two at once
        self._dirs: dict[tuple[str, ...], int] = {}
        self._last: tuple[str, ...] | None = None  # the most recent in _dirs
        # checked directory prefixes of names: "a/b/" -> (("a", "b"), encoded length)
        self._heads: dict[str, tuple[tuple[str, ...], int]] = {}
        self._umask = _umask()
        # The directory of the last file the general path wrote, for ``extract_small``:
        # its name's head as bytes (b"a/b/"), its fd (one of _dirs, or the root), and
        # the longest name that fits in it (NAME_MAX and PATH_MAX).
        self._fast_head: bytes | None = None
        self._fast_fd = self._root_fd
        self._fast_room = 0

    def close(self) -> None:
        self._fast_head = None
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        self._last = None
        os.close(self._root_fd)

    def extract_small_files(
        self, reader: _TarReader, checkpoint: Callable[[], None] | None
    ) -> None:
        """Extract the small files that come next (``_TarReader.small_file`` says which),
        calling ``checkpoint`` before each entry; return at the first other entry, its
        checkpoint called. One loop for the run of them, the per-file work inlined: per
        small file, Python's calls cost more than the syscalls (docs/output.md).

        A file in the directory of the file before (an archive lists a directory's files
        together) is written here, with the general path's syscalls and checks, its name
        as bytes (as it will be on disk: its length is what NAME_MAX and PATH_MAX count);
        any other (another directory, a name to check, an entry to replace) takes
        ``extract``, which makes its directory the next one for this loop."""
        small_file, umask = reader.small_file, self._umask
        open_, write, stamp, close = os.open, os.write, _stamp, os.close
        head, folder, room = self._fast_head, self._fast_fd, self._fast_room
        files = written = 0
        try:
            while True:
                if checkpoint is not None:
                    checkpoint()
                small = small_file()
                if small is None:
                    return
                raw, mode, mtime, data = small
                base = raw.rpartition(b"/")[2]
                fd = -1
                if (
                    raw[: len(raw) - len(base)] == head
                    and base not in (b".", b"..")  # (O_EXCL would refuse them: they exist)
                    and len(base) <= room
                ):
                    mode = (mode & 0o755) | 0o600  # file_mode, inline
                    try:  # (not contextlib.suppress: it costs more than the syscall)
                        fd = open_(base, _CREATE_FLAGS, mode, dir_fd=folder)
                    except OSError:  # an entry to replace, or a refusal the general path words
                        fd = -1
                if fd < 0:
                    self._extract_file(reader, raw, mode, mtime, data)
                    head, folder, room = self._fast_head, self._fast_fd, self._fast_room
                    continue
                try:
                    done = write(fd, data)
                    while done < len(data):
                        done += write(fd, data[done:])
                    stamp(fd, mode, mtime, umask)
                finally:
                    close(fd)
                files += 1
                written += len(data)
        finally:
            self.stats.files += files
            self.stats.bytes += written

    def _extract_file(
        self, reader: _TarReader, raw: bytes, mode: int, mtime: int, data: memoryview
    ) -> None:
        name = raw.decode(_FS_ENCODING, _FS_ERRORS)
        self.extract(reader, _Member(name, _REGULAR, "", len(data), mode, mtime), data)

    def _parts(self, name: str) -> tuple[str, ...]:
        """``relative_parts(name)``; the checks of a directory already seen are not
        repeated (archives list a directory's entries together): only the last name."""
        base = name.rpartition("/")[2]
        head = name[: len(name) - len(base)]  # with its "/": "/x" is not "x"
        known = self._heads.get(head)
        if known is not None and base not in ("", ".", "..") and "\0" not in base:
            dir_parts, dir_bytes = known
            size = len(base.encode(_FS_ENCODING, _FS_ERRORS))
            if size <= NAME_MAX and dir_bytes + size + 1 <= PATH_MAX:
                return (*dir_parts, base)
        parts = relative_parts(name)
        if parts and parts[-1] == base:
            if len(self._heads) >= _HEAD_CACHE:
                self._heads.clear()
            dir_parts = parts[:-1]
            self._heads[head] = (dir_parts, sum(len(os.fsencode(p)) + 1 for p in dir_parts))
        return parts

    def extract(self, reader: _TarReader, member: _Member, data: memoryview | None = None) -> None:
        """Extract ``member``; a file's bytes are ``data`` if given, else read from ``reader``."""
        parts = self._parts(member.name)
        kind = member.type
        if not (kind in _FILE_TYPES or kind in (_DIRECTORY, _SYMLINK, _HARDLINK)):
            raise DataError(
                f"refused entry {member.name!r}: type {kind!r} (device, FIFO "
                "or unknown) is never extracted"
            )
        if not parts:
            if kind == _DIRECTORY:
                return  # "./": the target itself, left as it is
            raise DataError(f"refused entry {member.name!r}: names the target directory")
        if kind == _SYMLINK:
            check_symlink(parts, member.linkname)
        try:
            parent = self._parent(parts[:-1], create=True)
            name = parts[-1]
            if kind == _DIRECTORY:
                self._directory(parent, name, member)
            elif kind == _SYMLINK:
                self._clear(parent, name, member)
                os.symlink(member.linkname, name, dir_fd=parent)
                self.stats.symlinks += 1
            elif kind == _HARDLINK:
                self._hardlink(parent, parts, member)
            else:
                self._file(parent, name, reader, member, data)
                self._remember(member.name, parts, parent)
        except OSError as exc:
            if exc.errno in _NAME_ERRNOS:
                raise DataError(f"refused entry {member.name!r}: {exc.strerror}") from None
            raise

    # -- one member of each kind ---------------------------------------------------------

    def _directory(self, parent: int, name: str, member: _Member) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                self._clear(parent, name, member)
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(fd, dir_mode(member.mode))
        finally:
            os.close(fd)
        self.stats.directories += 1

    def _remember(self, name: str, parts: tuple[str, ...], parent: int) -> None:
        """Make ``parent``, the checked directory of file ``name``, the one
        ``extract_small`` writes into."""
        base = name.rpartition("/")[2]
        if parts[-1] == base:
            head = name[: len(name) - len(base)]
            used = self._heads[head][1]  # _parts has just checked and kept this directory
            self._fast_head = head.encode(_FS_ENCODING, _FS_ERRORS)
            self._fast_fd, self._fast_room = parent, min(NAME_MAX, PATH_MAX - used - 1)

    def _file(
        self, parent: int, name: str, reader: _TarReader, member: _Member, data: memoryview | None
    ) -> None:
        mode = file_mode(member.mode)
        try:
            fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=parent)
        except FileExistsError:
            self._clear(parent, name, member)
            fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=parent)
        self._write_file(fd, mode, member.mtime, member.size, data, reader, member.name)

    def _write_file(
        self,
        fd: int,
        mode: int,
        mtime: float,
        size: int,
        data: memoryview | None,
        reader: _TarReader | None = None,
        name: str = "",
    ) -> None:
        """Write a new file's ``size`` bytes (``data``, else the member's from ``reader``),
        its mode where the umask took bits the archive gives, and its mtime; close it."""
        try:
            if data is None:
                assert reader is not None
                reader.copy(fd, size, name)
            else:
                while data:
                    data = data[os.write(fd, data) :]
            _stamp(fd, mode, mtime, self._umask)
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += size

    def _hardlink(self, parent: int, parts: tuple[str, ...], member: _Member) -> None:
        source = relative_parts(member.linkname)
        if not source or source == parts:
            raise DataError(f"refused hard link {member.name!r}: links to itself or the target")
        try:
            source_parent = self._parent(source[:-1], create=False)
            st = os.stat(source[-1], dir_fd=source_parent, follow_symlinks=False)
        except FileNotFoundError:
            raise DataError(
                f"refused hard link {member.name!r}: {member.linkname!r} was not extracted"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            # A hard link to a symlink would resolve from another directory.
            raise DataError(f"refused hard link {member.name!r}: {member.linkname!r} is not a file")
        self._clear(parent, parts[-1], member)
        os.link(
            source[-1],
            parts[-1],
            src_dir_fd=source_parent,
            dst_dir_fd=parent,
            follow_symlinks=False,
        )
        self.stats.hardlinks += 1

    # -- paths ---------------------------------------------------------------------------

    def _clear(self, parent: int, name: str, member: _Member) -> None:
        """Unlink a non-directory at ``name``: new entries never write into old files."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise DataError(f"refused entry {member.name!r}: would replace a directory")
        os.unlink(name, dir_fd=parent)

    def _parent(self, parts: tuple[str, ...], *, create: bool) -> int:
        """An fd of the directory ``parts`` below the root, walked without following
        symlinks; missing directories are created (0o755) when ``create``."""
        if not parts:
            return self._root_fd
        if parts == self._last:  # the usual case: the directory of the entry before
            return self._dirs[parts]
        cached = self._dirs.pop(parts, None)
        if cached is not None:
            self._dirs[parts] = cached  # now the most recent
            self._last = parts
            return cached
        fd = self._root_fd
        try:
            for i, part in enumerate(parts):
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                else:
                    if not stat.S_ISDIR(st.st_mode):
                        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                        raise DataError(
                            f"refused path through {'/'.join(parts[: i + 1])!r}: {what}"
                        )
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if fd != self._root_fd:
                    os.close(fd)
                fd = next_fd
        except BaseException:
            if fd != self._root_fd:
                os.close(fd)
            raise
        if len(self._dirs) >= _DIR_CACHE:
            evicted = self._dirs.pop(next(iter(self._dirs)))
            if evicted == self._fast_fd:
                self._fast_head = None
            os.close(evicted)
        self._dirs[parts] = fd
        self._last = parts
        return fd


def _stamp(fd: int, mode: int, mtime: float, umask: int) -> None:
    """Give a new file its mode, where the umask took bits the archive gives, and its mtime."""
    if mode & umask:
        os.fchmod(fd, mode)
    # an out-of-range time is not worth failing the restore for; try, not
    # contextlib.suppress, which costs more than the syscall per file
    try:  # noqa: SIM105
        os.utime(fd, (mtime, mtime))
    except (OverflowError, ValueError, OSError):
        pass


def _rollback(root: Path, was_empty: bool, logger: Logger | None) -> None:
    """After a failure, empty ``root`` again if it was empty: no partial restore."""
    if not was_empty:
        return
    import shutil

    if logger is not None:
        logger.warn("extraction failed: removing the partial restore", target=str(root))
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status", "rb") as f:
        return int(f.read().split(b"Umask:", 1)[1].split()[0], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


# -- creation --------------------------------------------------------------------------------


def create_tar(
    fileobj: ByteSink,
    root: str | os.PathLike[str],
    *,
    logger: Logger | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> TarStats:
    """Write the tree at ``root`` to ``fileobj`` as a PAX tar stream; names are relative.

    Directories, regular files, symlinks and hard links are archived; symlinks are
    never followed (the walk opens each directory with ``O_NOFOLLOW`` below the one
    before, so a directory swapped for a symlink meanwhile is not entered). Entries
    ``extract_tar`` would refuse are skipped with a warning and counted in
    ``skipped``: sockets, devices, FIFOs and symlinks that point outside the tree
    (absolute or climbing above it). A file is stored with the size its ``lstat``
    gave: one that shrinks before it is read is padded with zeros, one that grows is
    cut, so the archive stays valid; a shrink is logged. ``checkpoint`` is called
    before each entry. ``fileobj`` can be an ``ArtifactWriter``; it gets writes of
    about 1 MiB (small files are gathered), whatever the tree.
    """
    stats = TarStats()
    out = _TarWriter(fileobj)
    links: dict[tuple[int, int], str] = {}  # (dev, inode) -> first name, for st_nlink > 1
    for name, st, dir_fd, entry in _walk(Path(root)):
        if checkpoint is not None:
            checkpoint()
        _add(out, name, st, dir_fd, entry, stats, links, logger)
    out.close()
    if logger is not None:
        logger.info("archive written", root=str(root), **asdict(stats))
    return stats


# O_NONBLOCK: a FIFO swapped in since the stat reads as empty instead of hanging
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# an entry removed, or replaced by a symlink or a non-directory, since its stat
_CHANGED_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _walk(base: Path) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """(archive name, lstat, parent directory fd, entry name) of every entry below
    ``base``, sorted, depth first, without following links. Entries that vanish
    before they are seen are left out; the fds are valid until the next item."""
    stack: list[tuple[int, str]] = [(os.open(base, _DIR_FLAGS & ~os.O_NOFOLLOW), "")]
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                with os.scandir(fd) as it:
                    names = sorted(entry.name for entry in it)
                subdirs = []
                for entry_name in names:
                    try:
                        st = os.stat(entry_name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed since the listing: a live tree changes
                    yield prefix + entry_name, st, fd, entry_name
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append(entry_name)
                # children first, in name order: pushed in reverse
                for entry_name in reversed(subdirs):
                    try:
                        child = os.open(entry_name, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno not in _CHANGED_ERRNOS:
                            raise
                        continue  # replaced since its stat: its entry was written already
                    stack.append((child, prefix + entry_name + "/"))
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)


def _add(
    out: _TarWriter,
    name: str,
    st: os.stat_result,
    dir_fd: int,
    entry: str,
    stats: TarStats,
    links: dict[tuple[int, int], str],
    logger: Logger | None,
) -> None:
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFREG and not (st.st_nlink > 1 and (st.st_dev, st.st_ino) in links):
        try:
            fd = os.open(entry, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in _CHANGED_ERRNOS:
                raise
            _skip(stats, logger, "entry vanished or was replaced during backup", name)
            return
        try:
            out.header(name, _REGULAR, st, size=st.st_size)
            short = out.file_data(fd, st.st_size)
        finally:
            os.close(fd)
        if short:
            _warn(logger, "file shrank while read: padded with zeros", name)
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = name
        stats.files += 1
        stats.bytes += st.st_size
    elif kind == stat.S_IFREG:
        out.header(name, _HARDLINK, st, linkname=links[(st.st_dev, st.st_ino)])
        stats.hardlinks += 1
    elif kind == stat.S_IFDIR:
        out.header(name + "/", _DIRECTORY, st)
        stats.directories += 1
    elif kind == stat.S_IFLNK:
        try:
            target = os.readlink(entry, dir_fd=dir_fd)
        except FileNotFoundError:
            _skip(stats, logger, "entry vanished during backup", name)
            return
        try:
            check_symlink(tuple(name.split("/")), target)
        except DataError as exc:
            _skip(stats, logger, f"symlink skipped, a restore would refuse it: {exc}", name)
            return
        out.header(name, _SYMLINK, st, linkname=target)
        stats.symlinks += 1
    else:
        _skip(stats, logger, "special file skipped (socket, device or FIFO)", name)


class _TarWriter:
    """Builds headers and gathers them, with small files' data, into ~1 MiB writes."""

    def __init__(self, fileobj: ByteSink) -> None:
        self._f = fileobj
        self._buf = bytearray()
        self._written = 0

    def header(
        self, name: str, kind: bytes, st: os.stat_result, *, size: int = 0, linkname: str = ""
    ) -> None:
        """Append the header of one entry (a PAX header first when a field needs one)."""
        raw_name = name.encode("utf-8", "surrogateescape")  # os.fsencode, without its checks
        raw_link = linkname.encode("utf-8", "surrogateescape")
        uid, gid, mtime = st.st_uid, st.st_gid, int(st.st_mtime)
        if not (
            len(raw_name) <= USTAR_FIELD
            and len(raw_link) <= USTAR_FIELD
            and raw_name.isascii()
            and raw_link.isascii()
            and 0 <= uid < _MAX_OCTAL_8
            and 0 <= gid < _MAX_OCTAL_8
            and size < _MAX_OCTAL_12
            and 0 <= mtime < _MAX_OCTAL_12
        ):
            self._pax(raw_name, raw_link, {"uid": uid, "gid": gid, "size": size, "mtime": mtime})
            # what does not fit is 0 or cut here: the PAX header holds it
            uid, gid, size, mtime = _fits(uid, 8), _fits(gid, 8), _fits(size, 12), _fits(mtime, 12)
            raw_name, raw_link = raw_name[:USTAR_FIELD], raw_link[:USTAR_FIELD]
        # Built from parts rather than packed: this runs once per file.
        head = raw_name.ljust(USTAR_FIELD, b"\0") + b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (
            stat.S_IMODE(st.st_mode),
            uid,
            gid,
            size,
            mtime,
        )
        # The checksum counts its own field as spaces. Each part is under 256 bytes,
        # whose sum adler32's low half gives exactly (plus one); the tail is constant.
        total = (zlib.adler32(head) & 0xFFFF) + (zlib.adler32(raw_link) & 0xFFFF) - 2
        buf = self._buf
        buf += head
        buf += b"%06o\0 " % (total + kind[0] + _TAIL_SUM)
        buf += kind
        buf += raw_link.ljust(USTAR_FIELD, b"\0")
        buf += _USTAR_TAIL
        if len(buf) >= _COPY_SIZE:  # a tree of directories or links only
            self._flush()

    def _pax(self, raw_name: bytes, raw_link: bytes, numbers: dict[str, int]) -> None:
        """Append a PAX header with the fields the ustar header cannot hold."""
        records = [
            pax_record(key, b"%d" % value)
            for key, value in numbers.items()
            if not 0 <= value < MAX_OCTAL[12 if key in ("size", "mtime") else 8]
        ]
        for key, value in (("path", raw_name), ("linkpath", raw_link)):
            if len(value) > USTAR_FIELD or not value.isascii():
                records.append(pax_record(key, value))
        try:
            raw_name.decode() + raw_link.decode()
        except UnicodeDecodeError:
            # names that are not UTF-8 are stored as their bytes (POSIX hdrcharset)
            records.insert(0, pax_record("hdrcharset", b"BINARY"))
        data = b"".join(records)
        self.header("././@PaxHeader", _PAX, _PAX_STAT, size=len(data))
        self._buf += data
        self._buf += bytes(-len(data) % BLOCK)

    def file_data(self, fd: int, size: int) -> bool:
        """Append ``size`` bytes of ``fd`` and the padding; True when the file had fewer
        (the rest is zeros)."""
        short = False
        left = size
        while left:
            try:
                data = os.read(fd, min(left, _COPY_SIZE))
            except BlockingIOError:
                data = b""
            if not data:
                short = True
                self._buf += bytes(left)
                break
            self._buf += data
            left -= len(data)
            if left and len(self._buf) >= _COPY_SIZE:
                self._flush()
        self._buf += _ZERO_BLOCK[: -size % BLOCK]
        if len(self._buf) >= _COPY_SIZE:
            self._flush()
        return short

    def close(self) -> None:
        """End the archive: two zero blocks, then zeros up to a whole record."""
        self._buf += bytes(2 * BLOCK)
        self._buf += bytes(-(self._written + len(self._buf)) % RECORD)
        self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._f.write(self._buf)
            self._written += len(self._buf)
            self._buf = bytearray()


# what a PAX header's own ustar header says: a plain file, owned by nobody in particular
_PAX_STAT = os.stat_result((0o644, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def _fits(value: int, width: int) -> int:
    """A numeric field's value; one that does not fit is 0 here and given by a PAX record."""
    return value if 0 <= value < MAX_OCTAL[width] else 0


def _skip(stats: TarStats, logger: Logger | None, message: str, name: str) -> None:
    stats.skipped += 1
    _warn(logger, message, name)


def _warn(logger: Logger | None, message: str, name: str) -> None:
    if logger is not None:
        logger.warn(message, entry=name)
