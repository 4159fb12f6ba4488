"""Checksums of artifacts (contract section 4): the hash factory and ``compute_checksum``.

The algorithms are the values of the generated ``ChecksumAlgorithm`` enum
(``schema/common.json``): sha256 (the default), sha512 and blake2b come from
hashlib; blake3 needs the optional ``blake3`` package (``baqup-agent[blake3]``).
Digests are lower-case hex: 64 characters, 128 for sha512 and blake2b (its full
64-byte digest).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from baqup_agent._errors import ConfigError
from baqup_agent.contract import ChecksumAlgorithm

ALGORITHMS: tuple[str, ...] = tuple(a.value for a in ChecksumAlgorithm)
DEFAULT_ALGORITHM = ChecksumAlgorithm.SHA256.value

# Reads of this size keep syscall and per-call overhead negligible while two buffers
# stay small; measured best between 1 and 4 MiB (bench/bench_checksum.py).
CHUNK_SIZE = 4 << 20


class Hasher(Protocol):
    """What ``new_hash`` returns: the hashlib interface the SDK uses."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object:
        """Feed more bytes."""
        ...

    def hexdigest(self) -> str:
        """The digest of every byte fed so far, in lower-case hex."""
        ...


def new_hash(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """A fresh hasher for ``algorithm`` (one of ``ALGORITHMS``).

    Raises ``ValueError`` for an unknown name and ``ConfigError`` (exit 64) for
    blake3 when the optional package is not installed.
    """
    try:
        algo = ChecksumAlgorithm(algorithm)
    except ValueError:
        raise ValueError(
            f"unknown checksum algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
        ) from None
    if algo is ChecksumAlgorithm.BLAKE3:
        try:
            import blake3
        except ImportError:
            raise ConfigError(
                "checksum algorithm blake3 needs the optional blake3 package: "
                "pip install 'baqup-agent[blake3]'"
            ) from None
        hasher: Hasher = blake3.blake3()
        return hasher
    if algo is ChecksumAlgorithm.BLAKE2B:
        return hashlib.blake2b(digest_size=64)
    return hashlib.new(algo.value)


def compute_checksum(path: str | os.PathLike[str], algorithm: str = DEFAULT_ALGORITHM) -> str:
    """The hex digest of the file at ``path``, read in constant memory."""
    return file_checksum(path, algorithm)[1]


def file_checksum(
    path: str | os.PathLike[str] | int, algorithm: str = DEFAULT_ALGORITHM
) -> tuple[int, str]:
    """``(size, hex digest)`` of the file at ``path``; the size counts the bytes hashed.

    ``path`` may be an open fd (as from ``paths.open_regular``); it is closed.

    Large files are read into two reused buffers while a helper thread hashes the
    other one (hashlib releases the GIL), so reading from the page cache overlaps
    hashing and the cost stays close to hashing bytes already in memory.
    """
    with open(path, "rb", buffering=0) as f:  # first: a given fd is closed whatever happens
        hasher = new_hash(algorithm)
        if os.fstat(f.fileno()).st_size <= CHUNK_SIZE:
            # A thread would cost more than it saves.
            size = 0
            while data := f.read(CHUNK_SIZE):
                hasher.update(data)
                size += len(data)
            return size, hasher.hexdigest()
        return _hash_overlapped(f, hasher), hasher.hexdigest()


class _Readable(Protocol):
    def readinto(self, buffer: bytearray, /) -> int | None: ...


def _hash_overlapped(f: _Readable, hasher: Hasher) -> int:
    """Feed ``f`` to ``hasher``, reading one buffer while the other is hashed; bytes read."""
    buffers = [bytearray(CHUNK_SIZE), bytearray(CHUNK_SIZE)]
    views = [memoryview(b) for b in buffers]
    pending: Future[object] | None = None
    total = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baqup-checksum") as pool:
        i = 0
        # The buffer read into now was handed to the hasher two rounds ago; waiting for
        # the previous round before submitting keeps the updates in order and that
        # buffer free.
        while n := f.readinto(buffers[i]):
            total += n
            if pending is not None:
                pending.result()
            pending = pool.submit(hasher.update, views[i][:n])
            i ^= 1
        if pending is not None:
            pending.result()
    return total
