"""The example agents as containers run them: PID 1 of a new PID namespace, as
``nobody``, with a read-only root filesystem, the source and the restore source
mounted read-only, and the Redis password and URL (and the PostgreSQL password) only
in files (``*_FILE``).

Backup and restore complete; a SIGTERM sent from outside the namespace (as the
container runtime sends it) cancels the job within the grace period, also when the job
is inside one long call; orphaned grandchildren are reaped while the job runs (no
zombie in the namespace, checked in /proc); the password appears in no output.

The PostgreSQL example runs against a real server (``tests/agent/pg_cluster.py``):
backup and restore through pg_dump and pg_restore, and a SIGTERM while pg_dump waits on
a lock another session holds, which must stop pg_dump, not leave it behind.
"""

from __future__ import annotations

import json
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
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from baqup_agent._keys import job_keys
from baqup_agent.contract import ExitCode
from tests.agent.helpers import EXAMPLES as EXAMPLES_DIR
from tests.agent.helpers import FS_AGENT, SQLITE_AGENT, assert_complete_output
from tests.agent.pg_cluster import SAMPLE_TABLES, Cluster, sample_cluster
from tests.agent.test_child import gone
from tests.conftest import RedisServer, stream_messages
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
PG_AGENT = EXAMPLES_DIR / "postgresql_agent" / "agent.py"
# Passfile- and JSON-special characters: escaped forms are searched for too.
PG_PASSWORD = f"pg:{secrets.token_hex(8)}\\' \"$x"

demo = load_module(EXAMPLES_DIR / "demo.py")  # make_sample, compare_trees


@dataclass
class Box:
    """The directories, secrets and Redis of one test's containers."""

    root: Path
    redis: RedisServer
    password: str
    watched: list[str] = field(default_factory=list)  # secrets no output may hold

    def path(self, name: str, *, owner: int = NOBODY.pw_uid) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        os.chown(path, owner, NOBODY.pw_gid)
        return path

    def add_secret(self, name: str, value: str, *, watch: bool = True) -> Path:
        """``secrets/NAME`` holding ``value`` and a newline, laid out as a Kubernetes
        secret volume (a link through ``..data``, mode 0440 for ``nobody``'s group)."""
        secrets_dir = self.root / "secrets"
        file = secrets_dir / "..data" / name
        file.write_text(value + "\n")
        os.chown(file, 0, NOBODY.pw_gid)
        file.chmod(0o440)  # defaultMode 0440 with fsGroup
        (secrets_dir / name).symlink_to(f"..data/{name}")
        if watch:
            self.watched.append(value)
        return secrets_dir / name

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
            entries = stream_messages(client, job_keys(job_id).events)
        finally:
            client.close()
        return [orjson.loads(raw) for raw in entries]

    def result(self, job_id: str) -> dict[str, Any]:
        (result,) = [m for m in self.messages(job_id) if m["type"] == "result"]
        return result

    def assert_no_secret(self) -> None:
        """The passwords are in their secret files and nowhere else: no log, output,
        spool file, nor any message on the bus (also JSON- or repr-escaped)."""
        forms = {f for pw in self.watched for f in (pw, json.dumps(pw)[1:-1], repr(pw)[1:-1])}
        for path in self.root.rglob("*"):
            if path.is_file() and "secrets" not in path.relative_to(self.root).parts:
                data = path.read_bytes()
                assert not any(f.encode() in data for f in forms), f"a password leaked into {path}"
        for job in ("b1", "r1", "g1", "t1", "s1"):
            assert not any(f in str(m) for m in self.messages(job) for f in forms)


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
        b.add_secret("redis-url", server.url, watch=False)
        b.add_secret("redis-password", password)
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


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_source_on_a_read_only_mount(box: Box, journal: str) -> None:
    """A rollback-journal database backs up from a read-only mount; a WAL one cannot
    (its readers need the -shm file beside it): exit 69 naming the directory, not 70."""
    source = _sqlite_source(box)
    with closing(sqlite3.connect(source / "app.db")) as db:
        db.execute(f"PRAGMA journal_mode={journal}")
    python = [sys.executable, str(SQLITE_AGENT)]
    env = box.env("w1", "backup", BAQUP_SQLITE_DATABASE=source / "app.db")
    code = run(box, python, env, [source], "wal")
    if journal == "delete":
        assert code == 0, box.output("wal")
        return
    assert code == int(ExitCode.RESOURCE_UNAVAILABLE), box.output("wal")
    result = box.result("w1")
    assert result["status"] == "failed" and result["exit_code"] == code
    assert f"{source} is not writable" in result["error"] and "WAL" in result["error"]
    assert not (box.root / "staging" / "w1").exists()


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


def sigterm_pid1(
    box: Box, proc: subprocess.Popen[bytes], init: int, job_id: str, grace: float
) -> dict[str, Any]:
    """SIGTERM to PID 1 (host pid ``init``) of a running backup, from outside the
    namespace as ``docker stop`` sends it; the job must end cancelled (exit 1) with
    nothing published. Returns the result message."""
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


def sigterm_gated_backup(
    box: Box, example: Example, job_id: str, **extra: object
) -> dict[str, Any]:
    """SIGTERM to PID 1 of a gated backup waiting at its gate (``sigterm_pid1``)."""
    grace = 3.0
    proc, init, _ = start_gated(box, example, job_id, BAQUP_GRACE_PERIOD=grace, **extra)
    return sigterm_pid1(box, proc, init, job_id, grace)


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


# -- PostgreSQL: child processes of the job --------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    require_namespaces()  # before the cluster's start-up, which is the slow part
    with sample_cluster(PG_PASSWORD) as cluster:
        yield cluster


@pytest.fixture
def pg_password_file(box: Box) -> Path:
    """The PostgreSQL password in the box's secret volume (watched like Redis')."""
    return box.add_secret("pg-password", PG_PASSWORD)


def pg_env(
    box: Box, pg: Cluster, job_id: str, role: str, database: str, **extra: object
) -> dict[str, str]:
    """The PostgreSQL agent's environment, its password from the box's secret volume
    (``pg_password_file``)."""
    password_file = box.root / "secrets" / "pg-password"
    return box.env(
        job_id,
        role,
        **pg.agent_env(BAQUP_PG_DATABASE=database, BAQUP_PG_PASSWORD_FILE=password_file),
        **extra,
    )


@pytest.mark.usefixtures("pg_password_file")
def test_postgresql_backup_and_restore_as_pid1(box: Box, pg: Cluster) -> None:
    python = [sys.executable, str(PG_AGENT)]
    env = pg_env(box, pg, "b1", "backup", "source")
    assert run(box, python, env, [], "backup") == 0, box.output("backup")
    output = box.root / "staging" / "b1"
    assert_complete_output(output)
    assert output.stat().st_uid == NOBODY.pw_uid
    assert box.result("b1")["status"] == "success"

    pg.create_database("pid1_restored")
    env = pg_env(box, pg, "r1", "restore", "pid1_restored", BAQUP_RESTORE_SOURCE=output)
    assert run(box, python, env, [output], "restore") == 0, box.output("restore")
    assert box.result("r1")["status"] == "success"
    assert pg.fingerprint("pid1_restored", SAMPLE_TABLES) == pg.fingerprint("source", SAMPLE_TABLES)
    box.assert_no_secret()


@pytest.mark.usefixtures("pg_password_file")
def test_sigterm_to_pid1_stops_a_pg_dump_waiting_on_a_lock(box: Box, pg: Cluster) -> None:
    grace = 6.0
    env = pg_env(box, pg, "t1", "backup", "source", BAQUP_GRACE_PERIOD=grace)
    with pg.locked("source", "orders"):  # pg_dump waits on it mid-way
        proc = box.start([sys.executable, str(PG_AGENT)], env, [], "t1")
        try:
            init = wait_for_init(proc)

            def dump_waits() -> bool:
                return pg.waiting_on_a_lock("baqup-pg_dump") > 0 or proc.poll() is not None

            wait_until(dump_waits, "pg_dump to wait on the lock")
            assert proc.poll() is None, box.output("t1")
            procs = namespace_processes(init)
            (agent,) = children(init)
            (dumper,) = [p for p in procs if p.name == "pg_dump"]
            assert children(agent) == [dumper.host_pid]  # the job's own child, not an orphan
            assert [p for p in procs if p.state == "Z"] == []  # psql and pg_dump --version
            assert all(p.uid == NOBODY.pw_uid for p in procs)
            result = sigterm_pid1(box, proc, init, "t1", grace)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert gone(dumper.host_pid)
        assert namespace_processes(init) == []
        # The lock is still held: the session ends because pg_dump did, not by the lock.
        wait_until(lambda: pg.sessions("baqup-pg_dump") == 0, "pg_dump's session to end")
    assert "grace period expired" not in result["error"]
    assert "did not stop on SIGTERM" not in box.output("t1")  # stopped, not SIGKILLed
