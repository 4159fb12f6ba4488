"""Random trees round-trip through ``create_tar`` -> ``extract_tar`` byte for byte, with
their metadata, and GNU tar reads what we write and we read what GNU tar writes.

The trees mix what real ones hold and what the tar format makes awkward: non-ASCII
names, names and paths past ustar's 100 bytes, deep paths, empty files and files of
exactly one block or one record, hard links, symlinks that stay inside, empty
directories, and modes. Modes are drawn from those a restore keeps as they are
(``file_mode``/``dir_mode`` drop group and other write), so every one must come back.
"""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baqup_agent._archive import create_tar, extract_tar
from baqup_agent._errors import Cancelled, DataError
from baqup_agent._tar_size import BLOCK, RECORD
from tests.conftest import require_binary

TREES = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FILE_MODES = (0o600, 0o640, 0o644, 0o700, 0o750, 0o755)
DIR_MODES = (0o700, 0o750, 0o755)
# around the sizes where the format changes: empty, one block, one record, and between
SIZES = st.one_of(
    st.sampled_from([0, 1, BLOCK - 1, BLOCK, BLOCK + 1, RECORD - 1, RECORD, RECORD + 1]),
    st.integers(0, 3 * RECORD),
)
# names: ASCII, non-ASCII letters (2-4 bytes in UTF-8), spaces and punctuation
_CHARS = st.characters(
    categories=("L", "N", "Zs"), include_characters="-_.~#%&()[]{}'!", max_codepoint=0x1FFFF
)
SHORT_NAMES = st.text(_CHARS, min_size=1, max_size=12)
LONG_NAMES = st.text("abcdefghij", min_size=101, max_size=140)  # past ustar's 100 bytes
NAMES = st.one_of(SHORT_NAMES, SHORT_NAMES, LONG_NAMES).filter(lambda n: n not in (".", ".."))
MTIMES = st.integers(0, 2**33)  # past 2038, within ustar's 11 octal digits


def _content(size: int, seed: int) -> bytes:
    """``size`` bytes from a seed: drawing them byte by byte would be too much entropy."""
    return random.Random(seed).randbytes(size)


@dataclass
class Tree:
    """What to build: directories, files, hard links and symlinks, by relative path."""

    dirs: list[tuple[tuple[str, ...], int]]
    files: list[tuple[int, str, bytes, int, int]]  # dir index, name, data, mode, mtime
    hardlinks: list[tuple[int, int, str]]  # file index, dir index, name
    symlinks: list[tuple[int, int, str]]  # dir index, levels up, target name


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    dirs = draw(
        st.lists(
            st.tuples(
                st.lists(NAMES, min_size=1, max_size=6).map(tuple), st.sampled_from(DIR_MODES)
            ),
            max_size=5,
        )
    )
    dirs.insert(0, ((), 0o755))  # the root, where entries may also go
    pick_dir = st.integers(0, len(dirs) - 1)
    files = draw(
        st.lists(
            st.tuples(
                pick_dir,
                NAMES,
                st.builds(_content, SIZES, st.integers(0, 2**32)),
                st.sampled_from(FILE_MODES),
                MTIMES,
            ),
            max_size=12,
        )
    )
    hardlinks = draw(st.lists(st.tuples(st.integers(0, 11), pick_dir, NAMES), max_size=3))
    symlinks = draw(st.lists(st.tuples(pick_dir, st.integers(0, 6), NAMES), max_size=3))
    return Tree(dirs, files, hardlinks, symlinks)


def build(root: Path, tree: Tree) -> None:
    """Make ``tree`` below ``root``; entries whose path is taken already are left out."""
    taken: set[Path] = set()

    def free(path: Path) -> bool:
        # a name may not reuse a path, nor sit below a file
        if path in taken or any(p in taken and not p.is_dir() for p in path.parents):
            return False
        if any(len(os.fsencode(part)) > 255 for part in path.relative_to(root).parts):
            return False
        taken.add(path)
        return True

    placed_dirs: list[Path] = []
    for parts, _ in tree.dirs:
        path = root.joinpath(*parts)
        for parent in [*reversed(path.relative_to(root).parents), Path(*parts)]:
            full = root / parent
            if full != root and full not in taken and not free(full):
                path = root  # collides with a file: the entries go to the root instead
                break
            full.mkdir(exist_ok=True)
        placed_dirs.append(path)
    files: list[Path] = []
    for d, name, data, mode, mtime in tree.files:
        path = placed_dirs[d] / name
        if not free(path):
            continue
        path.write_bytes(data)
        path.chmod(mode)
        os.utime(path, (mtime, mtime))
        files.append(path)
    for f, d, name in tree.hardlinks:
        path = placed_dirs[d] / name
        if f < len(files) and free(path):
            os.link(files[f], path)
    for d, up, name in tree.symlinks:
        path = placed_dirs[d] / name
        depth = len(path.relative_to(root).parts) - 1
        if free(path):  # climbs only as far as the root: a restore accepts it
            path.symlink_to("../" * min(up, depth) + name)
    # directory modes last: a 0o500 parent would refuse the entries above
    for (_, mode), path in zip(tree.dirs, placed_dirs, strict=True):
        if path != root:
            path.chmod(mode)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Each entry's kind and what must survive: bytes, mode, mtime and the hard-link
    group (every path of the inode) of files, targets of symlinks, modes of directories."""
    entries: dict[str, tuple[object, ...]] = {}
    inode_of: dict[str, int] = {}
    paths_of: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = path.relative_to(root).as_posix()
            s = path.lstat()
            if stat.S_ISLNK(s.st_mode):
                entries[key] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(s.st_mode):
                entries[key] = ("dir", stat.S_IMODE(s.st_mode))
            else:
                data = path.read_bytes()
                entries[key] = ("file", data, stat.S_IMODE(s.st_mode), int(s.st_mtime))
                inode_of[key] = s.st_ino
                paths_of.setdefault(s.st_ino, set()).add(key)
    for key, inode in inode_of.items():
        entries[key] += (frozenset(paths_of[inode]),)
    return entries


def same_tree(a: Path, b: Path) -> None:
    left, right = snapshot(a), snapshot(b)
    assert left.keys() == right.keys()
    for key in left:
        assert left[key] == right[key], key


@TREES
@given(tree=trees())
def test_create_then_extract_round_trips(tree: Tree) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        source.mkdir()
        build(source, tree)
        stream = io.BytesIO()
        stats = create_tar(stream, source)
        assert stats.skipped == 0
        assert len(stream.getvalue()) % RECORD == 0
        stream.seek(0)
        extract_tar(stream, target)
        same_tree(source, target)


@TREES
@given(tree=trees())
def test_gnu_tar_extracts_what_create_tar_writes(tree: Tree) -> None:
    tar = require_binary("tar")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        source.mkdir()
        target.mkdir()
        build(source, tree)
        archive = Path(tmp, "a.tar")
        with archive.open("wb") as f:
            create_tar(f, source)
        listing = subprocess.run([tar, "-tvf", archive], capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        done = subprocess.run([tar, "-xf", archive, "-C", target], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        same_tree(source, target)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])  # GNU tar's default, and PAX
@TREES
@given(tree=trees())
def test_extract_tar_reads_what_gnu_tar_writes(fmt: str, tree: Tree) -> None:
    tar = require_binary("tar")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        source.mkdir()
        build(source, tree)
        archive = Path(tmp, "a.tar")
        done = subprocess.run(
            [tar, f"--format={fmt}", "-cf", archive, "-C", source, "."],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        with archive.open("rb") as f:
            extract_tar(f, target)
        same_tree(source, target)


class _Endless(io.RawIOBase):
    """A stream that never ends: one valid member, then garbage forever (counted)."""

    def __init__(self, head: bytes) -> None:
        super().__init__()
        self.head, self.served = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.head[self.served :] or b"\xff" * len(buffer)
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        self.served += n
        return n


class _Failing(io.RawIOBase):
    """Hands out ``data``, then fails the way a corrupt compressed stream does."""

    def __init__(self, data: bytes, error: BaseException) -> None:
        super().__init__()
        self.data, self.error = data, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self.data:
            raise self.error
        n = min(len(buffer), len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


def _one_member() -> bytes:
    stream = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "a").write_bytes(b"x" * 3000)
        create_tar(stream, tmp)
    return stream.getvalue()[: BLOCK + 3000 + -3000 % BLOCK]  # the member, no end blocks


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "baqup-tar-read" and t.is_alive()]


def test_a_refused_header_stops_the_read_ahead(tmp_path: Path) -> None:
    """Garbage after a member: refused at its header; the reading thread is gone and
    read little past it, although the stream would never end."""
    stream = _Endless(_one_member())
    with pytest.raises(DataError, match="no valid header"):
        extract_tar(stream, tmp_path / "t")
    assert not _readers()
    assert stream.served <= 2 << 20
    assert list((tmp_path / "t").iterdir()) == []  # rolled back


@pytest.mark.parametrize("error", [DataError("corrupt compressed data"), Cancelled("stop")])
def test_an_error_of_the_read_ahead_is_raised_by_extract_tar(
    tmp_path: Path, error: BaseException
) -> None:
    """What the reading thread's read raises (a corrupt stream, a cancel at its
    checkpoint) is what extract_tar raises, after what came before it was written."""
    with pytest.raises(type(error), match=str(error)):
        extract_tar(io.BufferedReader(_Failing(_one_member(), error)), tmp_path / "t")
    assert not _readers()
    assert list((tmp_path / "t").iterdir()) == []  # rolled back
