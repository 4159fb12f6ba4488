"""The small-file fast path of ``extract_tar`` gives what the general path gives.

``_TarReader.small_file`` and ``_Extractor.extract_small_files`` handle the usual member (a
small file in one ustar header, in the directory of the file before) in two calls;
everything else goes the general way. Hypothesis draws archives of every kind of
member, hostile ones included (climbing, absolute and overlong names, unsafe links,
devices, corrupt checksums, truncation), in the three formats, read in chunks of any
size (members straddle them), into an empty target or one holding files, a symlink
pointing outside and a directory. Each is extracted twice, with the fast path and with
it turned off; the outcome (the stats or the error's text) and the tree left must be
the same, and the file outside must be untouched.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from baqup_agent._archive import _SMALL, _Extractor, _TarReader, extract_tar
from baqup_agent._errors import DataError
from baqup_agent._tar_size import BLOCK
from tests.output.test_archive_roundtrip import snapshot

SEGMENTS = st.sampled_from(["a", "b", "c", "d", "é", "..", ".", "", "x" * 120, "y" * 256])
NAMES = st.one_of(
    st.sampled_from(["a", "b", "c/f", "c/g", "d/e/f", "a/", "/abs", "", "."]),
    st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join),
)
SIZES = st.sampled_from([0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5000, _SMALL, _SMALL + 1])
KINDS = st.sampled_from(
    [tarfile.REGTYPE] * 6 + [tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]
    + [tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]
)  # fmt: skip
LINKS = st.sampled_from(["a", "c/f", "../a", "../../a", "/etc/passwd", "b/../a", ""])
MEMBERS = st.lists(
    st.tuples(NAMES, KINDS, SIZES, LINKS, st.sampled_from([0o644, 0o4755, 0o600, 0o777])),
    min_size=1,
    max_size=12,
)
FORMATS = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])


def archive(members: list[tuple[str, bytes, int, str, int]], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i, (name, kind, size, link, mode) in enumerate(members):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 1_600_000_000 + i
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = link
            data = None
            if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = size
                data = io.BytesIO(bytes([65 + i % 26]) * size)
            tar.addfile(info, data)
    return out.getvalue()


class Chunked:
    """A stream whose reads return at most ``size`` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size, self._pos = data, size, 0

    def read(self, n: int = -1) -> bytes:
        n = self._size if n < 0 else min(n, self._size)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def prepare(target: Path, outside: Path, existing: bool) -> None:
    target.mkdir()
    if existing:
        (target / "a").write_bytes(b"old")
        (target / "b").symlink_to(outside)
        (target / "c").mkdir()
        (target / "c" / "f").write_bytes(b"old f")
        for path in (target / "a", target / "c" / "f"):
            os.utime(path, (1, 1))  # the same in both targets


def outcome(data: bytes, target: Path, chunk: int, fast: bool) -> tuple[object, object]:
    with mock.patch.object(_TarReader, "small_file", _TarReader.small_file if fast else _none):
        try:
            result: object = dataclasses.asdict(extract_tar(Chunked(data, chunk), target))
        except DataError as exc:
            result = str(exc)
    return result, snapshot(target)


def _none(self: _TarReader) -> None:
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=MEMBERS,
    fmt=FORMATS,
    chunk=st.one_of(st.integers(100, 3000), st.just(1 << 20)),  # tiny reads: too slow
    existing=st.booleans(),
    damage=st.one_of(
        st.none(), st.tuples(st.integers(0, 20), st.integers(0, BLOCK - 1), st.integers(1, 255))
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_fast_path_matches_the_general_path(
    tmp_path_factory: pytest.TempPathFactory,
    members: list[tuple[str, bytes, int, str, int]],
    fmt: int,
    chunk: int,
    existing: bool,
    damage: tuple[int, int, int] | None,
    cut: int | None,
) -> None:
    try:
        data = archive(members, fmt)
    except ValueError:  # a name or a link the format cannot hold
        assume(False)
    if damage is not None:  # one byte of a member's header changed
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            headers = [m.offset_data - BLOCK for m in tar.getmembers()]
        which, at, xor = damage
        at += headers[which % len(headers)]
        data = data[:at] + bytes([data[at] ^ xor]) + data[at + 1 :]
    if cut is not None:
        data = data[: cut % len(data)]
    base = tmp_path_factory.mktemp("fast")
    outside = base / "outside"
    outside.write_bytes(b"keep")
    results = []
    for fast in (True, False):
        target = base / ("fast" if fast else "general")
        prepare(target, outside, existing)
        results.append(outcome(data, target, chunk, fast))
    assert results[0] == results[1]
    assert outside.read_bytes() == b"keep"


def test_the_files_of_one_directory_take_the_fast_path(tmp_path: Path) -> None:
    """Only the first file of a directory (and the directory) go the general way."""
    members = [("dir", tarfile.DIRTYPE, 0, "", 0o755)]
    members += [(f"dir/file-{i}", tarfile.REGTYPE, 100 * i, "", 0o644) for i in range(50)]
    members += [(f"top-{i}", tarfile.REGTYPE, 10, "", 0o644) for i in range(20)]
    data = archive(members, tarfile.PAX_FORMAT)
    with mock.patch.object(
        _Extractor, "extract", autospec=True, side_effect=_Extractor.extract
    ) as general:
        stats = extract_tar(io.BytesIO(data), tmp_path / "t")
    assert stats.files == 70 and stats.directories == 1
    names = [call.args[2].name for call in general.call_args_list]
    assert names == ["dir/", "dir/file-0", "top-0"]
    assert (tmp_path / "t" / "dir" / "file-49").read_bytes() == b"Y" * 4900  # member 50
