"""The PostgreSQL example agent against a real server.

One ``initdb`` cluster per module on a free loopback port, run as an unprivileged user
(``postgres`` when the tests run as root), password (SCRAM) authentication only.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from baqup_agent.contract import ExitCode
from baqup_agent.testing import LogCapture, run_agent
from tests.agent.helpers import (
    EXAMPLES,
    assert_complete_output,
    assert_legal_states,
    events,
    job_env,
    load_agent,
    process_env,
    the_result,
)
from tests.agent.pg_cluster import SAMPLE_TABLES, Cluster, sample_cluster
from tests.agent.test_child import gone

pytestmark = pytest.mark.timeout(180)

PG_AGENT = EXAMPLES / "postgresql_agent" / "agent.py"
PostgresqlAgent = load_agent(PG_AGENT, "PostgresqlAgent")

# URL- and passfile-special characters: the passfile escaping is exercised for real.
PASSWORD = "p@ss:wo\\rd' \"$x%2F"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with sample_cluster(PASSWORD) as cluster:
        yield cluster


def run(env: dict[str, str], log: LogCapture | None = None) -> int:
    return run_agent(PostgresqlAgent, env, log=log).exit_code


def backup(cluster: Cluster, staging: Path, job: str, log: LogCapture | None = None) -> int:
    return run(job_env(staging, job, **cluster.agent_env(BAQUP_PG_DATABASE="source")), log)


def restore(
    cluster: Cluster, staging: Path, job: str, source: str, database: str, log: Any = None
) -> int:
    env = job_env(
        staging,
        job,
        "restore",
        BAQUP_RESTORE_SOURCE=staging / source,
        **cluster.agent_env(BAQUP_PG_DATABASE=database),
    )
    return run(env, log)


def no_password_anywhere(staging: Path, *logs: LogCapture) -> None:
    forms = {PASSWORD, json.dumps(PASSWORD)[1:-1], repr(PASSWORD)[1:-1]}
    texts = [log.getvalue() for log in logs]
    texts += [
        p.read_text(errors="replace") for p in staging.rglob("*") if p.suffix in (".json", ".jsonl")
    ]
    for text in texts:
        assert not any(form in text for form in forms)


@pytest.fixture(scope="module")
def published(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One backup of the source database, shared by the restore tests."""
    staging = tmp_path_factory.mktemp("pg-staging")
    log = LogCapture()
    assert backup(cluster, staging, "b1", log) == ExitCode.SUCCESS, log.getvalue()
    return staging, log.getvalue()


def test_backup_publishes_a_dump_with_its_metadata(
    cluster: Cluster, published: tuple[Path, str]
) -> None:
    staging, log = published
    manifest = assert_complete_output(staging / "b1")
    meta = manifest["source_metadata"]
    server_version_num = int(cluster.psql("postgres", "SHOW server_version_num"))
    assert meta["server_version_num"] == server_version_num
    assert meta["server_version"] == cluster.psql("postgres", "SHOW server_version")
    assert meta["dump_format"] == "custom" and meta["database"] == "source"
    assert meta["dump_bytes"] > 2_000_000  # a few MB of rows
    (artifact,) = manifest["artifacts"]
    assert artifact["filename"] == "database.pgdump.zst" and artifact["compression"] == "zstd"
    assert artifact["size_bytes"] < meta["dump_bytes"]
    assert assert_legal_states(events(staging, "b1"))[-1].value == "terminated"
    assert PASSWORD not in log


def test_round_trip_restores_every_row(
    cluster: Cluster, published: tuple[Path, str], tmp_path: Path
) -> None:
    staging, backup_log = published
    cluster.create_database("restored")
    log = LogCapture()
    assert restore(cluster, staging, "r1", "b1", "restored", log) == ExitCode.SUCCESS, (
        log.getvalue()
    )
    assert cluster.fingerprint("restored", SAMPLE_TABLES) == cluster.fingerprint(
        "source", SAMPLE_TABLES
    )
    assert cluster.psql("restored", "SELECT order_total(5) = (SELECT order_total(5))") == "t"
    assert cluster.psql("restored", "SELECT count(*) FROM big_orders") == cluster.psql(
        "source", "SELECT count(*) FROM big_orders"
    )
    assert the_result(events(staging, "r1"))["status"] == "success"
    no_password_anywhere(staging, log, LogCapture(backup_log))


def test_restore_refuses_a_database_that_is_not_empty(
    cluster: Cluster, published: tuple[Path, str]
) -> None:
    staging, _ = published
    for i, sql in enumerate(
        [
            "CREATE TABLE t (x int)",
            "CREATE SCHEMA s",
            "CREATE TYPE e AS ENUM ('a')",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE SEQUENCE q",
        ]
    ):
        database = f"busy{i}"
        cluster.create_database(database)
        cluster.psql(database, sql)
        log = LogCapture()
        code = restore(cluster, staging, f"busy-{i}", "b1", database, log)
        assert code == ExitCode.CANT_CREATE_OUTPUT, sql
        assert "is not empty" in the_result(events(staging, f"busy-{i}"))["error"]
        assert (
            cluster.psql(database, "SELECT count(*) FROM pg_class WHERE relname = 'customers'")
            == "0"
        )


def test_restore_into_a_missing_database_is_resource_unavailable(
    cluster: Cluster, published: tuple[Path, str]
) -> None:
    staging, _ = published
    assert restore(cluster, staging, "r-missing", "b1", "nowhere") == ExitCode.RESOURCE_UNAVAILABLE
    assert 'database "nowhere" does not exist' in the_result(events(staging, "r-missing"))["error"]


def test_a_wrong_password_fails_without_showing_either(
    cluster: Cluster, published: tuple[Path, str], tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    wrong = "wrong:pass\\word"
    (tmp_path / "wrong").write_text(wrong)
    env = job_env(staging, "bad", **cluster.agent_env(BAQUP_PG_DATABASE="source"))
    env["BAQUP_PG_PASSWORD_FILE"] = str(tmp_path / "wrong")
    log = LogCapture()
    assert run(env, log) == ExitCode.RESOURCE_UNAVAILABLE
    assert "password authentication failed" in the_result(events(staging, "bad"))["error"]
    assert wrong not in log.getvalue() and PASSWORD not in log.getvalue()


def _tamper(staging: Path, source: str, target: str, **meta: Any) -> None:
    shutil.copytree(staging / source, staging / target)
    manifest_path = staging / target / "manifest.json"
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["source_metadata"].update(meta)
    manifest_path.write_bytes(orjson.dumps(manifest))


@pytest.mark.parametrize(
    "meta",
    [
        {"dump_bytes": "12"},
        {"dump_bytes": -1},
        {"dump_bytes": None},
        {"server_version_num": 15.5},
        {"server_version_num": 100},
        {"dump_format": "plain"},
        {"server_version": 15},
    ],
)
def test_restore_rejects_metadata_of_the_wrong_type_or_range(
    cluster: Cluster, published: tuple[Path, str], meta: dict[str, Any]
) -> None:
    staging, _ = published
    name = f"t{abs(hash(json.dumps(meta))) % 10**8}"
    _tamper(staging, "b1", f"{name}-src", **meta)
    cluster.create_database(name)
    assert restore(cluster, staging, name, f"{name}-src", name) == ExitCode.DATA_ERROR
    error = the_result(events(staging, name))["error"]
    assert "source_metadata" in error and next(iter(meta)) in error


@pytest.mark.parametrize("delta", [-1, 1, -1000])
def test_a_dump_of_another_size_is_refused_before_commit(
    cluster: Cluster, published: tuple[Path, str], delta: int
) -> None:
    staging, _ = published
    real = orjson.loads((staging / "b1" / "manifest.json").read_bytes())["source_metadata"]
    name = f"size{abs(delta)}{'m' if delta < 0 else 'p'}"
    _tamper(staging, "b1", f"{name}-src", dump_bytes=real["dump_bytes"] + delta)
    cluster.create_database(name)
    assert restore(cluster, staging, name, f"{name}-src", name) == ExitCode.DATA_ERROR
    assert "the manifest says" in the_result(events(staging, name))["error"]
    assert cluster.psql(name, "SELECT count(*) FROM pg_class WHERE relname = 'customers'") == "0"


def _pg_dump_children(agent_pid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == agent_pid and "pg_dump" in (entry / "comm").read_text():
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_cancel_mid_dump_leaves_no_process_and_no_session(
    cluster: Cluster, tmp_path: Path, how: str
) -> None:
    """SIGTERM: a cancelled job. SIGKILL: the agent dies, its child with it (parent-death
    signal), and the server drops the session although pg_dump could not say goodbye."""
    staging = tmp_path / "staging"
    env = job_env(
        staging, "c1", **cluster.agent_env(BAQUP_PG_DATABASE="source", BAQUP_GRACE_PERIOD=20)
    )
    # A session holding a lock pg_dump needs: the dump waits mid-way until cancelled.
    with cluster.locked("source", "orders"):
        agent = subprocess.Popen(
            [sys.executable, str(PG_AGENT)], env=process_env(env), stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 60
            waiting = 0
            while time.monotonic() < deadline and waiting == 0:
                waiting = cluster.waiting_on_a_lock("baqup-pg_dump")
                time.sleep(0.05)
            assert waiting == 1, "pg_dump never waited on the lock"
            dumpers = _pg_dump_children(agent.pid)
            assert len(dumpers) == 1
            agent.send_signal(signal.Signals[how])
            _, err = agent.communicate(timeout=60)
            assert agent.returncode == (1 if how == "SIGTERM" else -signal.SIGKILL), err.decode()
            assert gone(dumpers[0])
            # The lock is still held: the server drops the session because the client left.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and cluster.sessions("baqup-pg_dump"):
                time.sleep(0.1)
            assert cluster.sessions("baqup-pg_dump") == 0
        finally:
            agent.kill()
            agent.wait()
    assert not (staging / "c1").exists()
    if how == "SIGTERM":
        assert the_result(events(staging, "c1"))["status"] == "cancelled"
        assert not (staging / ".staging" / "c1").exists()
