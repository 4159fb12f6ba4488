"""Staging: layout, atomic publication, leftovers of crashed runs, partial failure."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from baqup_agent import atomic_write
from baqup_agent._errors import (
    CantCreateOutput,
    ConfigError,
    DataError,
    InternalError,
    IOFailure,
    PartialFailure,
)
from baqup_agent._logger import Logger
from baqup_agent._secret import Secret
from baqup_agent._staging import Staging
from baqup_agent.schema import contract_errors


def staging(root: Path, logger: Logger, job_id: str = "job-1") -> Staging:
    """A prepared Staging."""
    s = Staging(root, job_id, logger)
    s.prepare()
    return s


def publish(s: Staging) -> Path:
    return s.publish(agent="test-agent", agent_version="1.0")


def manifest_of(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_bytes())
    return manifest


def test_layout_modes_and_manifest(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    assert s.work_dir == staging_dir / ".staging" / "job-1"
    assert s.output_dir == staging_dir / "job-1"
    assert stat.S_IMODE(s.work_dir.stat().st_mode) == 0o700
    with s.artifact("data.bin.zst") as w:
        w.write(b"hello" * 1000)
    with s.artifact("db/dump.sql.gz", compression="gzip", algorithm="sha512") as w:
        w.write(b"select 1;")
    (s.work_dir / "raw.txt").write_bytes(b"raw")
    added = s.add_file("raw.txt")
    assert stat.S_IMODE((s.work_dir / "raw.txt").stat().st_mode) == 0o600
    assert not s.output_dir.exists()

    path = s.publish(
        agent="test-agent", agent_version="1.0", source_metadata={"source": "/data", "files": 3}
    )
    assert path == s.output_dir
    assert not s.work_dir.exists()
    document = manifest_of(path)
    assert contract_errors("manifest.json", document) == []
    assert document["job_id"] == "job-1" and document["role"] == "backup"
    assert document["created_at"].endswith("Z")
    assert [a["filename"] for a in document["artifacts"]] == [
        "data.bin.zst",
        "db/dump.sql.gz",
        "raw.txt",
    ]
    assert document["artifacts"][2] == added.model_dump(mode="json", exclude_none=True)
    assert document["source_metadata"] == {"source": "/data", "files": 3}
    assert s.manifest is not None and len(s.manifest.artifacts) == 3
    for entry in [path, path / "db"]:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o700
    for name in ["data.bin.zst", "db/dump.sql.gz", "raw.txt", "manifest.json"]:
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600
    assert not (staging_dir / ".staging" / ".locks" / "job-1").exists()


def test_publication_is_atomic_for_a_polling_reader(staging_dir: Path, logger: Logger) -> None:
    """A reader polling the output directory never sees it incomplete."""
    jobs = [f"job-{i}" for i in range(25)]
    stop = threading.Event()
    seen_complete: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            for job in jobs:
                out = staging_dir / job
                try:
                    names = sorted(os.listdir(out))
                except FileNotFoundError:
                    continue
                if names != ["a.bin", "b.bin", "c", "manifest.json"]:
                    problems.append(f"{job}: {names}")
                elif (out / "c" / "d.bin").stat().st_size != 4096:
                    problems.append(f"{job}: short file")
                else:
                    seen_complete.add(job)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for job in jobs:
            s = staging(staging_dir, logger, job)
            for name in ["a.bin", "b.bin", "c/d.bin"]:
                with s.artifact(name, compression="none") as w:
                    w.write(os.urandom(4096))
            publish(s)
    finally:
        deadline = time.monotonic() + 10  # let the reader look at every output once more
        while seen_complete != set(jobs) and not problems and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join()
    assert problems == []
    assert seen_complete == set(jobs)


def test_leftover_of_a_crashed_run_is_removed_safely(
    staging_dir: Path, logger: Logger, tmp_path: Path, log_stream: io.StringIO
) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("precious")
    leftover = staging_dir / ".staging" / "job-1"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "half.bin").write_bytes(b"partial")
    (leftover / "escape").symlink_to(sentinel)  # rmtree must not follow it
    (leftover / "sub" / "keep").symlink_to(sentinel / "keep")

    s = staging(staging_dir, logger)
    assert os.listdir(s.work_dir) == []
    assert (sentinel / "keep").read_text() == "precious"
    assert "leftover" in log_stream.getvalue()
    with s.artifact("a") as w:
        w.write(b"x")
    publish(s)
    assert sorted(os.listdir(staging_dir / "job-1")) == ["a", "manifest.json"]


def test_leftover_symlink_is_unlinked_not_followed(
    staging_dir: Path, logger: Logger, tmp_path: Path
) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("precious")
    (staging_dir / ".staging").mkdir()
    (staging_dir / ".staging" / "job-1").symlink_to(sentinel)
    s = staging(staging_dir, logger)
    assert s.work_dir.is_dir() and not s.work_dir.is_symlink()
    assert (sentinel / "keep").read_text() == "precious"


def test_staging_dot_dir_must_not_be_a_symlink(
    staging_dir: Path, logger: Logger, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (staging_dir / ".staging").symlink_to(elsewhere)
    with pytest.raises(CantCreateOutput, match="not a directory"):
        staging(staging_dir, logger)
    assert os.listdir(elsewhere) == []


_CRASH_SCRIPT = """
import sys, time
from baqup_agent._logger import Logger
from baqup_agent._staging import Staging
s = Staging(sys.argv[1], "job-1", Logger("job-1", "a", stream=sys.stderr))
s.prepare()
with s.artifact("big.bin", compression="none") as w:
    w.write(b"x" * 100000)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_sigkill_mid_write_then_next_run_succeeds(staging_dir: Path, logger: Logger) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, str(staging_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        # while it runs, a second run of the job is refused (the lock)
        with pytest.raises(CantCreateOutput, match="another run"):
            Staging(staging_dir, "job-1", logger).prepare()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (staging_dir / "job-1").exists()
    assert (staging_dir / ".staging" / "job-1" / "big.bin").exists()  # the leftover
    s = staging(staging_dir, logger)
    with s.artifact("big.bin") as w:
        w.write(b"y")
    publish(s)
    assert manifest_of(staging_dir / "job-1")["artifacts"][0]["filename"] == "big.bin"


def test_a_job_id_publishes_once(staging_dir: Path, logger: Logger) -> None:
    publish(staging(staging_dir, logger))
    with pytest.raises(CantCreateOutput, match="already exists"):
        staging(staging_dir, logger)


def test_publish_never_replaces_an_output_that_appeared(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    with s.artifact("a") as w:
        w.write(b"x")
    (staging_dir / "job-1").mkdir()  # empty: a plain rename(2) would replace it
    with pytest.raises(CantCreateOutput):
        publish(s)
    assert os.listdir(staging_dir / "job-1") == []
    s.discard()
    assert not s.work_dir.exists()


def test_two_live_runs_of_one_job_are_refused(staging_dir: Path, logger: Logger) -> None:
    first = staging(staging_dir, logger)
    with pytest.raises(CantCreateOutput, match="another run"):
        staging(staging_dir, logger)
    assert first.work_dir.is_dir()  # the live run's directory is untouched
    first.discard()
    staging(staging_dir, logger).discard()  # the lock was released


def test_partial_failure_publishes_the_good_ones(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    with s.artifact("good.bin") as w:
        w.write(b"good")
    w2 = s.artifact("bad.bin")
    w2.write(b"half")
    s.fail_artifact("bad.bin", OSError(5, "disk error"))
    assert not (s.work_dir / "bad.bin").exists()
    with pytest.raises(PartialFailure, match=r"1 of 2 artifacts failed.*bad.bin") as info:
        publish(s)
    assert info.value.exit_code == 76
    document = manifest_of(staging_dir / "job-1")
    assert [a["filename"] for a in document["artifacts"]] == ["good.bin"]
    assert sorted(os.listdir(staging_dir / "job-1")) == ["good.bin", "manifest.json"]
    assert s.failures == [("bad.bin", "OSError: [Errno 5] disk error")]


def test_failing_a_closed_artifact_unregisters_it(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    for name in ["a", "b"]:
        with s.artifact(name) as w:
            w.write(b"x")
    s.fail_artifact("a", "verification failed")
    with pytest.raises(PartialFailure):
        publish(s)
    assert [a["filename"] for a in manifest_of(s.output_dir)["artifacts"]] == ["b"]


def test_every_artifact_failed_publishes_nothing(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    s.fail_artifact("a", DataError("source corrupt"))
    s.fail_artifact("b", OSError("later"))
    with pytest.raises(DataError, match="source corrupt"):
        publish(s)
    assert not (staging_dir / "job-1").exists()
    assert not s.work_dir.exists()

    s = staging(staging_dir, logger, "job-2")
    s.fail_artifact("a", "no space")
    with pytest.raises(IOFailure, match="every artifact failed: a: no space"):
        publish(s)
    assert not (staging_dir / "job-2").exists()


def test_no_artifact_at_all_publishes_an_empty_manifest(staging_dir: Path, logger: Logger) -> None:
    path = publish(staging(staging_dir, logger))
    assert manifest_of(path)["artifacts"] == []


def test_discard(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    w = s.artifact("a")
    w.write(b"x")
    s.discard()
    assert w.closed
    assert not s.work_dir.exists() and not s.output_dir.exists()
    s.discard()  # idempotent
    with pytest.raises(InternalError):
        s.artifact("b")


def test_discard_after_publish_keeps_the_output(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    path = publish(s)
    s.discard()
    assert (path / "manifest.json").exists()


def test_concurrent_discard_waits_for_publish(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    with s.artifact("a", compression="none") as w:
        w.write(os.urandom(1 << 20))
    t = threading.Thread(target=s.discard)
    with s._lock:  # publish holds this lock; a forced exit's discard must wait for it
        t.start()
        time.sleep(0.05)
        assert s.work_dir.exists()
        publish(s)
    t.join()
    assert (s.output_dir / "a").exists()


def test_unregistered_files_are_not_published(
    staging_dir: Path, logger: Logger, log_stream: io.StringIO
) -> None:
    s = staging(staging_dir, logger)
    with s.artifact("a") as w:
        w.write(b"x")
    (s.work_dir / "tmp").mkdir()
    (s.work_dir / "tmp" / "scratch.db").write_bytes(b"scratch")
    (s.work_dir / "link").symlink_to("/etc/passwd")
    publish(s)
    assert sorted(os.listdir(s.output_dir)) == ["a", "manifest.json"]
    assert "not an artifact" in log_stream.getvalue()


def test_open_writer_at_publish_is_a_bug(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    s.artifact("a")
    with pytest.raises(InternalError, match=r"a \(open\)"):
        publish(s)
    assert not s.output_dir.exists()


def test_aborted_writer_must_be_reported(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    with pytest.raises(OSError), s.artifact("a") as w:  # the agent swallows this one...
        w.write(b"x")
        raise OSError("read error")
    with pytest.raises(InternalError, match="aborted without fail_artifact"):
        publish(s)  # ...so publishing would silently lose it
    s.fail_artifact("a", OSError("read error"))
    with pytest.raises(OSError, match="read error"):
        publish(s)  # the only artifact failed: nothing published
    assert not s.output_dir.exists()


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", ".hidden", "manifest.json", "a//b"])
def test_bad_artifact_names(staging_dir: Path, logger: Logger, name: str) -> None:
    s = staging(staging_dir, logger)
    with pytest.raises(ValueError):
        s.artifact(name)
    assert not (staging_dir / "x").exists() and not Path("/abs").exists()


def test_duplicate_artifact_names(staging_dir: Path, logger: Logger) -> None:
    s = staging(staging_dir, logger)
    with s.artifact("a") as w:
        w.write(b"x")
    with pytest.raises(ValueError, match="already"):
        s.artifact("a")
    with pytest.raises(ValueError, match="already"):
        s.add_file("a")


def test_add_file_refuses_symlinks(staging_dir: Path, logger: Logger, tmp_path: Path) -> None:
    s = staging(staging_dir, logger)
    (tmp_path / "secret").write_text("x")
    (s.work_dir / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(CantCreateOutput):
        s.add_file("link")
    with pytest.raises(CantCreateOutput):
        s.add_file("missing")


def test_invalid_job_id(staging_dir: Path, logger: Logger) -> None:
    for job_id in ["../x", ".staging", "a/b", ""]:
        with pytest.raises(ConfigError):
            Staging(staging_dir, job_id, logger)


def test_secrets_never_reach_the_manifest(staging_dir: Path, logger: Logger) -> None:
    password = Secret("hunter2-very-secret")
    s = staging(staging_dir, logger)
    path = s.publish(
        agent="a",
        agent_version="1",
        source_metadata={"dsn": "postgres://u:hunter2-very-secret@db/x", "password": password},
    )
    text = (path / "manifest.json").read_text()
    assert "hunter2" not in text
    assert manifest_of(path)["source_metadata"]["password"] == "[REDACTED]"


def test_atomic_write_publishes_and_adopts_files(staging_dir: Path, logger: Logger) -> None:
    with atomic_write(staging_dir, "job-1", logger, agent="preview", agent_version="0.0.1") as s:
        (s.work_dir / "dump.sql").write_bytes(b"select 1;")
        (s.work_dir / "sub").mkdir()
        (s.work_dir / "sub" / "x").write_bytes(b"x")
        with s.artifact("data.zst") as w:
            w.write(b"data")
    document = manifest_of(staging_dir / "job-1")
    assert sorted(a["filename"] for a in document["artifacts"]) == ["data.zst", "dump.sql", "sub/x"]
    assert document["agent"] == "preview"


def test_atomic_write_discards_on_exception(staging_dir: Path, logger: Logger) -> None:
    with pytest.raises(RuntimeError), atomic_write(staging_dir, "job-1", logger) as s:
        with s.artifact("a") as w:
            w.write(b"x")
        raise RuntimeError("boom")
    assert not (staging_dir / "job-1").exists()
    assert not (staging_dir / ".staging" / "job-1").exists()
