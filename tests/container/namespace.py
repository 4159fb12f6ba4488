"""A container without a container runtime: a new PID and mount namespace, a read-only
root filesystem, a non-root user.

``Sandbox.command(argv)`` runs ``argv`` as PID 1 of a new PID namespace
(``unshare --pid --fork --mount-proc``), with ``/`` remounted read-only in the new mount
namespace (as ``readOnlyRootFilesystem`` does) except the writable paths, the read-only
paths bind-mounted read-only, and the process running as ``nobody`` (``setpriv``). The
mounts are private to the namespace: the machine's own mounts are not touched.

Directories ``nobody`` cannot traverse on the way to the interpreter (pyenv under a
``0700`` ``/root``, say) are replaced inside the namespace by a tmpfs holding bind
mounts of just the entries on the way, so the test runs whatever Python runs it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shlex
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import IN_CI, require_binary

ROOT = Path(__file__).resolve().parents[2]
NOBODY = pwd.getpwnam("nobody")


def load_module(path: Path) -> ModuleType:
    """The module in ``path``, imported without running it as a script."""
    spec = importlib.util.spec_from_file_location(f"container_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_namespaces() -> None:
    """unshare and setpriv as root: skip locally without them, fail in CI."""
    require_binary("unshare")
    require_binary("setpriv")
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the container tests need root (unshare --pid) in CI")
        pytest.skip("the container tests need root (unshare --pid)")


def _traversable(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _blocked_dirs(paths: list[Path], uid: int, gid: int) -> dict[Path, set[str]]:
    """Directories on the way to ``paths`` that ``uid`` cannot traverse, each with the
    names of its entries on the way."""
    blocked: dict[Path, set[str]] = {}
    for path in paths:
        parts = path.resolve().parts
        for depth in range(1, len(parts)):
            directory = Path(*parts[:depth])
            if not _traversable(directory, uid, gid):
                blocked.setdefault(directory, set()).add(parts[depth])
    return blocked


@dataclass
class Sandbox:
    """The mounts and the user of one namespaced run; ``workdir`` holds scratch mounts."""

    workdir: Path
    writable: list[Path] = field(default_factory=list)
    read_only: list[Path] = field(default_factory=list)
    uid: int = NOBODY.pw_uid
    gid: int = NOBODY.pw_gid

    def _script(self) -> str:
        lines = ["set -e"]
        needed = [Path(sys.executable), Path(sys.base_prefix), Path(sys.prefix), ROOT]
        blocked = _blocked_dirs(needed, self.uid, self.gid)
        for n, (directory, names) in enumerate(sorted(blocked.items())):  # parents first
            hold = self.workdir / f".hold-{n}"
            hold.mkdir(exist_ok=True)
            d, h = shlex.quote(str(directory)), shlex.quote(str(hold))
            lines += [f"mount --bind {d} {h}", f"mount -t tmpfs -o mode=755 tmpfs {d}"]
            for name in sorted(names):
                entry = shlex.quote(name)
                lines += [f"mkdir {d}/{entry}", f"mount --bind {h}/{entry} {d}/{entry}"]
        lines += [
            f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in self.writable
        ]
        lines.append("mount -o remount,bind,ro /")
        for path in self.read_only:
            p = shlex.quote(str(path))
            lines += [f"mount --bind {p} {p}", f"mount -o remount,bind,ro {p}"]
        lines.append(
            f"exec setpriv --reuid={self.uid} --regid={self.gid} --clear-groups "
            '--no-new-privs -- "$@"'
        )
        return "\n".join(lines)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as PID 1 of a new PID namespace, in this sandbox."""
        return [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
            self._script(),
            "sh",
            *argv,
        ]


@dataclass(frozen=True)
class Proc:
    """One process of a PID namespace, seen from the host's /proc."""

    host_pid: int
    ns_pid: int
    state: str
    uid: int
    name: str


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def children(pid: int) -> list[int]:
    """Host pids of the children of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def namespace_processes(init_host_pid: int) -> list[Proc]:
    """Every process in the PID namespace whose PID 1 is ``init_host_pid`` (host pid)."""
    try:
        ns = os.readlink(f"/proc/{init_host_pid}/ns/pid")
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            status = _status(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile
        found.append(
            Proc(
                host_pid=int(entry),
                ns_pid=int(status["NSpid"].split()[-1]),
                state=status["State"].split()[0],
                uid=int(status["Uid"].split()[1]),  # effective
                name=status["Name"],
            )
        )
    return found


def wait_for_init(unshare: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """Host pid of the namespace's PID 1 (the child ``unshare --fork`` made)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(unshare.pid)
        if found:
            return found[0]
        if unshare.poll() is not None:
            raise AssertionError(f"unshare exited with {unshare.returncode}")
        time.sleep(0.01)
    raise AssertionError("the namespace's PID 1 did not appear")
