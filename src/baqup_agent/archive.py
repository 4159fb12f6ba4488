"""Tar archives (contract sections 4 and 7): safe streaming extraction and tree archiving.

``extract_tar`` reads a tar stream member by member and writes nothing it has not
checked: no entry may land, or point, outside the target. It never follows a
symlink while writing (every path is walked with ``O_NOFOLLOW`` directory fds), never
writes into an existing file (it replaces it), and refuses device and FIFO nodes.
``create_tar`` writes a directory tree as a tar stream that ``extract_tar`` accepts.
The rules are listed in docs/output.md.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn, cast

from baqup_agent.errors import DataError
from baqup_agent.paths import PATH_MAX, relative_parts

if TYPE_CHECKING:
    from baqup_agent.logger import Logger

_COPY_SIZE = 1 << 20
_DIR_CACHE = 16  # open directory fds kept between members (archives list a dir's entries together)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# errnos that mean "this name cannot be created safely": the archive's fault, not the disk's
_NAME_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EEXIST, errno.EISDIR}
# tarfile reads an extended header (PAX records, GNU long name or link name) whole into
# memory, and parses it in several copies: a tiny compressed artifact could carry
# gigabytes of it. Ours hold a path and a few numbers; 1 MiB is far beyond any real one.
MAX_EXTENDED_HEADER = 1 << 20
# Extended headers before one member (PAX, long name, long link name: three in
# practice); tarfile recurses once per header, so a chain is bounded too.
_MAX_HEADER_CHAIN = 8
_EXTENDED_TYPES = frozenset(
    (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )
)


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


# -- extraction ------------------------------------------------------------------------------


def extract_tar(
    fileobj: IO[bytes],
    target: str | os.PathLike[str],
    *,
    logger: Logger | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> TarStats:
    """Extract the tar stream ``fileobj`` into ``target`` (created if missing).

    Streaming (``r|``), constant memory. Every entry is checked before anything is
    written for it; an unsafe or corrupt entry raises ``DataError`` (exit 65). When
    ``target`` was empty or missing, a failure removes everything this call wrote, so
    no partial restore is left; otherwise what was written before the bad entry (all
    inside ``target``) stays. ``checkpoint`` is called before each entry (a cancelled
    job raises there).
    """
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    with os.scandir(root) as entries:
        was_empty = next(entries, None) is None
    extractor = _Extractor(root)
    source = _Tail(fileobj)
    try:
        try:
            with tarfile.open(
                fileobj=cast(IO[bytes], source), mode="r|", tarinfo=_BoundedTarInfo
            ) as tar:
                while True:
                    if checkpoint is not None:
                        checkpoint()
                    tar.__dict__[_CHAIN] = 0
                    member = tar.next()
                    if member is None:
                        break
                    # The members read so far (undocumented attribute): a stream never
                    # looks back, so dropping them keeps memory constant.
                    tar.__dict__["members"].clear()
                    extractor.extract(tar, member)
                # tarfile also ends quietly at a corrupt or missing header after the
                # first member; a real end of archive is a zero block.
                end = source.block(tar.offset)
                if len(end) < tarfile.BLOCKSIZE or any(end):
                    raise DataError(f"corrupt tar archive: no valid header at byte {tar.offset}")
        except tarfile.TarError as exc:
            raise DataError(f"not a valid tar archive: {exc}") from None
    except BaseException:
        _rollback(root, was_empty, logger)
        raise
    finally:
        extractor.close()
    if logger is not None:
        logger.info("archive extracted", target=str(root), **asdict(extractor.stats))
    return extractor.stats


_CHAIN = "_baqup_header_chain"  # extended headers read for the current member
_GLOBAL = "_baqup_global_bytes"  # bytes of global PAX headers read so far


class _BoundedTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` that refuses, before reading it, an extended header larger than
    ``MAX_EXTENDED_HEADER``, a chain of them, global PAX headers that add up past the
    cap, and sparse files (whose maps tarfile reads whole; ``create_tar`` never writes
    one): memory stays bounded whatever an archive declares."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_TYPES:
            state = tar.__dict__
            state[_CHAIN] = state.get(_CHAIN, 0) + 1
            if self.type == tarfile.XGLTYPE:
                state[_GLOBAL] = state.get(_GLOBAL, 0) + self.size
            if (
                self.size > MAX_EXTENDED_HEADER
                or state[_CHAIN] > _MAX_HEADER_CHAIN
                or state.get(_GLOBAL, 0) > MAX_EXTENDED_HEADER
            ):
                raise DataError(
                    f"refused tar archive: extended headers larger than "
                    f"{MAX_EXTENDED_HEADER} bytes or more than {_MAX_HEADER_CHAIN} in a row"
                )
        elif self.type == tarfile.GNUTYPE_SPARSE:
            _refuse_sparse(self)
        return cast(tarfile.TarInfo, super()._proc_member(tar))  # type: ignore[misc]

    # the PAX sparse formats 0.0, 0.1 and 1.0 (1.0 reads its map from the data)
    def _proc_gnusparse_00(self, member: tarfile.TarInfo, *_: object) -> None:
        _refuse_sparse(member)

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


def _refuse_sparse(member: tarfile.TarInfo) -> NoReturn:
    raise DataError(f"refused entry {member.name!r}: sparse files are never extracted")


class _Extractor:
    """Writes checked tar members below one root directory fd."""

    def __init__(self, root: Path) -> None:
        self.stats = TarStats()
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # fds of recently used directories, least recent first; a hard link needs two at once
        self._dirs: dict[tuple[str, ...], int] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self._root_fd)

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = relative_parts(member.name)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise DataError(
                f"refused entry {member.name!r}: type {member.type!r} (device, FIFO "
                "or unknown) is never extracted"
            )
        if not parts:
            if member.isdir():
                return  # "./": the target itself, left as it is
            raise DataError(f"refused entry {member.name!r}: names the target directory")
        if member.issym():
            check_symlink(parts, member.linkname)
        try:
            parent = self._parent(parts[:-1], create=True)
            name = parts[-1]
            if member.isdir():
                self._directory(parent, name, member)
            elif member.isreg():
                self._file(parent, name, tar, member)
            elif member.issym():
                self._clear(parent, name, member)
                os.symlink(member.linkname, name, dir_fd=parent)
                self.stats.symlinks += 1
            else:
                self._hardlink(parent, parts, member)
        except OSError as exc:
            if exc.errno in _NAME_ERRNOS:
                raise DataError(f"refused entry {member.name!r}: {exc.strerror}") from None
            raise

    # -- one member of each kind ---------------------------------------------------------

    def _directory(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
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

    def _file(self, parent: int, name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._clear(parent, name, member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        try:
            source = tar.extractfile(member)
            assert source is not None  # a regular member always has data
            copied = 0
            try:
                while data := source.read(_COPY_SIZE):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    copied += len(data)
            except EOFError as exc:
                raise DataError(f"corrupt tar archive at {member.name!r}: {exc}") from None
            if copied != member.size:
                raise DataError(f"corrupt tar archive: {member.name!r} is truncated")
            os.fchmod(fd, file_mode(member.mode))
            # an out-of-range time is not worth failing the restore for
            with contextlib.suppress(OverflowError, ValueError, OSError):
                os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += copied

    def _hardlink(self, parent: int, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
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

    def _clear(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
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
        cached = self._dirs.pop(parts, None)
        if cached is not None:
            self._dirs[parts] = cached  # now the most recent
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
            os.close(self._dirs.pop(next(iter(self._dirs))))
        self._dirs[parts] = fd
        return fd


class _Tail:
    """A reader that keeps its last few chunks, to look at the block where tarfile stopped."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._chunks: deque[tuple[int, bytes]] = deque(maxlen=4)  # (offset, data)
        self._offset = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._f.read(n)
        self._chunks.append((self._offset, data))
        self._offset += len(data)
        return data

    def block(self, offset: int) -> bytes:
        """The block at ``offset`` as far as it was read (shorter at the end of the stream)."""
        if not self._chunks or offset < self._chunks[0][0]:
            return b""
        kept = b"".join(data for _, data in self._chunks)
        start = offset - self._chunks[0][0]
        return kept[start : start + tarfile.BLOCKSIZE]


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


# -- creation --------------------------------------------------------------------------------


def create_tar(
    fileobj: IO[bytes],
    root: str | os.PathLike[str],
    *,
    logger: Logger | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> TarStats:
    """Write the tree at ``root`` to ``fileobj`` as a PAX tar stream; names are relative.

    Directories, regular files, symlinks and hard links are archived; symlinks are
    never followed. Entries ``extract_tar`` would refuse are skipped with a warning
    and counted in ``skipped``: sockets, devices, FIFOs and symlinks that point
    outside the tree (absolute or climbing above it). A file that shrinks while it is
    read is padded with zeros (and one that grows is cut at its size when opened), so
    the archive stays valid; both are logged. ``fileobj`` can be an ``ArtifactWriter``.
    """
    stats = TarStats()
    base = Path(root)
    links: dict[tuple[int, int], str] = {}  # (dev, inode) -> first name, for st_nlink > 1
    buffer = memoryview(bytearray(_COPY_SIZE))  # file data goes through it, chunk by chunk
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_SIZE
    ) as tar:
        for relative, path in _walk(base):
            if checkpoint is not None:
                checkpoint()
            try:
                _add(tar, path, relative, stats, links, buffer, logger)
            except FileNotFoundError:
                stats.skipped += 1  # removed since the walk saw it: a live tree changes
                _warn(logger, "entry vanished during backup", relative)
            # tarfile keeps every member added (undocumented attribute); nothing here
            # reads them back, and dropping them keeps memory constant whatever the tree.
            tar.__dict__["members"].clear()
    if logger is not None:
        logger.info("archive written", root=str(base), **asdict(stats))
    return stats


def _walk(base: Path) -> Iterator[tuple[str, Path]]:
    """(archive name, path) of every entry below ``base``, sorted, without following links."""
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        prefix = here.relative_to(base).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        # os.walk lists symlinks to directories among dirnames but does not descend them
        for name in sorted([*dirnames, *filenames]):
            yield prefix + name, here / name


def _add(
    tar: tarfile.TarFile,
    path: Path,
    name: str,
    stats: TarStats,
    links: dict[tuple[int, int], str],
    buffer: memoryview,
    logger: Logger | None,
) -> None:
    st = os.lstat(path)
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        stats.directories += 1
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        try:
            check_symlink(tuple(name.split("/")), info.linkname)
        except DataError as exc:
            stats.skipped += 1
            _warn(logger, f"symlink skipped, a restore would refuse it: {exc}", name)
            return
        tar.addfile(info)
        stats.symlinks += 1
    elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) in links:
        info.type, info.linkname = tarfile.LNKTYPE, links[(st.st_dev, st.st_ino)]
        tar.addfile(info)
        stats.hardlinks += 1
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb", buffering=0) as f:
            info.size = os.fstat(f.fileno()).st_size  # the size when opened is what we store
            reader = _FixedSize(f, info.size, buffer)
            tar.addfile(info, cast(IO[bytes], reader))  # tarfile only len()s and writes it
        if reader.short:
            _warn(logger, "file shrank while read: padded with zeros", name)
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = name
        stats.files += 1
        stats.bytes += info.size
    else:
        stats.skipped += 1
        _warn(logger, "special file skipped (socket, device or FIFO)", name)


class _FixedSize:
    """Reads exactly ``size`` bytes of a file, padding with zeros if it shrank.

    ``read`` fills one reused buffer and returns a view of it, valid until the next
    call: tarfile passes each chunk straight to the archive's ``write`` (which, like
    any file's, must not keep it), and a new 1 MiB object per chunk would cost an
    allocation and its page faults every time.
    """

    def __init__(self, f: io.RawIOBase, size: int, buffer: memoryview) -> None:
        self._f = f
        self._left = size
        self._buffer = buffer
        self.short = False

    def read(self, n: int = -1, /) -> memoryview:
        n = self._left if n < 0 else min(n, self._left)
        if n > len(self._buffer):  # tarfile never asks for more than its copy size
            self._buffer = memoryview(bytearray(n))
        view = self._buffer[:n]
        done = 0
        while done < n:
            got = self._f.readinto(view[done:])
            if not got:
                self.short = True
                view[done:] = bytes(n - done)
                break
            done += got
        self._left -= n
        return view


def _warn(logger: Logger | None, message: str, name: str) -> None:
    if logger is not None:
        logger.warn(message, entry=name)
