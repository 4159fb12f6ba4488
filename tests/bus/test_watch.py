"""`baqup-agent watch` for people on call: Redis restarts, exit-75 jobs, empty jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from baqup_agent._bus import BusClient
from baqup_agent._reader import JobEvents
from baqup_agent.contract import AgentState, ExitCode, ResultStatus
from tests.bus.conftest import JOB, BusFactory, progress, wait_for
from tests.conftest import RedisServer


def watch_process(*argv: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")}
    return subprocess.Popen(
        [sys.executable, "-m", "baqup_agent", "watch", JOB, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def success(bus: BusClient) -> None:
    bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 1.0, timeout=0.2)


def test_watch_survives_a_redis_restart_and_prints_each_entry_once(
    tmp_path: Path, make_bus: BusFactory
) -> None:
    server = RedisServer(
        tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]
    )
    server.start()
    watcher = watch_process("--redis-url", server.url)
    try:
        bus = make_bus(server.url)
        bus.send_state_change(AgentState.INITIALIZING)
        for i in range(20):
            bus.send_progress(progress(i), message=f"before {i}")
        bus.flush()
        assert watcher.stdout is not None
        printed = [watcher.stdout.readline() for _ in range(21)]  # then it blocks in XREAD
        server.stop(kill=True)
        time.sleep(1.0)  # the watcher reconnects with backoff meanwhile
        server.start()
        for i in range(20, 40):
            bus.send_progress(progress(i), message=f"after {i}")
        success(bus)
        wait_for(lambda: bus.connected, timeout=15)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
        server.stop(kill=True)
    assert watcher.returncode == 0, err
    lines = [line.rstrip("\n") for line in printed] + out.splitlines()
    seqs = [int(line.split("#")[1].split()[0]) for line in lines]
    assert seqs == list(range(42)), lines  # each once, in order, the result last
    assert "Redis unreachable" in err
    assert "Z  " in lines[0]  # the time carries its zone (UTC)


def test_follow_gives_up_after_the_documented_time_without_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # never started
    events = JobEvents(JOB, redis_url=server.url, connect_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        list(events.follow(redis_give_up=1.0))
    assert time.monotonic() - started >= 1.0


def test_an_exit_75_job_is_shown_as_such_then_as_replayed(
    tmp_path: Path, make_bus: BusFactory
) -> None:
    server = RedisServer(tmp_path / "redis")
    spool = tmp_path / "spool"
    bus = make_bus(server.url, spool_dir=spool, result_timeout=0.2)
    bus.send_state_change(AgentState.INITIALIZING)
    success(bus)
    bus.close()
    assert not bus.result_delivered  # the agent would exit 75

    shown = watch_process("--redis-url", server.url, "--spool-dir", str(spool), "--no-follow")
    out, _ = shown.communicate(timeout=60)
    result = out.splitlines()[-1]
    assert "exit 75 (COMPLETED_UNREPORTED)" in result and "only the spool" in result
    assert "exit 0 (SUCCESS)" not in result

    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")}
        replay = [sys.executable, "-m", "baqup_agent", "replay", JOB, "--spool-dir", str(spool)]
        subprocess.run([*replay, "--redis-url", server.url], env=env, check=True, timeout=60)
        shown = watch_process("--redis-url", server.url, "--spool-dir", str(spool), "--no-follow")
        out, _ = shown.communicate(timeout=60)
    finally:
        server.stop(kill=True)
    result = out.splitlines()[-1]
    assert "replayed to Redis at" in result and "Z" in result.split("replayed to Redis at")[1]
    assert "exit 0 (SUCCESS)" not in result


def test_watch_says_when_there_is_nothing_or_what_it_waits_for(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    empty = watch_process("--redis-url", redis_server.url, "--no-follow")
    _, err = empty.communicate(timeout=60)
    assert empty.returncode == ExitCode.GENERAL_FAILURE
    assert f"no message of job {JOB}" in err

    waiting = watch_process("--redis-url", redis_server.url)
    try:
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
    finally:
        waiting.kill()
        waiting.communicate()
    assert "waiting for job" in line and "--spool-dir" in line
