"""Safe extraction: a corpus of malicious archives, all refused, nothing written outside.

Each case is a list of tar members built with tarfile.TarInfo (device and FIFO
entries included: tarfile writes them without any special file existing). The
target lives in a sandbox next to a sentinel directory; after each case the whole
sandbox outside the target must be byte-for-byte what it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from baqup_agent._archive import TarStats, check_symlink, create_tar, extract_tar
from baqup_agent._errors import DataError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

SENTINEL = "@SENTINEL@"  # replaced by the sentinel directory's absolute path


@dataclass
class M:
    """One tar member: name, kind, data or link target, optional PAX overrides."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    pax: dict[str, str] = field(default_factory=dict)


def build(members: list[M], fmt: int = tarfile.PAX_FORMAT, sentinel: Path | None = None) -> bytes:
    """The bytes of a tar archive holding ``members`` in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name.replace(SENTINEL, str(sentinel)))
            info.type = m.type
            info.mode = m.mode
            info.linkname = m.link.replace(SENTINEL, str(sentinel))
            info.pax_headers = {k: v.replace(SENTINEL, str(sentinel)) for k, v in m.pax.items()}
            if m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            info.size = len(m.data)
            tar.addfile(info, io.BytesIO(m.data) if m.data else None)
    return buffer.getvalue()


SYM, LNK, DIR = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
OK_FILE = M("ok.txt", data=b"fine")  # a good entry first: a refusal must roll it back

# name -> members. Every one of them must raise DataError.
MALICIOUS: dict[str, list[M]] = {
    # traversal in names
    "dotdot": [OK_FILE, M("../evil", data=b"x")],
    "dotdot-deep": [M("../../evil", data=b"x")],
    "dotdot-after-dir": [M("a/../../evil", data=b"x")],
    "dotdot-nested": [M("a/b/../../../evil", data=b"x")],
    "dot-then-dotdot": [M("./../evil", data=b"x")],
    "dotdot-dir": [M("../evil-dir", type=DIR)],
    "dotdot-only-file": [M("..", data=b"x")],
    "dotdot-symlink-name": [M("../evil-link", type=SYM, link="x")],
    "dotdot-inside-then-out": [M("a/", type=DIR), M("a/../../evil", data=b"x")],
    # absolute names
    "absolute": [OK_FILE, M("/tmp/baqup-evil-absolute", data=b"x")],
    "absolute-into-sentinel": [M(SENTINEL + "/evil", data=b"x")],
    "absolute-double-slash": [M("//" + SENTINEL.lstrip("/") + "/evil", data=b"x")],
    "absolute-dir": [M(SENTINEL + "/evil-dir", type=DIR)],
    # NUL bytes (PAX keeps them; a ustar name would be cut at the NUL)
    "nul-in-name": [M("safe", pax={"path": "evil\x00../x"}, data=b"x")],
    "nul-in-dir": [M("safe", type=DIR, pax={"path": "d\x00/../../evil"})],
    "nul-in-linkname": [M("l", type=SYM, pax={"linkpath": "x\x00/../../evil"})],
    # encoded tricks that do decode to traversal
    "pax-path-override": [OK_FILE, M("innocent", pax={"path": "../evil"}, data=b"x")],
    "pax-linkpath-override": [M("l", type=SYM, link="fine", pax={"linkpath": "../../evil"})],
    "gnu-longname-traversal": [M("d" * 150 + "/../../../evil", data=b"x")],
    "long-name": [M("a/" * 2100 + "f", data=b"x")],
    "long-component": [M("x" * 256, data=b"x")],
    # '.'-only names for things that are not directories
    "dot-file": [M(".", data=b"x")],
    "dot-slash-dot-file": [M("./.", data=b"x")],
    "dot-symlink": [M(".", type=SYM, link="..")],
    "dot-hardlink": [OK_FILE, M(".", type=LNK, link="ok.txt")],
    # symlinks pointing out
    "symlink-absolute": [M("l", type=SYM, link="/etc/passwd")],
    "symlink-absolute-sentinel": [M("l", type=SYM, link=SENTINEL)],
    "symlink-dotdot": [M("l", type=SYM, link="..")],
    "symlink-dotdot-file": [M("l", type=SYM, link="../sentinel/secret")],
    "symlink-deep-dotdot": [M("a/b/l", type=SYM, link="../../../sentinel")],
    "symlink-dotdot-after-name": [M("a/", type=DIR), M("a/l", type=SYM, link="b/../../..")],
    "symlink-chain": [M("a", type=SYM, link="."), M("b", type=SYM, link="a/..")],
    "symlink-empty": [M("l", type=SYM, link="")],
    # symlink, then a write through it
    "symlink-then-file": [M("sub/", type=DIR), M("l", type=SYM, link="sub"), M("l/f", data=b"x")],
    "symlink-dot-then-write": [M("l", type=SYM, link="."), M("l/evil", data=b"x")],
    "symlink-then-dir": [M("l", type=SYM, link="."), M("l/d", type=DIR)],
    "symlink-then-hardlink-through": [
        OK_FILE,
        M("l", type=SYM, link="."),
        M("h", type=LNK, link="l/ok.txt"),
    ],
    "symlink-replaces-dir": [M("d/", type=DIR), M("d", type=SYM, link=".")],
    # hard links pointing out or at the wrong thing
    "hardlink-absolute": [M("h", type=LNK, link=SENTINEL + "/secret")],
    "hardlink-dotdot": [M("h", type=LNK, link="../sentinel/secret")],
    "hardlink-missing": [M("h", type=LNK, link="never-extracted")],
    "hardlink-to-symlink": [
        M("d/", type=DIR),
        M("d/s", type=SYM, link="../ok.txt"),
        M("h", type=LNK, link="d/s"),
    ],
    "hardlink-to-itself": [M("h", type=LNK, link="h")],
    "hardlink-to-dir": [M("d/", type=DIR), M("h", type=LNK, link="d")],
    # special files
    "char-device": [OK_FILE, M("null", type=tarfile.CHRTYPE)],
    "block-device": [M("disk", type=tarfile.BLKTYPE)],
    "fifo": [M("pipe", type=tarfile.FIFOTYPE)],
    "unknown-type": [M("weird", type=b"Z", data=b"xyz")],
    # a file that would replace a directory
    "file-replaces-dir": [M("d/", type=DIR), M("d/f", data=b"x"), M("d", data=b"x")],
    "file-under-file": [OK_FILE, M("ok.txt/evil", data=b"x")],
}


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, str]]:
    """Every entry below ``root`` except ``skip``: mode and content (or link target)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip:
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            path = here / name
            if path == skip:
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            result[str(path.relative_to(root))] = (st.st_mode, content)
    return result


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """tmp/sandbox/{target (missing), sentinel/secret}: the target's neighbours."""
    box = tmp_path / "sandbox"
    (box / "sentinel").mkdir(parents=True)
    (box / "sentinel" / "secret").write_text("do not touch")
    return box


def test_the_corpus_is_big_enough() -> None:
    assert len(MALICIOUS) >= 40


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused(sandbox: Path, tmp_path: Path, case: str) -> None:
    target = sandbox / "target"
    data = build(MALICIOUS[case], sentinel=sandbox / "sentinel")
    before = snapshot(tmp_path, target)
    with pytest.raises(DataError) as info:
        extract_tar(io.BytesIO(data), target)
    assert info.value.exit_code == 65
    assert snapshot(tmp_path, target) == before  # nothing written outside the target
    assert not Path("/tmp/baqup-evil-absolute").exists()
    assert os.listdir(target) == []  # and the partial restore was removed


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_traversal_in_other_formats(sandbox: Path, tmp_path: Path, fmt: int) -> None:
    target = sandbox / "target"
    before = snapshot(tmp_path, target)
    for members in [[M("../evil", data=b"x")], [M("l", type=SYM, link="../sentinel")]]:
        with pytest.raises(DataError):
            extract_tar(io.BytesIO(build(members, fmt)), target)
    assert snapshot(tmp_path, target) == before


def test_existing_symlink_in_target_is_never_followed(sandbox: Path, tmp_path: Path) -> None:
    target = sandbox / "target"
    target.mkdir()
    (target / "ext").symlink_to(sandbox / "sentinel")
    (target / "keep").write_text("old")
    before = snapshot(tmp_path, target)
    for members in [
        [M("ext/evil", data=b"x")],
        [M("ext/secret", data=b"overwritten")],
        [M("h", type=LNK, link="ext/secret")],
    ]:
        with pytest.raises(DataError, match="symlink"):
            extract_tar(io.BytesIO(build(members)), target)
    assert snapshot(tmp_path, target) == before
    assert (target / "keep").read_text() == "old"  # not empty before: not rolled back


def test_existing_hardlink_in_target_is_replaced_not_written_through(
    sandbox: Path, tmp_path: Path
) -> None:
    target = sandbox / "target"
    target.mkdir()
    os.link(sandbox / "sentinel" / "secret", target / "victim")
    (target / "lnk").symlink_to(sandbox / "sentinel" / "secret")
    extract_tar(io.BytesIO(build([M("victim", data=b"new"), M("lnk", data=b"new")])), target)
    assert (sandbox / "sentinel" / "secret").read_text() == "do not touch"
    assert (target / "victim").read_bytes() == b"new"
    assert not (target / "lnk").is_symlink()


def test_corrupt_archives(sandbox: Path) -> None:
    target = sandbox / "target"
    good = build([OK_FILE, M("big", data=os.urandom(100_000))])
    cases = [
        b"",
        b"garbage" * 200,
        good[:2000],  # cut inside a file
        good[:1024],  # cut between members: no end-of-archive blocks
        good[:1024] + b"\xff" * 512 + good[1536:],  # a corrupt header after a good member
    ]
    for data in cases:
        with pytest.raises(DataError):
            extract_tar(io.BytesIO(data), target)
        assert os.listdir(target) == []


# Names that look like tricks but are plain names on Linux: extracted inside the target.
ODD_BUT_HARMLESS = [
    "..%2f..%2fevil",
    "%2e%2e/evil",
    "..\\..\\evil",
    "\uff0e\uff0e/evil",  # fullwidth dots
    "\u2025/evil",  # two-dot leader
    "a/.../evil",
    "..evil",
    "evil..",
    "\udcc0\udcae\udcc0\udcae/evil",  # overlong UTF-8 for '.', as raw bytes
    "-rf",
    " ",
    "\n",
]


def test_odd_names_stay_inside(sandbox: Path, tmp_path: Path) -> None:
    target = sandbox / "target"
    before = snapshot(tmp_path, target)
    members = [M(name, data=name.encode("utf-8", "surrogateescape")) for name in ODD_BUT_HARMLESS]
    stats = extract_tar(io.BytesIO(build(members)), target)
    assert stats.files == len(ODD_BUT_HARMLESS)
    assert snapshot(tmp_path, target) == before
    for name in ODD_BUT_HARMLESS:
        assert (target / name).read_bytes() == name.encode("utf-8", "surrogateescape")


def test_safe_links_and_modes(sandbox: Path) -> None:
    target = sandbox / "target"
    members = [
        M("./", type=DIR, mode=0o777),  # the root entry: left alone
        M("bin/", type=DIR, mode=0o2777),
        M("bin/tool", data=b"#!/bin/sh\n", mode=0o4777),  # setuid, world-writable
        M("bin/ro", data=b"ro", mode=0o000),
        M("lib/", type=DIR),
        M("lib/libx.so.1", data=b"lib"),
        M("lib/libx.so", type=SYM, link="libx.so.1"),
        M("lib/up", type=SYM, link="../bin/tool"),
        M("lib/here", type=SYM, link="."),
        M("hard", type=LNK, link="lib/libx.so.1"),
        M("dup", data=b"first"),
        M("dup", data=b"second"),  # a later entry replaces an earlier one
        M("implicit/parent/file", data=b"x"),
    ]
    target.mkdir(mode=0o750)
    stats = extract_tar(io.BytesIO(build(members)), target)
    assert stats == TarStats(files=6, directories=2, symlinks=3, hardlinks=1, bytes=27)
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert stat.S_IMODE((target / "bin").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "bin" / "ro").stat().st_mode) == 0o600
    assert (target / "lib" / "libx.so").read_bytes() == b"lib"
    assert (target / "lib" / "up").read_bytes() == b"#!/bin/sh\n"
    assert os.path.samefile(target / "hard", target / "lib" / "libx.so.1")
    assert (target / "dup").read_bytes() == b"second"
    assert (target / "implicit" / "parent" / "file").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("parts", "link", "ok"),
    [
        (("l",), "x", True),
        (("l",), ".", True),
        (("a", "l"), "../x", True),
        (("a", "b", "l"), "../../x/y", True),
        (("a", "b", "l"), "./../x", True),
        (("l",), "../x", False),
        (("a", "l"), "../../x", False),
        (("a", "l"), "x/../y", False),
        (("l",), "/x", False),
        (("l",), "", False),
    ],
)
def test_check_symlink(parts: tuple[str, ...], link: str, ok: bool) -> None:
    if ok:
        check_symlink(parts, link)
    else:
        with pytest.raises(DataError):
            check_symlink(parts, link)


def test_create_tar_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "f.txt").write_text("text")
    (source / "big").write_bytes(os.urandom(3 << 20))
    (source / "a" / "b" / "rel").symlink_to("../f.txt")
    os.link(source / "a" / "f.txt", source / "hard")
    (source / "abs").symlink_to("/etc/passwd")  # a restore would refuse it: skipped
    (source / "out").symlink_to("../../x")  # likewise
    os.mkfifo(source / "fifo")  # never archived
    buffer = io.BytesIO()
    stats = create_tar(buffer, source)
    assert stats == TarStats(
        files=2, directories=2, symlinks=1, hardlinks=1, bytes=(3 << 20) + 4, skipped=3
    )
    target = tmp_path / "target"
    assert extract_tar(io.BytesIO(buffer.getvalue()), target) == TarStats(
        files=2, directories=2, symlinks=1, hardlinks=1, bytes=(3 << 20) + 4
    )
    for name in ["a/f.txt", "big", "hard", "a/b/rel"]:
        assert (target / name).read_bytes() == (source / name).read_bytes()
    assert os.readlink(target / "a" / "b" / "rel") == "../f.txt"
    assert sorted(os.listdir(target)) == ["a", "big", "hard"]


def test_create_tar_pads_a_file_that_shrinks(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "f").write_bytes(b"x" * 1000)

    def shrink() -> None:
        """Called before the entry is archived: after its stat, before its data is read."""
        (source / "f").write_bytes(b"x" * 10)

    buffer = io.BytesIO()
    create_tar(buffer, source, checkpoint=shrink)
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        member = tar.getmember("f")
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert member.size == 1000 and extracted.read() == b"x" * 10 + bytes(990)


class Discard(io.RawIOBase):
    """A destination that keeps nothing: what stays in memory is create_tar's own."""

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer) -> int:
        return len(memoryview(b))


def test_create_tar_memory_is_constant_in_the_tree_size(tmp_path: Path) -> None:
    import tracemalloc

    peaks = []
    for count in (2000, 8000):
        source = tmp_path / f"source-{count}"
        for i in range(count):
            folder = source / f"d{i % 40}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i:05d}").write_bytes(b"x" * 1000)
        tracemalloc.start()
        try:
            assert create_tar(Discard(), source).files == count
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.25 + (64 << 10), peaks


def test_extraction_checkpoint_is_called_per_entry(sandbox: Path) -> None:
    calls = []
    extract_tar(
        io.BytesIO(build([M("a", data=b"1"), M("b", data=b"2")])),
        sandbox / "target",
        checkpoint=lambda: calls.append(1),
    )
    assert len(calls) == 3  # before each entry and before the end


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_create_tar_never_follows_an_entry_swapped_for_a_symlink(tmp_path: Path, kind: str) -> None:
    """An entry replaced by a symlink to outside data between its stat and its read is
    neither read through nor entered: skipped (a file) or left empty (a directory)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"outside data")
    source = tmp_path / "source"
    source.mkdir()
    victim = source / "v"
    if kind == "file":
        victim.write_bytes(b"inside")
    else:
        victim.mkdir()

    def swap() -> None:
        if victim.is_symlink():
            return
        if kind == "file":
            victim.unlink()
            victim.symlink_to(outside / "secret")
        else:
            victim.rmdir()
            victim.symlink_to(outside)

    buffer = io.BytesIO()
    stats = create_tar(buffer, source, checkpoint=swap)
    assert b"outside data" not in buffer.getvalue()
    assert stats.files == 0 and stats.skipped == (kind == "file")
