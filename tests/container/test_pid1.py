"""The example agents as containers run them: PID 1 of a new PID namespace, as
``nobody``, with a read-only root filesystem, the source and the restore source
mounted read-only, and the Redis password and URL only in files (``*_FILE``).

Backup and restore complete; a SIGTERM sent from outside the namespace (as the
container runtime sends it) cancels the job within the grace period, also when the job
is inside one long call; orphaned grandchildren are reaped while the job runs (no
zombie in the namespace, checked in /proc); the password appears in no output.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from baqup_agent.keys import MESSAGE_FIELD, job_keys
from tests.agent.helpers import EXAMPLES as EXAMPLES_DIR
from tests.agent.helpers import FS_AGENT, SQLITE_AGENT, assert_complete_output
from tests.conftest import RedisServer
from tests.container.namespace import (
    NOBODY,
    Sandbox,
    children,
    load_module,
    namespace_processes,
    require_namespaces,
    wait_for_init,
)

GATED = Path(__file__).resolve().parent / "gated_agent.py"
WAIT = 60.0  # seconds: only a bound for a run that hangs, never a timing assertion

demo = load_module(EXAMPLES_DIR / "demo.py")  # make_sample, compare_trees


@dataclass
class Box:
    """The directories, secrets and Redis of one test's containers."""

    root: Path
    redis: RedisServer
    password: str

    def path(self, name: str, *, owner: int = NOBODY.pw_uid) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        os.chown(path, owner, NOBODY.pw_gid)
        return path

    def env(self, job_id: str, role: str, **extra: object) -> dict[str, str]:
        secrets_dir = self.root / "secrets"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "BAQUP_JOB_ID": job_id,
            "BAQUP_AGENT_ID": "pid1-agent",
            "BAQUP_ROLE": role,
            "BAQUP_STAGING_DIR": str(self.root / "staging"),
            "BAQUP_HEARTBEAT_INTERVAL": "0.5",
            "BAQUP_REDIS_URL_FILE": str(secrets_dir / "redis-url"),
            "BAQUP_REDIS_PASSWORD_FILE": str(secrets_dir / "redis-password"),
            **{k: str(v) for k, v in extra.items()},
        }

    def sandbox(self, read_only: list[Path]) -> Sandbox:
        writable = [self.root / d for d in ("staging", "gate", "restored")]
        return Sandbox(self.root, writable=writable, read_only=[self.root / "secrets", *read_only])

    def start(
        self, argv: list[str], env: dict[str, str], read_only: list[Path], log: str
    ) -> subprocess.Popen[bytes]:
        with (
            open(self.root / f"{log}.out", "wb") as out,
            open(self.root / f"{log}.err", "wb") as err,
        ):
            return subprocess.Popen(
                self.sandbox(read_only).command(argv), env=env, stdout=out, stderr=err
            )

    def output(self, log: str) -> str:
        return "".join((self.root / f"{log}.{s}").read_text() for s in ("out", "err"))

    def messages(self, job_id: str) -> list[dict[str, Any]]:
        client = redis.Redis(port=self.redis.port, password=self.password)
        try:
            entries = client.xrange(job_keys(job_id).events)
        finally:
            client.close()
        return [orjson.loads(fields[MESSAGE_FIELD.encode()]) for _, fields in entries]

    def result(self, job_id: str) -> dict[str, Any]:
        (result,) = [m for m in self.messages(job_id) if m["type"] == "result"]
        return result

    def assert_no_secret(self) -> None:
        """The password is in its secret file and nowhere else: no log, output, spool
        file, nor any message on the bus."""
        pw = self.password.encode()
        for path in self.root.rglob("*"):
            if path.is_file() and "secrets" not in path.relative_to(self.root).parts:
                assert pw not in path.read_bytes(), f"the password leaked into {path}"
        for job in ("b1", "r1", "g1", "t1", "s1"):
            assert all(self.password not in str(m) for m in self.messages(job))


@pytest.fixture
def box() -> Iterator[Box]:
    require_namespaces()
    root = Path(tempfile.mkdtemp(prefix="baqup-pid1-"))
    root.chmod(0o755)  # nobody reaches its own directories below
    password = f"pw-{secrets.token_hex(16)}"
    server = RedisServer(root / "redis", extra_args=["--requirepass", password])
    server.start()
    try:
        b = Box(root, server, password)
        for name in ("staging", "gate", "restored"):
            b.path(name)
        # Laid out as a Kubernetes secret volume: links through ..data to the files.
        secrets_dir = b.path("secrets")
        version = secrets_dir / "..2026_11_30_00_00_00.000000000"
        version.mkdir()
        (secrets_dir / "..data").symlink_to(version.name)
        for name, value in (("redis-url", server.url), ("redis-password", password + "\n")):
            (version / name).write_text(value)
            os.chown(version / name, 0, NOBODY.pw_gid)
            (version / name).chmod(0o440)  # defaultMode 0440 with fsGroup
            (secrets_dir / name).symlink_to(f"..data/{name}")
        yield b
    finally:
        server.stop(kill=True)
        shutil.rmtree(root)


def run(box: Box, argv: list[str], env: dict[str, str], read_only: list[Path], log: str) -> int:
    proc = box.start(argv, env, read_only, log)
    try:
        return proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_until(done: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- the examples' sources and how to compare a restore -----------------------------------


@dataclass
class Example:
    script: Path
    make_source: Callable[[Box], Path]  # owned by root, mounted read-only
    source_env: Callable[[Path], dict[str, str]]
    restore_env: Callable[[Box], dict[str, str]]
    assert_restored: Callable[[Box, Path], None]


def _fs_source(b: Box) -> Path:
    source = b.path("source", owner=0)
    demo.make_sample(source)
    return source


def _fs_restored(b: Box, source: Path) -> None:
    assert demo.compare_trees(source, b.root / "restored" / "tree") == []


def _sqlite_source(b: Box) -> Path:
    source = b.path("source", owner=0)
    with sqlite3.connect(source / "app.db") as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {i}" * 20,) for i in range(5000)])
    db.close()
    return source


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, body FROM t ORDER BY id").fetchall()
    db.close()
    return rows


def _sqlite_restored(b: Box, source: Path) -> None:
    assert _rows(b.root / "restored" / "app.db") == _rows(source / "app.db")


EXAMPLES = {
    "filesystem": Example(
        FS_AGENT,
        _fs_source,
        lambda s: {"BAQUP_FS_SOURCE": str(s)},
        lambda b: {"BAQUP_FS_TARGET": str(b.root / "restored" / "tree")},
        _fs_restored,
    ),
    "sqlite": Example(
        SQLITE_AGENT,
        _sqlite_source,
        lambda s: {"BAQUP_SQLITE_DATABASE": str(s / "app.db")},
        lambda b: {"BAQUP_SQLITE_DATABASE": str(b.root / "restored" / "app.db")},
        _sqlite_restored,
    ),
}


@pytest.fixture(params=sorted(EXAMPLES))
def example(request: pytest.FixtureRequest) -> Example:
    return EXAMPLES[request.param]


# -- the tests ------------------------------------------------------------------------------


def test_backup_and_restore_as_pid1_non_root_read_only(box: Box, example: Example) -> None:
    source = example.make_source(box)
    python = [sys.executable, str(example.script)]
    env = box.env("b1", "backup", **example.source_env(source))
    assert run(box, python, env, [source], "backup") == 0, box.output("backup")
    output = box.root / "staging" / "b1"
    assert_complete_output(output)
    assert output.stat().st_uid == NOBODY.pw_uid  # written by the unprivileged user
    assert box.result("b1")["status"] == "success"

    env = box.env("r1", "restore", BAQUP_RESTORE_SOURCE=output, **example.restore_env(box))
    assert run(box, python, env, [source, output], "restore") == 0, box.output("restore")
    assert box.result("r1")["status"] == "success"
    example.assert_restored(box, source)
    box.assert_no_secret()


def start_gated(
    box: Box, example: Example, job_id: str, **extra: object
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A gated backup, waiting at its gate: (unshare, host pid of PID 1, source)."""
    source = example.make_source(box)
    env = box.env(
        job_id, "backup", GATE_DIR=box.root / "gate", **example.source_env(source), **extra
    )
    proc = box.start([sys.executable, str(GATED), str(example.script)], env, [source], job_id)
    init = wait_for_init(proc)
    wait_until(lambda: (box.root / "gate" / "ready").exists() or proc.poll() is not None, "gate")
    assert proc.poll() is None, box.output(job_id)
    return proc, init, source


def test_orphans_are_reaped_while_the_job_runs(box: Box, example: Example) -> None:
    proc, init, _ = start_gated(box, example, "g1")
    try:
        orphans = {int(p) for p in (box.root / "gate" / "ready").read_text().split()}
        assert len(orphans) == 3

        def reaped() -> bool:
            procs = namespace_processes(init)
            return not any(p.state == "Z" or p.ns_pid in orphans for p in procs)

        wait_until(reaped, "the orphans to be reaped")
        procs = namespace_processes(init)
        by_ns_pid = {p.ns_pid: p for p in procs}
        assert by_ns_pid[1].name.startswith("python")  # the agent's init is PID 1
        assert all(p.uid == NOBODY.pw_uid for p in procs)  # nothing runs as root
        assert [p for p in procs if p.state == "Z"] == []
        (box.root / "gate" / "go").touch()
        assert proc.wait(timeout=WAIT) == 0, box.output("g1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert box.result("g1")["status"] == "success"
    assert_complete_output(box.root / "staging" / "g1")
    box.assert_no_secret()


def sigterm_gated_backup(
    box: Box, example: Example, job_id: str, **extra: object
) -> dict[str, Any]:
    """SIGTERM to PID 1 of a gated backup (from outside the namespace, as ``docker stop``
    sends it); the job must end cancelled (exit 1) with nothing published. Returns the
    result message."""
    grace = 3.0
    proc, init, _ = start_gated(box, example, job_id, BAQUP_GRACE_PERIOD=grace, **extra)
    try:
        assert children(init), "the agent runs under PID 1"
        sent = time.monotonic()
        os.kill(init, signal.SIGTERM)
        code = proc.wait(timeout=WAIT)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1, box.output(job_id)
    assert elapsed < grace + 2.0  # not killed by a later SIGKILL: it stopped on its own
    result = box.result(job_id)
    assert result["status"] == "cancelled"
    assert "SIGTERM" in result["error"]
    assert not (box.root / "staging" / job_id).exists()
    assert not list((box.root / "staging").glob(f".staging/{job_id}*"))
    box.assert_no_secret()
    return result


def test_sigterm_to_pid1_cancels_at_the_next_checkpoint(box: Box, example: Example) -> None:
    result = sigterm_gated_backup(box, example, "t1")
    assert "grace period expired" not in result["error"]


def test_sigterm_to_pid1_ends_a_job_stuck_in_a_long_call(box: Box) -> None:
    # The watchdog does not depend on the example: one suffices.
    result = sigterm_gated_backup(box, EXAMPLES["filesystem"], "s1", GATE_STUCK=1)
    assert "grace period expired" in result["error"]


def test_pid1_exits_with_128_plus_the_signal_that_killed_the_job(box: Box) -> None:
    proc, init, _ = start_gated(box, EXAMPLES["filesystem"], "k1")
    try:
        # the gate's orphans are children of PID 1 too, until it has reaped them
        wait_until(lambda: len(children(init)) == 1, "the orphans to be reaped")
        (agent,) = children(init)
        os.kill(agent, signal.SIGKILL)  # the OOM killer, say
        assert proc.wait(timeout=WAIT) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
