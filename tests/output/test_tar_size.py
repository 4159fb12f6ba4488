"""``tar_size`` foretells what ``create_tar`` writes; ``TreeCount`` runs it in a child.

Random trees (those of the round-trip tests: non-ASCII and long names, deep paths,
hard links, symlinks, mtimes past ustar's range) plus the entries ``create_tar``
skips (FIFOs, sockets): the count of entries is what its progress counts, and the
bytes are the length of its stream, exactly.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from baqup_agent._archive import create_tar
from baqup_agent._tar_size import TreeCount, tar_size
from tests.output.test_archive_roundtrip import TREES, Tree, build, trees


def finished(count: TreeCount) -> tuple[int, int] | None:
    """What ``poll`` gives once the child has ended."""
    proc = count._proc
    assert proc is not None
    proc.wait(60)
    return count.poll()


def _archived(root: Path) -> tuple[int, int]:
    """(entries create_tar saw, bytes it wrote)."""
    out, seen = io.BytesIO(), []
    create_tar(out, root, checkpoint=lambda: seen.append(1))
    return len(seen), len(out.getvalue())


@TREES
@given(tree=trees(), specials=st.booleans())
def test_tar_size_is_what_create_tar_writes(tree: Tree, specials: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "tree")
        build(root, tree)
        if specials:  # skipped by create_tar, but counted as entries by its progress
            os.mkfifo(root / "fifo")
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(root / "sock"))
                assert tar_size(root) == _archived(root)
        else:
            assert tar_size(root) == _archived(root)


def test_tree_count_gives_the_totals_from_a_child(tmp_path: Path) -> None:
    for i in range(300):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
    count = TreeCount(tmp_path)
    assert finished(count) == tar_size(tmp_path)
    assert count.poll() is None  # given once
    count.close()  # nothing left to stop


def test_tree_count_of_a_missing_tree_gives_none(tmp_path: Path) -> None:
    count = TreeCount(tmp_path / "missing")
    assert finished(count) is None
    count.close()


def test_tree_count_close_stops_and_reaps_the_child(tmp_path: Path) -> None:
    count = TreeCount(tmp_path)
    proc = count._proc
    assert proc is not None
    count.close()
    assert proc.returncode is not None  # reaped: no zombie left
    assert count.poll() is None


def test_tree_count_child_gets_no_environment(tmp_path: Path) -> None:
    """-I -S and an empty environment: nothing of the agent's environ (a secret kept
    there for its own children, say) reaches it; it runs this module's file alone."""
    with mock.patch("subprocess.Popen", wraps=subprocess.Popen) as popen:
        count = TreeCount(tmp_path)
    args, kwargs = popen.call_args
    assert args[0][:3] == [sys.executable, "-I", "-S"] and kwargs["env"] == {}
    assert finished(count) == tar_size(tmp_path)
