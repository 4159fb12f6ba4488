"""Published outputs checked by tools that know nothing of baqup: zstd, gzip, tar, *sum."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from baqup_agent._archive import create_tar, extract_tar
from baqup_agent._logger import Logger
from baqup_agent._staging import Staging
from tests.conftest import require_binary

# checksum algorithm -> the coreutils command that checks "HEX  NAME" lines
SUM_TOOLS = {"sha256": "sha256sum", "sha512": "sha512sum", "blake2b": "b2sum"}


def run(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("hello\n" * 1000)
    (root / "docs" / "deep" / "data.bin").write_bytes(os.urandom(300_000))
    (root / "docs" / "link").symlink_to("readme.txt")
    (root / "empty").mkdir()
    return root


@pytest.fixture
def output(tmp_path: Path, tree: Path, logger: Logger) -> Path:
    s = Staging(tmp_path / "staging", "job-1", logger)
    s.prepare()
    with s.artifact("tree.tar.zst", threads=2) as w:
        create_tar(w, tree)
    with s.artifact("notes.txt.gz", compression="gzip", algorithm="sha512") as w:
        w.write(b"notes\n" * 10000)
    with s.artifact("raw/blob", compression="none", algorithm="blake2b") as w:
        w.write(os.urandom(50_000))
    return s.publish(agent="a", agent_version="1")


def contents(root: Path) -> dict[str, bytes | str | None]:
    """Every entry below ``root``: file bytes, symlink target, or None for a directory."""
    result: dict[str, bytes | str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[key] = os.readlink(path)
            elif path.is_dir():
                result[key] = None
            else:
                result[key] = path.read_bytes()
    return result


def sums_file(output: Path, algorithm: str, dest: Path) -> Path:
    """A `*sum -c` input built from the manifest: "HEX  filename" per artifact."""
    manifest = json.loads((output / "manifest.json").read_bytes())
    lines = [
        f"{a['checksum_value']}  {a['filename']}\n"
        for a in manifest["artifacts"]
        if a["checksum_algorithm"] == algorithm
    ]
    assert lines
    dest.write_text("".join(lines))
    return dest


def test_zstd_test_and_tar_listing(output: Path, tree: Path) -> None:
    require_binary("zstd")
    artifact = output / "tree.tar.zst"
    assert run(f"zstd -q -t {artifact}").returncode == 0
    listing = run(f"zstd -q -dc {artifact} | tar -t")
    assert listing.returncode == 0, listing.stderr
    expected = {"docs/", "docs/readme.txt", "docs/link", "docs/deep/", "docs/deep/data.bin"}
    assert set(listing.stdout.split()) == expected | {"empty/"}


def test_gnu_tar_extracts_what_we_wrote(output: Path, tree: Path, tmp_path: Path) -> None:
    require_binary("zstd")
    target = tmp_path / "gnu"
    target.mkdir()
    result = run(f"zstd -q -dc {output / 'tree.tar.zst'} | tar -x -C {target}")
    assert result.returncode == 0, result.stderr
    assert contents(target) == contents(tree)


def test_we_extract_what_gnu_tar_wrote(tree: Path, tmp_path: Path) -> None:
    """GNU tar's './'-prefixed names and its root './' entry are accepted."""
    data = subprocess.run(
        ["tar", "-C", str(tree), "-cf", "-", "."], capture_output=True, check=True
    )
    target = tmp_path / "ours"
    extract_tar(io.BytesIO(data.stdout), target)
    assert contents(target) == contents(tree)


def test_gzip_test(output: Path) -> None:
    assert run(f"gzip -t {output / 'notes.txt.gz'}").returncode == 0
    assert run(f"gzip -dc {output / 'notes.txt.gz'}").stdout == "notes\n" * 10000


@pytest.mark.parametrize("algorithm", sorted(SUM_TOOLS))
def test_sum_check_of_the_manifest(output: Path, tmp_path: Path, algorithm: str) -> None:
    sums = sums_file(output, algorithm, tmp_path / f"{algorithm}.sums")
    result = run(f"{SUM_TOOLS[algorithm]} -c {sums}", cwd=output)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(sums.read_text().splitlines())


def test_outside_tools_see_tampering(output: Path, tmp_path: Path) -> None:
    require_binary("zstd")
    artifact = output / "tree.tar.zst"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x55
    tampered = tmp_path / "tampered.tar.zst"
    tampered.write_bytes(bytes(data))
    assert run(f"zstd -q -t {tampered}").returncode != 0
    shutil.copyfile(tampered, artifact)
    sums = sums_file(output, "sha256", tmp_path / "sha256.sums")
    assert run(f"sha256sum -c {sums}", cwd=output).returncode != 0
