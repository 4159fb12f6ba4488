"""The example agents: backup + restore round trips, outside tools, the demo."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from baqup_agent.contract import ExitCode
from baqup_agent.testing import run_agent
from tests.agent.helpers import (
    EXAMPLES,
    FS_AGENT,
    SQLITE_AGENT,
    assert_complete_output,
    assert_legal_states,
    events,
    job_env,
    load_agent,
    the_result,
)
from tests.conftest import require_binary

FilesystemAgent = load_agent(FS_AGENT, "FilesystemAgent")
SqliteAgent = load_agent(SQLITE_AGENT, "SqliteAgent")


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baqup_demo", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def run(agent: type, env: dict[str, str]) -> int:
    return run_agent(agent, env).exit_code


# -- filesystem agent -------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    demo.make_sample(root)
    (root / "project-1" / "hardlink.bin").hardlink_to(root / "project-1/module-0/blob-0.bin")
    return root


def test_filesystem_round_trip_is_byte_identical(tree: Path, tmp_path: Path) -> None:
    staging, target = tmp_path / "staging", tmp_path / "restored"
    env = job_env(staging, "b1", BAQUP_FS_SOURCE=tree)
    assert run(FilesystemAgent, env) == ExitCode.SUCCESS
    manifest = assert_complete_output(staging / "b1")
    meta = manifest["source_metadata"]
    assert meta["source"] == str(tree) and meta["symlinks"] == 1 and meta["hardlinks"] == 1
    assert manifest["artifacts"][0]["compression"] == "zstd"

    env = job_env(
        staging, "r1", "restore", BAQUP_RESTORE_SOURCE=staging / "b1", BAQUP_FS_TARGET=target
    )
    assert run(FilesystemAgent, env) == ExitCode.SUCCESS
    assert demo.compare_trees(tree, target) == []
    for job in ("b1", "r1"):
        msgs = events(staging, job)
        assert assert_legal_states(msgs)[-1].value == "terminated"
        assert the_result(msgs)["exit_code"] == 0
    entries = sum(meta[kind] for kind in ("files", "directories", "symlinks", "hardlinks"))
    for job in ("b1", "r1"):  # backup: counted by create_tar(totals=True) in a child
        beats = [m for m in events(staging, job) if m["type"] in ("heartbeat", "progress")]
        last = beats[-1]["progress"]
        assert last["bytes_done"] == last["bytes_total"] == meta["tar_bytes"]
        assert last["items_done"] == last["items_total"] == entries


def test_filesystem_artifact_passes_outside_tools(tree: Path, tmp_path: Path) -> None:
    zstd, tar = require_binary("zstd"), require_binary("tar")
    staging = tmp_path / "staging"
    assert run(FilesystemAgent, job_env(staging, BAQUP_FS_SOURCE=tree)) == ExitCode.SUCCESS
    output = staging / "job-1"
    artifact = output / "files.tar.zst"
    subprocess.run([zstd, "-q", "-t", str(artifact)], check=True)
    listing = subprocess.run(
        [tar, "--zstd", "-tf", str(artifact)], check=True, capture_output=True, text=True
    ).stdout.split()
    expected = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))
    assert sorted(name.rstrip("/") for name in listing) == expected
    manifest = orjson.loads((output / "manifest.json").read_bytes())
    sums = "".join(f"{a['checksum_value']}  {a['filename']}\n" for a in manifest["artifacts"])
    check = subprocess.run(
        ["sha256sum", "-c", "-"], input=sums, cwd=output, capture_output=True, text=True
    )
    assert check.returncode == 0 and "files.tar.zst: OK" in check.stdout


def test_filesystem_backup_of_a_missing_source_exits_69(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_FS_SOURCE=tmp_path / "nowhere")
    assert run(FilesystemAgent, env) == ExitCode.RESOURCE_UNAVAILABLE
    assert not (tmp_path / "job-1").exists()


def test_filesystem_schema_requires_the_role_variable(tmp_path: Path) -> None:
    assert run(FilesystemAgent, job_env(tmp_path)) == ExitCode.USAGE_CONFIG_ERROR
    env = job_env(tmp_path, "r1", "restore", BAQUP_RESTORE_SOURCE=tmp_path)
    assert run(FilesystemAgent, env) == ExitCode.USAGE_CONFIG_ERROR
    assert list(tmp_path.iterdir()) == []


# -- sqlite agent -----------------------------------------------------------------------


def make_database(path: Path, rows: int = 20_000) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
        db.executemany(
            "INSERT INTO item (name, blob) VALUES (?, ?)",
            ((f"item-{i}", bytes([i % 256]) * 100) for i in range(rows)),
        )
    db.close()


def count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM item").fetchone()[0])
    finally:
        db.close()


def test_sqlite_online_backup_and_restore(tmp_path: Path) -> None:
    database, staging = tmp_path / "app.db", tmp_path / "staging"
    make_database(database)
    stop = threading.Event()

    def writer() -> None:  # the application keeps writing during the backup
        db = sqlite3.connect(database)
        while not stop.is_set():
            with db:
                db.execute("INSERT INTO item (name) VALUES ('live')")
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        env = job_env(staging, "b1", BAQUP_SQLITE_DATABASE=database, BAQUP_SQLITE_PAGES_PER_STEP=16)
        assert run(SqliteAgent, env) == ExitCode.SUCCESS
    finally:
        stop.set()
        thread.join()
    manifest = assert_complete_output(staging / "b1")
    assert manifest["source_metadata"]["page_count"] > 16
    assert [a["filename"] for a in manifest["artifacts"]] == ["database.sqlite.zst"]

    restored = tmp_path / "restored" / "app.db"
    env = job_env(
        staging,
        "r1",
        "restore",
        BAQUP_RESTORE_SOURCE=staging / "b1",
        BAQUP_SQLITE_DATABASE=restored,
    )
    assert run(SqliteAgent, env) == ExitCode.SUCCESS
    assert 20_000 <= count(restored) <= count(database)
    assert list(restored.parent.iterdir()) == [restored]  # no temporary file left

    # An existing database is not replaced without BAQUP_SQLITE_OVERWRITE.
    env["BAQUP_JOB_ID"] = "r2"
    assert run(SqliteAgent, env) == ExitCode.CANT_CREATE_OUTPUT
    env.update(BAQUP_JOB_ID="r3", BAQUP_SQLITE_OVERWRITE="true")
    assert run(SqliteAgent, env) == ExitCode.SUCCESS


def test_sqlite_restore_of_a_corrupt_backup_leaves_the_target_alone(tmp_path: Path) -> None:
    database, staging = tmp_path / "app.db", tmp_path / "staging"
    make_database(database, rows=100)
    assert run(SqliteAgent, job_env(staging, "b1", BAQUP_SQLITE_DATABASE=database)) == 0
    artifact = staging / "b1" / "database.sqlite.zst"
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"corrupt!")
    target = tmp_path / "target.db"
    target.write_bytes(b"the previous database")
    env = job_env(
        staging,
        "r1",
        "restore",
        BAQUP_RESTORE_SOURCE=staging / "b1",
        BAQUP_SQLITE_DATABASE=target,
        BAQUP_SQLITE_OVERWRITE="true",
    )
    assert run(SqliteAgent, env) == ExitCode.DATA_ERROR
    assert target.read_bytes() == b"the previous database"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "staging", "target.db"]


# -- the demo -----------------------------------------------------------------------------


def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restored tree identical to the source" in proc.stdout
    assert "[backup] result: success, exit code 0" in proc.stdout
    assert "recomputed: matches" in proc.stdout
