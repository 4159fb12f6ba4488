"""Artifacts in one pass (contract section 4): compress, checksum and count while writing.

``ArtifactWriter`` is a writable binary file: bytes written to it are compressed
(zstd, gzip or none), and the *compressed* stream, which is what lands on disk, is
hashed and counted on its way to the file. Memory stays constant whatever the size.
``open_decompressed`` is the reading side, used by restore.

The compressor runs in the caller's thread; hashing and writing the compressed bytes
run in one helper thread (``_Sink``), so the three overlap (zstd, zlib, hashlib and
``os.write`` all release the GIL). The helper also starts the disk writeback of each
completed region as it goes, so the fsync on close has little left to wait for.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NoReturn, Protocol, cast

from baqup_agent._checksum import DEFAULT_ALGORITHM, Hasher, new_hash
from baqup_agent._errors import DataError
from baqup_agent._paths import open_regular
from baqup_agent.contract import Artifact, ChecksumAlgorithm, Compression

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from baqup_agent._progress import ProgressCounter

DEFAULT_LEVELS = {Compression.ZSTD: 3, Compression.GZIP: 6}  # each library's usual default
# Small writes (tarfile writes 512-byte headers) are gathered into a buffer of this size
# before they reach the compressor; writes at least _DIRECT long skip the buffer.
_BUFFER_SIZE = 1 << 20
_DIRECT = 256 << 10
# Compressed chunks waiting for the sink thread: bounds memory, and lets the compressor
# run ahead of a slow disk by a few MiB.
_QUEUE_DEPTH = 4
# The sink asks the kernel to start writing back every region of this size once it is
# complete, instead of leaving the whole file dirty for the closing fsync.
_WRITEBACK = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the dirty pages, do not wait
_POLL = 0.1  # seconds between checks for a sink error or an abort, while the queue is full
FILE_MODE = 0o600  # staged files are not world-readable (contract section 7)


class _Encoder(Protocol):
    """Compresses what ``write`` gets and hands the output to the sink, in order."""

    def write(self, data: memoryview, /) -> object: ...

    def finish(self) -> None:
        """End the stream: the last output (gzip trailer, zstd frame end) goes out."""


class _Plain:
    """No compression: the bytes are copied, since the sink keeps what it is given and
    the caller (or the writer's buffer) reuses its memory."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def write(self, data: memoryview, /) -> None:
        self._sink.write(data.tobytes())

    def finish(self) -> None:
        """Nothing is pending."""


class _Gzip:
    def __init__(self, sink: _Sink, level: int) -> None:
        import zlib

        self._sink = sink
        # wbits 31: a gzip member (header, deflate, crc32 and size trailer), as gzip -d reads
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def write(self, data: memoryview, /) -> None:
        self._sink.write(self._zlib.compress(data))

    def finish(self) -> None:
        self._sink.write(self._zlib.flush())


class _Zstd:
    def __init__(self, sink: _Sink, level: int, threads: int) -> None:
        import zstandard

        # write_checksum: the frame carries its own content checksum, so `zstd -t` can
        # test it.
        params = {"threads": threads, "write_checksum": 1}
        if threads:
            # zstd's default job is four windows (2 MiB at level 1), and it keeps a few
            # per worker in memory: one window (at least 1 MiB) costs a small fraction
            # of the ratio and keeps peak memory well under the contract's 100 MiB.
            window_log = zstandard.ZstdCompressionParameters.from_level(level).window_log
            params["job_size"] = 1 << max(20, window_log)
        cctx = zstandard.ZstdCompressor(
            compression_params=zstandard.ZstdCompressionParameters.from_level(level, **params)
        )
        # The stream writer hands each output buffer (up to _BUFFER_SIZE) to the sink as
        # one object; compressobj() instead grows each result by reallocation.
        self._writer = cctx.stream_writer(
            cast(BinaryIO, sink), write_size=_BUFFER_SIZE, closefd=False
        )
        self._end_frame = zstandard.FLUSH_FRAME

    def write(self, data: memoryview, /) -> None:
        self._writer.write(data)

    def finish(self) -> None:
        # Not close(): that would end a second, empty frame.
        self._writer.flush(self._end_frame)


def _encoder(compression: Compression, level: int | None, threads: int, sink: _Sink) -> _Encoder:
    """The streaming compressor for ``compression``, writing to ``sink``."""
    if compression is Compression.NONE:
        return _Plain(sink)
    if level is None:
        level = DEFAULT_LEVELS[compression]
    if compression is Compression.GZIP:
        return _Gzip(sink, level)
    return _Zstd(sink, level, threads)


class ByteSink(Protocol):
    """Where a byte stream is written: an ``ArtifactWriter`` or any binary file."""

    def write(self, data: ReadableBuffer, /) -> object:
        """Take ``data`` (any bytes-like object)."""


class ByteSource(Protocol):
    """Where a byte stream is read from: a stream ``open_decompressed`` returns, or any
    binary file."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""


class ArtifactWriter:
    """A writable binary file that streams one artifact to disk in one pass.

    Use it as a context manager: a clean exit closes it (``close()`` returns the
    ``Artifact``: filename, stored size, checksum, compression); an exception aborts
    it, which removes the file. It has what ``tarfile.open(fileobj=...)`` and
    ``shutil.copyfileobj`` need; ``tell()`` counts bytes written in (before
    compression).

    The file is created exclusively (``O_EXCL``, never through a symlink) with mode
    0o600 and fsynced before ``close()`` returns. ``threads`` sets zstd worker threads
    (-1: every core). A helper thread hashes and writes the compressed bytes; an error
    there (a full disk) is raised by the next ``write`` or by ``close``.
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
        hasher = new_hash(self.algorithm.value)
        self._progress = progress
        self._on_close = on_close
        self._buffer = bytearray(_BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._aborted = False
        self._open = True
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._sink = _Sink(os.open(self.path, flags, FILE_MODE), hasher, self.filename)
        try:
            self._encoder = _encoder(self.compression, level, threads, self._sink)
        except BaseException:  # e.g. a level the library refuses
            self.abort()
            raise

    # -- the file interface -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The path being written (tarfile uses it to skip the archive itself)."""
        return str(self.path)

    @property
    def bytes_out(self) -> int:
        """Bytes stored so far (compressed): the artifact's size once closed."""
        return self._sink.bytes_out

    @property
    def closed(self) -> bool:
        """Whether the writer was closed or aborted."""
        return not self._open

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

    def write(self, data: ReadableBuffer, /) -> int:
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
            self._encoder.finish()
            digest = self._sink.finish()
            self._open = False
            self.artifact = Artifact(
                filename=self.filename,
                size_bytes=self.bytes_out,
                checksum_algorithm=self.algorithm,
                checksum_value=digest,
                compression=self.compression,
            )
        except BaseException:
            self.abort()
            raise
        if self._on_close is not None:
            self._on_close(self.artifact)
        return self.artifact

    def abort(self) -> None:
        """Stop writing and remove the file; nothing is recorded. Safe to call twice, and
        from another thread (staging discards a cancelled job's writers): it does not
        wait for the disk."""
        self._aborted = True
        if self._open:
            self._open = False
            self._sink.cancel()
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

    # -- the pipeline: buffer -> compressor -> (sink thread) hash -> file -----------------

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError(
                f"I/O operation on {'an aborted' if self._aborted else 'a closed'} "
                f"artifact writer ({self.filename})"
            )

    def _drain(self) -> None:
        if self._filled:
            self._feed(self._view[: self._filled])
            self._filled = 0

    def _feed(self, data: memoryview) -> None:
        # Bounded pieces: each compressed chunk stays small, and no single C call
        # lasts long, whatever one write brings.
        for start in range(0, len(data), _BUFFER_SIZE):
            self._encoder.write(data[start : start + _BUFFER_SIZE])


class _Sink:
    """Hashes and writes the stored bytes, in order, in a thread of its own.

    The thread owns the file descriptor and closes it when it ends: after an fsync
    (``finish``), at once (``cancel``), or on the first error, which the writer's
    next ``write`` or ``finish`` raises.
    """

    def __init__(self, fd: int, hasher: Hasher, filename: str) -> None:
        self.bytes_out = 0
        """Bytes queued for the file so far."""
        self._fd = fd
        self._hasher = hasher
        self._queue: queue.Queue[bytes | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._run, name=f"baqup-artifact {filename}", daemon=True
        )
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Queue ``data`` (blocks while the queue is full); raise the thread's error."""
        if data:
            self.bytes_out += len(data)
            self._put(data)

    def finish(self) -> str:
        """Write what is queued, fsync and close the file; the hex digest."""
        self._put(None)  # the end marker
        self._thread.join()
        if self._error is not None or self._cancelled:
            self._raise()
        return self._hasher.hexdigest()

    def cancel(self) -> None:
        """Drop what is queued and close the file without waiting for it."""
        self._cancelled = True
        with contextlib.suppress(queue.Full):  # a full queue means a busy thread, not asleep
            self._queue.put_nowait(None)

    def _put(self, item: bytes | None) -> None:
        # A timeout, so that a thread that ended meanwhile cannot leave the caller blocked.
        while self._error is None and not self._cancelled:
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        self._raise()

    def _raise(self) -> NoReturn:
        if self._error is not None:
            raise self._error
        raise ValueError("artifact writer aborted")

    def _run(self) -> None:
        fd, written, synced = self._fd, 0, 0
        writeback = _writeback_function()
        try:
            while (data := self._queue.get()) is not None and not self._cancelled:
                self._hasher.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(data)
                if writeback is not None and written - synced >= _WRITEBACK:
                    writeback(fd, synced, written - synced)
                    synced = written
            if not self._cancelled:
                os.fsync(fd)
        except BaseException as exc:  # handed to the writer's thread, which raises it
            self._error = exc
        finally:
            os.close(fd)


@functools.cache
def _writeback_function() -> Callable[[int, int, int], None] | None:
    """``f(fd, offset, length)`` starting the writeback of a file region without waiting
    for it: Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; None where it is missing."""
    import ctypes

    try:
        sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    sync_file_range.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        # Only a hint: a failure leaves the work to the closing fsync, which reports errors.
        sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    return start


def open_decompressed(path: str | os.PathLike[str], compression: str | None) -> BinaryIO:
    """A streaming reader of the artifact at ``path`` that undoes ``compression``.

    ``path`` must be a regular file (``paths.open_regular``: never a blocking open).
    Every way the stored bytes can fail to decode (a flipped byte, a frame of another
    format, a stream cut at any point) raises ``DataError`` (exit 65) from ``read``;
    the decompressed output is read in bounded pieces whatever the ratio.
    """
    codec = Compression(compression) if compression else Compression.NONE
    raw = open(open_regular(path), "rb", buffering=0)  # noqa: SIM115 - closed by the reader
    try:
        if codec is Compression.NONE:
            return cast(BinaryIO, io.BufferedReader(raw, buffer_size=_BUFFER_SIZE))
        if codec is Compression.GZIP:
            import gzip
            import zlib

            decoder: io.RawIOBase = cast(io.RawIOBase, gzip.GzipFile(fileobj=raw, mode="rb"))
            # what gzip raises for a bad header, bad deflate data, a cut stream
            errors: tuple[type[BaseException], ...] = (gzip.BadGzipFile, zlib.error, EOFError)
            frames = None
        else:
            import zstandard

            errors = (zstandard.ZstdError,)
            frames = _ZstdFrames(raw)
            decoder = cast(
                io.RawIOBase,
                zstandard.ZstdDecompressor().stream_reader(
                    cast(IO[bytes], frames),
                    read_size=_BUFFER_SIZE,
                    read_across_frames=True,
                    closefd=False,
                ),
            )
    except BaseException:
        raw.close()
        raise
    return cast(
        BinaryIO,
        io.BufferedReader(
            _Decoded(decoder, raw, errors, frames, str(path)), buffer_size=_BUFFER_SIZE
        ),
    )


class _Decoded(io.RawIOBase):
    """The decompressor's output, with every decoding failure turned into ``DataError``."""

    def __init__(
        self,
        decoder: io.RawIOBase,
        raw: io.RawIOBase,
        errors: tuple[type[BaseException], ...],
        frames: _ZstdFrames | None,
        name: str,
    ) -> None:
        super().__init__()
        self._decoder = decoder
        self._errors = errors
        self._raw = raw
        self._frames = frames
        self._name = name

    def readable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buffer: Any, /) -> int:
        """Decompress into ``buffer``; 0 only at a complete end of stream."""
        try:
            n = self._decoder.readinto(buffer)
        except self._errors as exc:
            raise DataError(f"{self._name}: corrupt compressed data: {exc}") from None
        if not n:
            if self._frames is not None:
                self._frames.check_complete(self._name)
            elif not self._raw.tell():  # gzip reads an empty file as an empty stream
                raise DataError(f"{self._name}: compressed data is truncated (empty)")
        return n or 0

    def close(self) -> None:
        """Close the decoder and the file."""
        try:
            self._decoder.close()
        finally:
            self._raw.close()
            super().close()


# zstd frame layout (RFC 8878): magic numbers and the frame header's field sizes.
_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # .. 0x184D2A5F: the low four bits are free
_DICT_ID_SIZES = (0, 1, 2, 4)
_CONTENT_SIZE_SIZES = (0, 2, 4, 8)


class _ZstdFrames:
    """Passes a zstd stream through and follows its frame and block structure.

    The zstandard reader ends quietly where its input ends, even inside a frame, so a
    cut stream would decode as a shorter one. This walks only the headers (frame
    headers, 3-byte block headers, skipping block contents) as the bytes go by, and
    ``check_complete`` says whether the stream ended between frames.
    """

    def __init__(self, raw: io.RawIOBase) -> None:
        self._raw = raw
        self._head = bytearray()  # bytes of the header being read
        self._need = 4  # header bytes the current state needs
        self._state = "magic"
        self._skip = 0  # content bytes to pass over before the next header
        self._checksum = False
        self._frames = 0

    def read(self, n: int = -1, /) -> bytes:
        """Read from the file and follow what was read."""
        data = self._raw.read(n)
        if data:
            self._follow(memoryview(data))
        return data or b""

    def check_complete(self, name: str) -> None:
        """Raise ``DataError`` unless the stream held whole frames only, at least one."""
        if self._state != "magic" or self._head or self._skip or not self._frames:
            raise DataError(f"{name}: compressed data is truncated (a zstd frame is cut)")

    def _follow(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._head), end - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) == self._need:
                head = bytes(self._head)
                self._head.clear()
                self._header(head)

    def _header(self, head: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & ~0xF == _SKIPPABLE_MAGIC:
                self._state, self._need = "skippable", 4
            else:
                raise DataError(f"not zstd data: frame magic {head.hex()}")
        elif self._state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            fhd = head[0]
            single_segment = (fhd >> 5) & 1
            size_flag = fhd >> 6
            self._checksum = bool((fhd >> 2) & 1)
            rest = (
                (0 if single_segment else 1)
                + _DICT_ID_SIZES[fhd & 3]
                + (_CONTENT_SIZE_SIZES[size_flag] or single_segment)
            )
            self._state, self._need = "block", 3
            self._skip = rest
        elif self._state == "block":
            header = int.from_bytes(head, "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                raise DataError("corrupt zstd data: reserved block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._frames += 1
                if self._checksum:
                    self._skip += 4
                self._state, self._need = "magic", 4
