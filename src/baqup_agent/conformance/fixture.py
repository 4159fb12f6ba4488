"""The test data a backup reads (a small generated tree by default) and tree comparison."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

# name -> size; a text file, incompressible bytes, an empty file, nested directories,
# names with spaces and non-ASCII letters: the cases a backup format tends to get wrong
_DEFAULT_FILES: dict[str, int] = {
    "README.txt": 0,  # text, written below
    "data/random-64k.bin": 64 * 1024,
    "data/nested/deep/empty.dat": 0,
    "data/nested/records.csv": 0,  # text, written below
    "name with spaces.txt": 0,
    "unicode-\u00e9t\u00e9.txt": 0,
    "blobs/a.bin": 4096,  # not-a-schema-value: a file size
    "blobs/b.bin": 12345,
}


def make_default_fixture(root: Path, *, seed: int = 20261127) -> Path:
    """Write the default fixture tree under ``root`` (created) and return ``root``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, size in _DEFAULT_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".bin"):
            path.write_bytes(rng.randbytes(size))
        elif name.endswith(".csv"):
            rows = [f"{i},{rng.randint(0, 10**9)},row {i}" for i in range(500)]
            path.write_text("id,value,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
        elif name.endswith(".dat"):
            path.write_bytes(b"")
        else:
            path.write_text(f"baqup conformance fixture: {name}\n" * 20, encoding="utf-8")
    (root / "empty-dir").mkdir(exist_ok=True)
    return root


PADDING = "zz-conformance-padding"
"""Where the copies of an enlarged fixture live, beside the fixture's own entries."""


def copies_in(fixture: Path) -> int:
    """How many times a fixture made by ``scaled_fixture`` holds the original's data."""
    padding = fixture / PADDING
    return 1 + (sum(1 for _ in padding.iterdir()) if padding.is_dir() else 0)


def scaled_fixture(fixture: Path, root: Path, copies: int, max_bytes: int) -> Path:
    """A copy of ``fixture`` under ``root`` holding ``copies`` times its data: the original
    entries plus ``copies - 1`` copies of them in PADDING/NNNN/, fewer when that would pass
    ``max_bytes``. A job reading it lasts about ``copies`` times longer, with as many more
    checkpoints (the SIGTERM and cancel scenarios interrupt it)."""
    size = sum(p.stat().st_size for p in fixture.rglob("*") if p.is_file() and not p.is_symlink())
    copies = max(1, min(copies, max_bytes // max(size, 1)))
    shutil.copytree(fixture, root, symlinks=True)
    for n in range(1, copies):
        shutil.copytree(fixture, root / PADDING / f"{n:04}", symlinks=True)
    return root


def tree(root: Path) -> dict[str, str]:
    """Relative path -> kind ("dir", "file" or "link -> TARGET") of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames + filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "file"
    return out


def compare_trees(expected: Path, actual: Path, *, limit: int = 5) -> list[str]:
    """Differences between two trees (paths, kinds, file bytes); empty when identical."""
    if not actual.is_dir():
        return [f"{actual} does not exist or is not a directory"]
    want, got = tree(expected), tree(actual)
    diffs = [f"missing: {p} ({want[p]})" for p in sorted(want.keys() - got.keys())]
    diffs += [f"unexpected: {p} ({got[p]})" for p in sorted(got.keys() - want.keys())]
    for rel in sorted(want.keys() & got.keys()):
        if want[rel] != got[rel]:
            diffs.append(f"{rel}: is {got[rel]}, expected {want[rel]}")
        elif want[rel] == "file" and not _same_bytes(expected / rel, actual / rel):
            size_a, size_b = (expected / rel).stat().st_size, (actual / rel).stat().st_size
            diffs.append(f"{rel}: content differs ({size_b} bytes, expected {size_a})")
    if len(diffs) > limit:
        diffs = [*diffs[:limit], f"... {len(diffs) - limit} more differences"]
    return diffs


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


MAX_FIXTURE_BYTES = 256 << 20  # an enlarged fixture stays below this
SCALE_STEP = 4  # each enlargement after a job that ended too soon: this many times the copies
