"""Path safety (contract section 7): keep every path an agent handles inside its boundary.

``validate_path`` answers "is this path inside that directory, once symlinks are
resolved?"; ``safe_join`` builds such a path or raises ``DataError``; ``relative_parts``
is the one name check shared with archive extraction.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from functools import cache
from pathlib import Path

from baqup_agent._errors import DataError
from baqup_agent.contract.tables import (
    ARTIFACT_FILENAME_MAX_LENGTH,
    ARTIFACT_FILENAME_PATTERN,
    JOB_ID_PATTERN,
)

# Linux limits: one name component and a whole path (without the terminating NUL).
NAME_MAX = 255
PATH_MAX = 4095


def validate_path(path: str | os.PathLike[str], boundary: str | os.PathLike[str]) -> bool:
    """Whether ``path`` stays inside ``boundary`` (the boundary itself counts as inside).

    A relative ``path`` is taken relative to ``boundary``. Returns False for an empty
    path, a NUL byte, any ``..`` segment (even one that would land back inside), and
    any path that, after resolving symlinks (of both sides, as far as they exist),
    lies outside the boundary. Never raises for a bad path.
    """
    try:
        raw, root = os.fspath(path), os.fspath(boundary)
        if not isinstance(raw, str) or not isinstance(root, str):
            return False
        if not raw or not root or "\x00" in raw or "\x00" in root:
            return False
        if ".." in raw.split("/"):
            return False
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, raw))
        return os.path.commonpath([real_root, real]) == real_root
    except (OSError, ValueError, TypeError):
        return False


def relative_parts(name: str) -> tuple[str, ...]:
    """The components of a relative ``name``, with empty and ``.`` segments dropped.

    Raises ``DataError`` for a NUL byte, an absolute name, a ``..`` segment, a component
    longer than ``NAME_MAX`` bytes or a name longer than ``PATH_MAX`` bytes. An empty
    result means the name denotes the base directory itself ("", ".", "./").
    """
    if "\x00" in name:
        raise DataError(f"unsafe name {name!r}: NUL byte")
    if name.startswith("/"):
        raise DataError(f"unsafe name {name!r}: absolute")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"unsafe name {name!r}: '..' segment")
    encoded = [os.fsencode(p) for p in parts]
    if any(len(p) > NAME_MAX for p in encoded) or sum(len(p) + 1 for p in encoded) > PATH_MAX:
        raise DataError(f"unsafe name {name[:64]!r}...: too long")
    return parts


def safe_join(boundary: str | os.PathLike[str], relative: str) -> Path:
    """``boundary / relative``, checked: raises ``DataError`` unless it names an entry inside.

    ``relative`` must pass ``relative_parts`` and must not denote the boundary itself;
    the joined path must also pass ``validate_path`` (no symlink on the way leads out).
    """
    parts = relative_parts(relative)
    if not parts:
        raise DataError(f"unsafe name {relative!r}: names no entry")
    joined = Path(boundary, *parts)
    # The relative parts, not ``joined``: validate_path takes a relative path relative
    # to the boundary, and a relative boundary would otherwise be counted twice.
    if not validate_path(Path(*parts), boundary):
        raise DataError(f"unsafe name {relative!r}: resolves outside {os.fspath(boundary)!r}")
    return joined


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symlink",
}


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only fd of the regular file at ``path``; never blocks, never follows a
    symlink in the last component.

    Raises ``DataError`` naming the kind when ``path`` is a symlink, directory, FIFO,
    device or socket: the kind is checked before the open (a device is never opened)
    and again on the fd, and ``O_NONBLOCK`` keeps a FIFO swapped in between from
    blocking. ``FileNotFoundError`` and other ``OSError`` pass through.
    """
    kind = _KINDS.get(stat.S_IFMT(os.lstat(path).st_mode))
    if kind is None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            kind = _KINDS[stat.S_IFLNK]
        else:
            kind = _KINDS.get(stat.S_IFMT(os.fstat(fd).st_mode))
            if kind is None:
                os.set_blocking(fd, True)
                return fd
            os.close(fd)
    raise DataError(f"{os.fspath(path)}: {kind}, not a regular file")


@cache
def _field_rules(model: str, field: str) -> tuple[re.Pattern[str], int | None]:
    # The rules live in the schemas; take them from the generated model.
    import baqup_agent.contract

    metadata = getattr(baqup_agent.contract, model).model_fields[field].metadata
    pattern = next(m.pattern for m in metadata if getattr(m, "pattern", None))
    max_length = next((m.max_length for m in metadata if getattr(m, "max_length", None)), None)
    return re.compile(pattern), max_length


_ARTIFACT_FILENAME = re.compile(ARTIFACT_FILENAME_PATTERN)
_JOB_ID = re.compile(JOB_ID_PATTERN)


def is_artifact_filename(filename: str) -> bool:
    """Whether ``filename`` is a valid ``Artifact.filename`` (schema/artifact.json).

    Relative, '/'-separated, each segment starting with a letter, digit or underscore
    (so none is empty, '.' or '..'), and no segment longer than ``NAME_MAX``.
    """
    return (
        len(filename) <= ARTIFACT_FILENAME_MAX_LENGTH
        and _ARTIFACT_FILENAME.fullmatch(filename) is not None
        and all(len(p) <= NAME_MAX for p in filename.split("/"))
    )


def is_job_id(job_id: str) -> bool:
    """Whether ``job_id`` is a valid job id (schema/common.json), hence a safe directory name."""
    return _JOB_ID.fullmatch(job_id) is not None
