"""ArtifactWriter: one pass, compression round trips, checksum of the stored bytes."""

from __future__ import annotations

import array
import errno
import gzip
import hashlib
import io
import os
import random
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from baqup_agent import _artifacts as artifacts
from baqup_agent._artifacts import ArtifactWriter, open_decompressed
from baqup_agent._checksum import ALGORITHMS
from baqup_agent._progress import ProgressCounter
from baqup_agent.contract import Artifact, ChecksumAlgorithm, Compression
from tests.output.test_checksum import reference

COMPRESSIONS = [c.value for c in Compression]


def payload(size: int) -> bytes:
    """Half text, half pseudo-random bytes: compressible and not."""
    text = b"".join(b"line %d: the quick brown fox\n" % i for i in range(size // 40 + 1))
    noise = hashlib.shake_256(b"seed").digest(size // 2)
    return (text[: size - len(noise)] + noise)[:size]


def decompress(compression: str, data: bytes) -> bytes:
    """Undo ``compression`` with the reference libraries (not the SDK's reader)."""
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if compression == "gzip":
        return gzip.decompress(data)
    return data


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip(tmp_path: Path, compression: str, algorithm: str) -> None:
    data = payload(3 << 20)
    path = tmp_path / "a.bin"
    with ArtifactWriter(path, "a.bin", compression=compression, algorithm=algorithm) as w:
        # small and large writes, bytes and other buffers
        w.write(data[:100])
        w.write(bytearray(data[100:5000]))
        w.write(memoryview(data)[5000 : 2 << 20])
        for i in range(2 << 20, len(data), 7000):
            w.write(data[i : i + 7000])
        assert w.tell() == len(data)
    artifact = w.artifact
    assert artifact is not None
    stored = path.read_bytes()
    assert artifact.filename == "a.bin"
    assert artifact.size_bytes == len(stored) == w.bytes_out
    assert artifact.checksum_algorithm is ChecksumAlgorithm(algorithm)
    assert artifact.checksum_value == reference(algorithm, stored)  # the stored bytes
    assert artifact.compression is Compression(compression)
    assert w.bytes_in == len(data)
    assert decompress(compression, stored) == data
    with open_decompressed(path, compression) as reader:
        assert reader.read() == data
    if compression != "none":
        assert len(stored) < len(data)


def test_levels_and_threads(tmp_path: Path) -> None:
    rng = random.Random(1)
    words = [b"alpha", b"beta", b"gamma", b"backup", b"restore", b"agent", b"manifest"]
    data = b" ".join(rng.choice(words) for _ in range(200_000))
    sizes = {}
    for name, level, threads in [("l1", 1, 0), ("l12", 12, 0), ("mt", 3, 2), ("all", 1, -1)]:
        with ArtifactWriter(tmp_path / name, name, level=level, threads=threads) as w:
            w.write(data)
        sizes[name] = w.bytes_out
        assert decompress("zstd", (tmp_path / name).read_bytes()) == data
    assert sizes["l12"] < sizes["l1"]
    with ArtifactWriter(tmp_path / "g1", "g1", compression="gzip", level=1) as w:
        w.write(data)
    with ArtifactWriter(tmp_path / "g9", "g9", compression="gzip", level=9) as w9:
        w9.write(data)
    assert w9.bytes_out < w.bytes_out
    assert gzip.decompress((tmp_path / "g1").read_bytes()) == data


def test_non_byte_buffers_count_bytes(tmp_path: Path) -> None:
    numbers = array.array("i", range(1000))
    with ArtifactWriter(tmp_path / "n", "n", compression="none") as w:
        assert w.write(numbers) == numbers.itemsize * 1000
    assert (tmp_path / "n").read_bytes() == numbers.tobytes()


def test_file_is_private_and_fsynced_on_close(tmp_path: Path) -> None:
    w = ArtifactWriter(tmp_path / "a", "a")
    w.write(b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o600
    artifact = w.close()
    assert w.closed
    assert w.close() is artifact  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.write(b"more")


def test_never_overwrites_or_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "existing").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        ArtifactWriter(tmp_path / "existing", "existing")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(FileExistsError):
        ArtifactWriter(tmp_path / "link", "link")
    assert victim.read_bytes() == b"keep"


def test_exception_aborts_and_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with pytest.raises(RuntimeError), ArtifactWriter(path, "a") as w:
        w.write(b"partial" * 1000)
        raise RuntimeError("boom")
    assert not path.exists()
    assert w.artifact is None
    assert w.closed
    with pytest.raises(ValueError, match="aborted"):
        w.write(b"x")


def test_explicit_abort_inside_with_is_not_closed(tmp_path: Path) -> None:
    with ArtifactWriter(tmp_path / "a", "a") as w:
        w.write(b"x")
        w.abort()
    assert w.artifact is None
    assert not (tmp_path / "a").exists()


class _FullDisk:
    """``os`` as the artifact writer's helper thread sees it, on a disk that fills up."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: memoryview) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return os.write(fd, data)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_write_error_in_the_helper_thread_reaches_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    monkeypatch.setattr(artifacts, "os", _FullDisk(room=3 << 20))
    path = tmp_path / "a"
    with pytest.raises(OSError) as raised, ArtifactWriter(path, "a", compression=compression) as w:
        for _ in range(64):  # raised by a later write, or at the latest by close
            w.write(os.urandom(1 << 20))  # incompressible: the stored stream grows as fast
    assert raised.value.errno == errno.ENOSPC
    assert not path.exists() and w.artifact is None and w.closed


def test_abort_from_another_thread_stops_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "a"
    w = ArtifactWriter(path, "a", compression="none")
    w.write(os.urandom(3 << 20))
    aborter = threading.Thread(target=w.abort)  # as staging.discard() in a forced exit
    aborter.start()
    aborter.join(5)
    assert not aborter.is_alive()
    assert not path.exists()
    with pytest.raises(ValueError, match="aborted"):
        w.write(b"more")
    with pytest.raises(ValueError, match="aborted"):
        w.close()


def test_one_huge_write_is_fed_in_bounded_pieces(tmp_path: Path) -> None:
    data = payload(5 << 20)
    with ArtifactWriter(tmp_path / "a", "a", compression="none") as w:
        w.write(data)
    assert (tmp_path / "a").read_bytes() == data
    assert w.bytes_out == len(data)


def test_close_hook_and_progress(tmp_path: Path) -> None:
    seen: list[Artifact] = []
    progress = ProgressCounter()
    with ArtifactWriter(tmp_path / "a", "a", progress=progress, on_close=seen.append) as w:
        w.write(b"x" * 1000)
        w.writelines([b"a", b"b"])
    assert seen == [w.artifact]
    assert progress.snapshot().bytes_done == 1002


def test_read_and_seek_are_unsupported(tmp_path: Path) -> None:
    with ArtifactWriter(tmp_path / "a", "a") as w:
        assert w.writable() and not w.readable() and not w.seekable()
        with pytest.raises(io.UnsupportedOperation):
            w.read()
        with pytest.raises(io.UnsupportedOperation):
            w.seek(0)
        assert w.name == str(tmp_path / "a")


@pytest.mark.parametrize("mode", ["w|", "w"])
def test_tarfile_writes_through_it(tmp_path: Path, mode: str) -> None:
    content = payload(300_000)
    with (
        ArtifactWriter(tmp_path / "t.tar.zst", "t.tar.zst") as w,
        tarfile.open(fileobj=w, mode=mode) as tar,  # type: ignore[call-overload]
    ):
        info = tarfile.TarInfo("file")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    with (
        open_decompressed(tmp_path / "t.tar.zst", "zstd") as reader,
        tarfile.open(fileobj=reader, mode="r|") as tar,
    ):
        member = tar.next()
        assert member is not None and member.name == "file"
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == content


def test_unknown_compression_or_algorithm(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ArtifactWriter(tmp_path / "a", "a", compression="lz4")
    with pytest.raises(ValueError):
        ArtifactWriter(tmp_path / "b", "b", algorithm="md5")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# VmHWM, not ru_maxrss: ru_maxrss survives execve, so a child started by a big pytest
# process would report the parent's size.
_MEMORY_SCRIPT = """
import os, sys
from baqup_agent._artifacts import ArtifactWriter
mib, compression, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
chunk = os.urandom(1 << 20)
with ArtifactWriter(sys.argv[4], "a", compression=compression, level=1, threads=threads) as w:
    for i in range(mib):
        w.write(chunk[i % 251:] + chunk[: i % 251])  # never the same 1 MiB twice
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) // 1024)  # kB -> MiB
"""


@pytest.mark.parametrize(("compression", "threads"), [("zstd", 2), ("none", 0)])
def test_constant_memory(tmp_path: Path, compression: str, threads: int) -> None:
    """Peak RSS does not grow with the artifact: 16 MiB and 256 MiB peak alike."""

    def peak_mib(mib: int) -> int:
        out = tmp_path / f"{mib}.bin"
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(mib), compression, str(threads), out],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stat().st_size > (mib << 20) // 2
        out.unlink()
        return int(result.stdout)

    small, large = peak_mib(16), peak_mib(256)
    assert large < 100, f"peak RSS {large} MiB"
    assert large - small < 16, f"peak RSS grew from {small} to {large} MiB"
