"""One job id, many starts (contract section 4.7), against a real redis-server.

A duplicate refused while the first run lives writes nothing of the job; a rerun of a
finished backup does no work, adds nothing to the stream and keeps the recorded result;
a rerun after an exit-75 run delivers the spooled result; an output that does not
verify gives 65 and leaves the result alone.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from baqup_agent.agent import run_job
from baqup_agent.contract import ExitCode
from baqup_agent.keys import EVENTS_FILE, SPOOL_SUBDIR, job_keys
from tests.agent.helpers import SAMPLE_AGENT, agent_command, job_env, process_env
from tests.agent.sample_agent import SampleAgent
from tests.conftest import RedisServer

JOB = "job-rerun-1"


def run(env: dict[str, str]) -> tuple[int, str]:
    """Run one job in this process; its exit code and log."""
    log = io.StringIO()
    code = run_job(SampleAgent, environ=env, install_signals=False, log_stream=log)
    return code, log.getvalue()


def stream(url: str, job: str = JOB) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url)
    try:
        return [orjson.loads(f[b"msg"]) for _, f in client.xrange(job_keys(job).events)]
    finally:
        client.close()


def keys_of(url: str, job: str = JOB) -> dict[str, bytes | None]:
    """The job's result and heartbeat keys."""
    client = redis.Redis.from_url(url)
    try:
        k = job_keys(job)
        return {"result": client.get(k.result), "heartbeat": client.get(k.heartbeat)}
    finally:
        client.close()


def spool_dir(staging: Path, job: str = JOB) -> Path:
    return staging / SPOOL_SUBDIR / job


def spool_bytes(staging: Path, job: str = JOB) -> bytes | None:
    path = spool_dir(staging, job) / EVENTS_FILE
    return path.read_bytes() if path.exists() else None


def start_slow_run(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A first run that holds the job's lock while it works (about 30 s)."""
    return subprocess.Popen(
        agent_command(SAMPLE_AGENT),
        env=process_env({**env, "BAQUP_TEST_BEHAVIOUR": "slow", "BAQUP_TEST_SECONDS": "30"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "spool-only"])
def test_a_refused_duplicate_writes_nothing_of_the_job(
    tmp_path: Path, redis_server: RedisServer, with_redis: bool
) -> None:
    staging = tmp_path / "staging"
    extra = {"BAQUP_REDIS_URL": redis_server.url} if with_redis else {}
    env = job_env(staging, JOB, **extra)
    first = start_slow_run(env)
    try:
        if with_redis:
            url = redis_server.url
            wait_until(lambda: any(m.get("to_state") == "running" for m in stream(url)))
        else:
            wait_until(lambda: b'"to_state":"running"' in (spool_bytes(staging) or b""))
        before = (stream(redis_server.url), spool_bytes(staging), keys_of(redis_server.url))
        second = subprocess.run(
            agent_command(SAMPLE_AGENT),
            env=process_env({**env, "BAQUP_AGENT_ID": "agent-2"}),
            capture_output=True,
            timeout=60,
        )
        assert second.returncode == ExitCode.CANT_CREATE_OUTPUT
        assert second.stdout == b""
        assert b"another run of job" in second.stderr
        after_stream = stream(redis_server.url)
        # Nothing from the duplicate: no message of agent-2, no result, no spool lines.
        assert not [m for m in after_stream if m["agent_id"] == "agent-2"]
        assert not [m for m in after_stream if m["type"] == "result"]
        assert keys_of(redis_server.url)["result"] is None
        assert after_stream[: len(before[0])] == before[0]
        if not with_redis:
            assert b'"agent_id":"agent-2"' not in (spool_bytes(staging) or b"")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert first.returncode == ExitCode.GENERAL_FAILURE  # cancelled: the first run ended as usual


def test_a_rerun_of_a_finished_backup_does_nothing_and_adds_no_message(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    staging = tmp_path / "staging"
    env = job_env(staging, JOB, BAQUP_REDIS_URL=redis_server.url)
    assert run(env)[0] == ExitCode.SUCCESS
    published = staging / JOB
    manifest = (published / "manifest.json").read_bytes()
    before, result = stream(redis_server.url), keys_of(redis_server.url)["result"]
    for _ in range(3):
        code, log = run({**env, "BAQUP_AGENT_ID": "agent-rerun"})
        assert code == ExitCode.SUCCESS
        assert "already complete" in log
        assert stream(redis_server.url) == before  # no state change, heartbeat or result
        assert keys_of(redis_server.url)["result"] == result
        assert (published / "manifest.json").read_bytes() == manifest  # no work redone
    assert before[-1]["type"] == "result"
    assert not spool_dir(staging).exists()


def test_a_rerun_after_an_unreported_success_delivers_the_spooled_result(
    tmp_path: Path,
) -> None:
    staging = tmp_path / "staging"
    server = RedisServer(tmp_path / "redis")  # not started yet: the first run spools
    env = job_env(staging, JOB, BAQUP_REDIS_URL=server.url)
    assert run(env)[0] == ExitCode.COMPLETED_UNREPORTED
    spooled = [orjson.loads(line) for line in (spool_bytes(staging) or b"").splitlines()]
    assert spooled[-1]["type"] == "result"
    server.start()
    try:
        code, log = run({**env, "BAQUP_AGENT_ID": "agent-rerun"})
        assert code == ExitCode.SUCCESS, log
        assert "already complete" in log
        assert stream(server.url) == spooled  # the first run's messages, once, in order
        assert orjson.loads(keys_of(server.url)["result"] or b"") == spooled[-1]
        code, _ = run({**env, "BAQUP_AGENT_ID": "agent-rerun"})
        assert code == ExitCode.SUCCESS
        assert stream(server.url) == spooled  # idempotent
    finally:
        server.stop(kill=True)


def test_a_rerun_writes_a_result_only_when_redis_has_none(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    staging = tmp_path / "staging"
    env = job_env(staging, JOB, BAQUP_REDIS_URL=redis_server.url)
    assert run(env)[0] == ExitCode.SUCCESS
    client = redis.Redis.from_url(redis_server.url)
    client.delete(*job_keys(JOB)[:3])  # the earlier run's stream and result are gone
    client.close()
    assert run(env)[0] == ExitCode.SUCCESS
    messages = stream(redis_server.url)
    assert [m["type"] for m in messages] == ["result"]
    assert messages[0]["output_path"] == str(staging / JOB)
    assert orjson.loads(keys_of(redis_server.url)["result"] or b"") == messages[0]


@pytest.mark.parametrize(
    "damage", ["flip-artifact-byte", "truncate-artifact", "drop-manifest", "foreign-job"]
)
def test_a_rerun_whose_output_does_not_verify_exits_65_and_keeps_the_result(
    tmp_path: Path, redis_server: RedisServer, damage: str
) -> None:
    staging = tmp_path / "staging"
    env = job_env(staging, JOB, BAQUP_REDIS_URL=redis_server.url)
    assert run(env)[0] == ExitCode.SUCCESS
    before, result = stream(redis_server.url), keys_of(redis_server.url)["result"]
    out = staging / JOB
    artifact = out / "data.bin.zst"
    if damage == "flip-artifact-byte":
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
    elif damage == "truncate-artifact":
        os.truncate(artifact, artifact.stat().st_size - 1)
    elif damage == "drop-manifest":
        (out / "manifest.json").unlink()
    else:
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        manifest["job_id"] = "another-job"
        (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    code, log = run(env)
    assert code == ExitCode.DATA_ERROR, log
    assert stream(redis_server.url) == before
    assert keys_of(redis_server.url)["result"] == result


def test_a_spool_only_rerun_leaves_the_spool_as_it_was(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    env = job_env(staging, JOB)
    assert run(env)[0] == ExitCode.SUCCESS
    before = spool_bytes(staging)
    code, log = run(env)
    assert code == ExitCode.SUCCESS
    assert "already complete" in log
    assert spool_bytes(staging) == before
