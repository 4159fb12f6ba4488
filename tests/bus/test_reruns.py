"""One job id, many starts (contract section 4.7), against a real redis-server.

A duplicate refused while the first run lives writes nothing of the job; a rerun of a
finished backup does no work, adds nothing to the stream and keeps the recorded result;
a rerun after an exit-75 run delivers the spooled result; an output that does not
verify gives 65 and leaves the result alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from baqup_agent._keys import EVENTS_FILE, SPOOL_SUBDIR, job_keys
from baqup_agent.contract import ExitCode
from baqup_agent.testing import run_agent
from tests.agent.helpers import SAMPLE_AGENT, agent_command, job_env, process_env
from tests.agent.sample_agent import SampleAgent
from tests.conftest import RedisServer, stream_messages

JOB = "job-rerun-1"


def run(env: dict[str, str]) -> tuple[int, str]:
    """Run one job in this process; its exit code and log."""
    job = run_agent(SampleAgent, env)
    return job.exit_code, job.log.getvalue()


def stream(url: str, job: str = JOB) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url)
    try:
        return [orjson.loads(m) for m in stream_messages(client, job_keys(job).events)]
    finally:
        client.close()


def keys_of(url: str, job: str = JOB) -> dict[str, bytes | str | None]:
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


def replay(job: str, spool: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    """``baqup-agent replay`` in a process of its own."""
    import sys

    argv = [sys.executable, "-m", "baqup_agent", "replay", job, "--spool-dir", str(spool)]
    if url is not None:
        argv += ["--redis-url", url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_replay_delivers_a_spool_once_and_says_why_when_it_cannot(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    server = RedisServer(tmp_path / "redis")
    url = server.url.replace("127.0.0.1", "user:pa55-w0rd@127.0.0.1")
    env = job_env(staging, JOB, BAQUP_REDIS_URL=server.url)
    assert run(env)[0] == ExitCode.COMPLETED_UNREPORTED
    spooled = [orjson.loads(line) for line in (spool_bytes(staging) or b"").splitlines()]
    spool = staging / SPOOL_SUBDIR

    down = replay(JOB, spool, server.url)  # Redis not started yet
    assert down.returncode == ExitCode.RESOURCE_UNAVAILABLE, down.stderr
    assert "Redis unreachable" in down.stderr
    assert "pa55" not in replay(JOB, spool, url).stderr  # the password is never quoted

    server.start()
    try:
        first = replay(JOB, spool, server.url)
        assert first.returncode == ExitCode.SUCCESS, first.stderr
        assert f"replayed {len(spooled)} message(s)" in first.stdout
        assert stream(server.url) == spooled
        assert orjson.loads(keys_of(server.url)["result"] or b"") == spooled[-1]
        again = replay(JOB, spool, server.url)  # idempotent: adds nothing
        assert again.returncode == ExitCode.SUCCESS
        assert "nothing to replay" in again.stdout
        assert stream(server.url) == spooled
        # The offset lost (an operator copied the spool back): the stream's tail still
        # tells which messages Redis has.
        (spool_dir(staging) / "replayed").unlink()
        assert replay(JOB, spool, server.url).returncode == ExitCode.SUCCESS
        assert stream(server.url) == spooled
        assert replay("no-such-job", spool, server.url).returncode == ExitCode.SUCCESS
    finally:
        server.stop(kill=True)
    for argv, problem in [
        (("../escape", spool, server.url), "invalid job id"),
        ((JOB, tmp_path / "missing", server.url), "is not a directory"),
        ((JOB, spool, None), "--redis-url"),
        ((JOB, spool, server.url + "?unknown_option=1"), "cannot be used"),
    ]:
        bad = replay(*argv)
        assert bad.returncode == ExitCode.USAGE_CONFIG_ERROR, (argv, bad.stderr)
        assert problem in bad.stderr


_BAD_OPTIONS = st.sampled_from(
    [
        "/0?unknown_option=1",
        "/0?ssl_cert_reqs=bogus",
        "/not-a-number",
        "/0?socket_timeout=soon",
        "/0?db=x",
    ]
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    password=st.text(min_size=4, max_size=30),
    bad=_BAD_OPTIONS,
    scheme=st.sampled_from(["redis", "rediss"]),
)
def test_a_redis_url_redis_py_cannot_use_is_exit_64_without_the_password(
    tmp_path: Path, password: str, bad: str, scheme: str
) -> None:
    from urllib.parse import quote

    assume(password.strip() and "***" not in password)
    if scheme == "redis" and "ssl" in bad:
        bad = "/0?unknown_option=1"  # ssl options only exist for rediss://
    url = f"{scheme}://user:{quote(password, safe='')}@127.0.0.1:1{bad}"
    staging = tmp_path / f"staging-{uuid.uuid4().hex}"
    code, log = run(job_env(staging, JOB, BAQUP_REDIS_URL=url))
    assert code == ExitCode.USAGE_CONFIG_ERROR, log
    assert "BAQUP_REDIS_URL" in log
    forms = {password, quote(password, safe=""), orjson.dumps(password).decode()[1:-1]}
    for form in forms:
        assert form not in log
    assert not spool_dir(staging).exists()  # no work, nothing spooled
