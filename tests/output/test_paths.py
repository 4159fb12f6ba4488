"""validate_path, safe_join, relative_parts and the schema-derived name checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from baqup_agent import validate_path
from baqup_agent._errors import DataError
from baqup_agent._paths import is_artifact_filename, is_job_id, relative_parts, safe_join


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A boundary with a subdirectory, inside and outside symlinks, and a loop."""
    root = tmp_path / "box"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file").write_text("x")
    (tmp_path / "outside").mkdir()
    (root / "in_link").symlink_to("sub")
    (root / "out_link").symlink_to(tmp_path / "outside")
    (root / "rel_out").symlink_to("../outside")
    (root / "loop").symlink_to("loop")
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("sub", True),
        ("sub/file", True),
        ("sub/missing/deeper", True),  # need not exist
        (".", True),  # the boundary itself
        ("in_link/file", True),  # a symlink that stays inside
        ("loop", True),  # a loop inside is not an escape
        ("", False),
        ("..", False),
        ("../box/sub", False),  # '..' is refused even when it lands back inside
        ("sub/../sub", False),
        ("sub/../../x", False),
        ("/etc/passwd", False),
        ("sub\x00/x", False),
        ("out_link", False),
        ("out_link/anything", False),
        ("rel_out/x", False),
    ],
)
def test_validate_path_relative(box: Path, path: str, expected: bool) -> None:
    assert validate_path(path, box) is expected


def test_validate_path_absolute_and_pathlike(box: Path, tmp_path: Path) -> None:
    assert validate_path(box / "sub" / "file", box)
    assert validate_path(str(box), box)
    assert not validate_path(tmp_path / "outside", box)
    assert not validate_path(tmp_path, box)
    assert not validate_path(str(box) + "-sibling", box)  # a prefix is not a parent
    assert not validate_path(box / "sub", str(box) + "\x00")


def test_validate_path_resolves_the_boundary(box: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(box)
    assert validate_path(box / "sub", alias)
    assert validate_path("sub/file", alias)


def test_validate_path_never_raises_on_odd_input(box: Path) -> None:
    assert not validate_path(b"sub", box)  # type: ignore[arg-type]
    assert not validate_path(None, box)  # type: ignore[arg-type]
    assert validate_path("x" * 10000, box)  # too long to exist, but inside: no exception


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a/b", ("a", "b")),
        ("./a//b/", ("a", "b")),
        ("a/./b", ("a", "b")),
        (".", ()),
        ("", ()),
        ("..x/x..", ("..x", "x..")),
    ],
)
def test_relative_parts_normalises(name: str, parts: tuple[str, ...]) -> None:
    assert relative_parts(name) == parts


@pytest.mark.parametrize("name", ["../a", "a/../b", "/a", "a\x00b", "x" * 256, "a/" * 2100, "a/.."])
def test_relative_parts_refuses(name: str) -> None:
    with pytest.raises(DataError):
        relative_parts(name)


def test_safe_join(box: Path) -> None:
    assert safe_join(box, "sub/file") == box / "sub" / "file"
    assert safe_join(box, "./sub//file") == box / "sub" / "file"
    for bad in ["", ".", "../x", "/etc", "out_link/x", "rel_out", "a\x00"]:
        with pytest.raises(DataError):
            safe_join(box, bad)


def test_artifact_filename_and_job_id_rules_come_from_the_schema() -> None:
    assert is_artifact_filename("data.tar.zst")
    assert is_artifact_filename("dir/_x-1.gz")
    for bad in ["", ".x", "a/.x", "a//b", "../a", "a/", "é", "a b", "x" * 1025, "x" * 256]:
        assert not is_artifact_filename(bad), bad
    assert is_job_id("job-2026.001")
    for bad in ["", ".job", "a/b", "j" * 129, "..", "job id"]:
        assert not is_job_id(bad), bad
