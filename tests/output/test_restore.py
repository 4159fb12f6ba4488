"""PublishedOutput: manifest validation and checksum verification before any use."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from baqup_agent._archive import extract_tar
from baqup_agent._errors import DataError
from baqup_agent._logger import Logger
from baqup_agent._restore import PublishedOutput
from baqup_agent._staging import Staging


@pytest.fixture
def output(staging_dir: Path, logger: Logger) -> Path:
    """A published output: a zstd tar, a gzip file, a raw file in a subdirectory."""
    return publish_sample(staging_dir, logger)


def publish_sample(staging_dir: Path, logger: Logger, raw_size: int = 10000) -> Path:
    """Publish ``output``'s three artifacts (sha256, blake2b, sha512), the raw one of
    ``raw_size`` random bytes."""
    s = Staging(staging_dir, "job-1", logger)
    s.prepare()
    with s.artifact("files.tar.zst") as w, tarfile.open(fileobj=w, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with s.artifact("notes.gz", compression="gzip", algorithm="blake2b") as w:
        w.write(b"notes " * 1000)
    with s.artifact("raw/data.bin", compression="none", algorithm="sha512") as w:
        w.write(os.urandom(raw_size))
    return s.publish(agent="a", agent_version="1")


def rewrite_manifest(output: Path, change: dict[str, Any]) -> None:
    document = json.loads((output / "manifest.json").read_bytes())
    document.update(change)
    (output / "manifest.json").write_text(json.dumps(document))


def test_open_verify_read(output: Path) -> None:
    published = PublishedOutput.open(output)
    assert published.path == output
    assert [a.filename for a in published.manifest.artifacts] == [
        "files.tar.zst",
        "notes.gz",
        "raw/data.bin",
    ]
    published.verify(strict=True)
    assert published.verified
    with published.open_artifact("notes.gz") as reader:
        assert reader.read() == b"notes " * 1000
    with published.open_artifact("raw/data.bin") as reader:
        assert len(reader.read()) == 10000


def test_open_artifact_verifies_everything_first(output: Path, tmp_path: Path) -> None:
    corrupt = output / "raw" / "data.bin"
    data = bytearray(corrupt.read_bytes())
    data[5000] ^= 1
    corrupt.write_bytes(bytes(data))
    published = PublishedOutput.open(output)
    target = tmp_path / "target"
    with pytest.raises(DataError, match=r"checksum mismatch for raw/data.bin"):
        # another artifact is asked for: the whole output is verified before any byte
        extract_tar(published.open_artifact("files.tar.zst"), target)
    assert not target.exists()


def test_verify_names_the_bad_artifact(output: Path) -> None:
    (output / "notes.gz").write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"notes.gz has 8 bytes") as info:
        PublishedOutput.open(output).verify()
    assert info.value.exit_code == 65


def test_same_size_different_bytes(output: Path) -> None:
    path = output / "files.tar.zst"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"checksum mismatch for files\.tar\.zst"):
        PublishedOutput.open(output).verify()


def test_missing_artifact(output: Path) -> None:
    (output / "notes.gz").unlink()
    with pytest.raises(DataError, match=r"notes\.gz is missing"):
        PublishedOutput.open(output).verify()


def test_symlinked_artifact_is_refused(output: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    (output / "notes.gz").rename(real)
    (output / "notes.gz").symlink_to(real)
    with pytest.raises(DataError, match="resolves outside"):
        PublishedOutput.open(output).verify()
    (output / "notes.gz").unlink()
    real.rename(output / "real.gz")
    (output / "notes.gz").symlink_to("real.gz")  # even one that stays inside
    with pytest.raises(DataError, match="not a regular file"):
        PublishedOutput.open(output).verify()


def test_symlinked_directory_is_refused(output: Path, tmp_path: Path) -> None:
    (output / "raw").rename(tmp_path / "raw")
    (output / "raw").symlink_to(tmp_path / "raw")
    with pytest.raises(DataError, match="resolves outside"):
        PublishedOutput.open(output).verify()


def test_strict_refuses_extra_files(output: Path) -> None:
    (output / "extra").write_text("?")
    PublishedOutput.open(output).verify()  # lenient by default
    with pytest.raises(DataError, match="unexpected entry 'extra'"):
        PublishedOutput.open(output).verify(strict=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "2.0"}, "invalid manifest"),
        ({"job_id": "../x"}, "invalid manifest"),
        ({"created_at": "yesterday"}, "invalid manifest"),
        ({"extra": 1}, "invalid manifest"),
        ({"role": 1}, "invalid manifest"),
    ],
)
def test_invalid_manifest(output: Path, change: dict[str, Any], message: str) -> None:
    rewrite_manifest(output, change)
    with pytest.raises(DataError, match=message):
        PublishedOutput.open(output)


@pytest.mark.parametrize("filename", ["../escape", "/etc/passwd", "a/../b", "manifest.json"])
def test_unsafe_artifact_names_in_manifest(output: Path, filename: str) -> None:
    document = json.loads((output / "manifest.json").read_bytes())
    document["artifacts"][0]["filename"] = filename
    (output / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(DataError):
        PublishedOutput.open(output)


def test_duplicate_artifact_in_manifest(output: Path) -> None:
    document = json.loads((output / "manifest.json").read_bytes())
    document["artifacts"].append(document["artifacts"][0])
    (output / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match="duplicate"):
        PublishedOutput.open(output)


def test_digest_length_must_match_the_algorithm(output: Path) -> None:
    document = json.loads((output / "manifest.json").read_bytes())
    document["artifacts"][2]["checksum_value"] = "0" * 64  # sha512 needs 128
    (output / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match="128 hex digits"):
        PublishedOutput.open(output)


def test_not_a_published_output(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no manifest"):
        PublishedOutput.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not JSON"):
        PublishedOutput.open(tmp_path)


def test_manifest_symlink_is_refused(output: Path, tmp_path: Path) -> None:
    (output / "manifest.json").rename(tmp_path / "m.json")
    (output / "manifest.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(DataError, match="manifest"):
        PublishedOutput.open(output)


def test_unknown_artifact(output: Path) -> None:
    with pytest.raises(DataError, match="no artifact 'nope'"):
        PublishedOutput.open(output).open_artifact("nope")
