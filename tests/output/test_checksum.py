"""compute_checksum and new_hash against hashlib / blake3, for every algorithm."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from baqup_agent import compute_checksum
from baqup_agent._checksum import ALGORITHMS, CHUNK_SIZE, file_checksum, new_hash
from baqup_agent._errors import ConfigError
from baqup_agent.contract import ChecksumAlgorithm


def reference(algorithm: str, data: bytes) -> str:
    """The digest computed by the reference library, independently of baqup_agent."""
    if algorithm == "blake3":
        import blake3

        return str(blake3.blake3(data).hexdigest())
    if algorithm == "blake2b":
        return hashlib.blake2b(data, digest_size=64).hexdigest()
    return hashlib.new(algorithm, data).hexdigest()


def test_algorithms_are_the_schema_enum() -> None:
    assert tuple(a.value for a in ChecksumAlgorithm) == ALGORITHMS
    assert ALGORITHMS[0] == "sha256"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 12345])
def test_compute_checksum_matches_reference(tmp_path: Path, algorithm: str, size: int) -> None:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    path = tmp_path / "f"
    path.write_bytes(data)
    assert compute_checksum(path, algorithm) == reference(algorithm, data)
    assert file_checksum(str(path), algorithm) == (size, reference(algorithm, data))


def test_default_is_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert compute_checksum(path) == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("algorithm", "digits"), [("sha256", 64), ("sha512", 128), ("blake2b", 128), ("blake3", 64)]
)
def test_digest_lengths(algorithm: str, digits: int) -> None:
    assert len(new_hash(algorithm).hexdigest()) == digits


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="md5"):
        new_hash("md5")


def test_blake3_missing_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "blake3", None)  # import blake3 -> ImportError
    with pytest.raises(ConfigError, match=r"baqup-agent\[blake3\]"):
        new_hash("blake3")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        compute_checksum(tmp_path / "nope")
