"""Artifacts in one pass (contract section 4): compress, checksum and count while writing.

``ArtifactWriter`` is a writable binary file: bytes written to it are compressed
(zstd, gzip or none), and the *compressed* stream, which is what lands on disk, is
hashed and counted on its way to the file. Memory stays constant whatever the size.
``open_decompressed`` is the reading side, used by restore.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from baqup_agent.checksum import DEFAULT_ALGORITHM, new_hash
from baqup_agent.contract import Artifact, ChecksumAlgorithm, Compression

if TYPE_CHECKING:
    from baqup_agent.progress import ProgressCounter

DEFAULT_LEVELS = {Compression.ZSTD: 3, Compression.GZIP: 6}  # each library's usual default
# Small writes (tarfile writes 512-byte headers) are gathered into a buffer of this size
# before they reach the compressor; writes at least _DIRECT long skip the buffer.
_BUFFER_SIZE = 1 << 20
_DIRECT = 256 << 10
FILE_MODE = 0o600  # staged files are not world-readable (contract section 7)


class _Codec(Protocol):
    def compress(self, data: memoryview, /) -> bytes: ...

    def flush(self) -> bytes: ...


def _codec(compression: Compression, level: int | None, threads: int) -> _Codec | None:
    """The streaming compressor for ``compression``; None for no compression."""
    if compression is Compression.NONE:
        return None
    if level is None:
        level = DEFAULT_LEVELS[compression]
    if compression is Compression.GZIP:
        import zlib

        # wbits 31: a gzip member (header, deflate, crc32 and size trailer), as gzip -d reads
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    import zstandard

    # write_checksum: the frame carries its own content checksum, so `zstd -t` can test it.
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    return cast(_Codec, cctx.compressobj())


class ArtifactWriter:
    """A writable binary file that streams one artifact to disk in one pass.

    Use it as a context manager: a clean exit closes it (``close()`` returns the
    ``Artifact``: filename, stored size, checksum, compression); an exception aborts
    it, which removes the file. It has what ``tarfile.open(fileobj=...)`` and
    ``shutil.copyfileobj`` need; ``tell()`` counts bytes written in (before
    compression).

    The file is created exclusively (``O_EXCL``, never through a symlink) with mode
    0o600 and fsynced on close. ``threads`` sets zstd worker threads (-1: every core).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        filename: str,
        *,
        compression: str = Compression.ZSTD.value,
        algorithm: str = DEFAULT_ALGORITHM,
        level: int | None = None,
        threads: int = 0,
        progress: ProgressCounter | None = None,
        on_close: Callable[[Artifact], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.filename = filename
        self.compression = Compression(compression)
        self.algorithm = ChecksumAlgorithm(algorithm)
        self.artifact: Artifact | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._hasher = new_hash(self.algorithm.value)
        self._codec = _codec(self.compression, level, threads)
        self._progress = progress
        self._on_close = on_close
        self._buffer = bytearray(_BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._aborted = False
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd: int | None = os.open(self.path, flags, FILE_MODE)

    # -- the file interface -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The path being written (tarfile uses it to skip the archive itself)."""
        return str(self.path)

    @property
    def closed(self) -> bool:
        """Whether the writer was closed or aborted."""
        return self._fd is None

    def writable(self) -> bool:
        """Always True while open."""
        return True

    def readable(self) -> bool:
        """Always False."""
        return False

    def seekable(self) -> bool:
        """Always False: the stream is compressed and hashed as it goes."""
        return False

    def read(self, size: int = -1, /) -> bytes:
        """Not supported."""
        raise io.UnsupportedOperation("ArtifactWriter is write-only")

    def seek(self, pos: int, whence: int = 0, /) -> int:
        """Not supported."""
        raise io.UnsupportedOperation("ArtifactWriter is not seekable")

    def tell(self) -> int:
        """Bytes written so far (uncompressed)."""
        return self.bytes_in

    def flush(self) -> None:
        """Nothing to do: bytes reach the disk as the compressor releases them."""
        self._check_open()

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Write ``data`` (any bytes-like object); returns its length in bytes."""
        self._check_open()
        view = memoryview(data).cast("B")
        n = len(view)
        if n >= _DIRECT:
            self._drain()
            self._feed(view)
        else:
            if self._filled + n > _BUFFER_SIZE:
                self._drain()
            self._view[self._filled : self._filled + n] = view
            self._filled += n
        self.bytes_in += n
        if self._progress is not None:
            self._progress.add(bytes=n)
        return n

    def writelines(self, lines: Any, /) -> None:
        """Write every bytes-like object of ``lines``."""
        for line in lines:
            self.write(line)

    def close(self) -> Artifact:
        """Finish the stream, fsync and close the file; returns the ``Artifact``.

        Calling it again returns the same Artifact. On an error the file is removed.
        """
        if self.artifact is not None:
            return self.artifact
        self._check_open()
        try:
            self._drain()
            if self._codec is not None:
                self._emit(self._codec.flush())
            assert self._fd is not None
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self.artifact = Artifact(
                filename=self.filename,
                size_bytes=self.bytes_out,
                checksum_algorithm=self.algorithm,
                checksum_value=self._hasher.hexdigest(),
                compression=self.compression,
            )
        except BaseException:
            self.abort()
            raise
        if self._on_close is not None:
            self._on_close(self.artifact)
        return self.artifact

    def abort(self) -> None:
        """Stop writing and remove the file; nothing is recorded. Safe to call twice."""
        self._aborted = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.artifact is None:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._aborted:
            self.close()

    def __repr__(self) -> str:
        state = "aborted" if self._aborted else "closed" if self.closed else "open"
        return f"<ArtifactWriter {self.filename!r} {self.compression.value} {state}>"

    # -- the pipeline: buffer -> compressor -> hash + count -> file ---------------------

    def _check_open(self) -> None:
        if self._fd is None:
            raise ValueError(
                f"I/O operation on {'an aborted' if self._aborted else 'a closed'} "
                f"artifact writer ({self.filename})"
            )

    def _drain(self) -> None:
        if self._filled:
            self._feed(self._view[: self._filled])
            self._filled = 0

    def _feed(self, data: memoryview) -> None:
        if self._codec is None:
            self._emit(data)
        else:
            self._emit(self._codec.compress(data))

    def _emit(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._hasher.update(data)
        self.bytes_out += len(data)
        view = memoryview(data)
        assert self._fd is not None
        while view:
            written = os.write(self._fd, view)
            view = view[written:]


def open_decompressed(path: str | os.PathLike[str], compression: str | None) -> BinaryIO:
    """A streaming reader of the artifact at ``path`` that undoes ``compression``."""
    codec = Compression(compression) if compression else Compression.NONE
    if codec is Compression.NONE:
        return open(path, "rb")
    if codec is Compression.GZIP:
        import gzip

        return cast(BinaryIO, gzip.open(path, "rb"))
    import zstandard

    raw = open(path, "rb")  # noqa: SIM115 - closed by the reader (closefd)
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=_BUFFER_SIZE, read_across_frames=True, closefd=True
        )
    except BaseException:
        raw.close()
        raise
    return cast(BinaryIO, io.BufferedReader(reader, buffer_size=_BUFFER_SIZE))
