"""A Redis that accepts connections and does not answer (its process stopped with
SIGSTOP) never holds the job hostage: sends return within the bus's budget, heartbeats
keep their interval (to the spool while Redis hangs), the control file is still
polled, and everything reaches Redis once, in order, when it resumes.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import redis

from baqup_agent._heartbeat import HeartbeatThread
from baqup_agent._job import run_job
from baqup_agent._keys import EVENTS_FILE, SPOOL_SUBDIR, job_keys
from baqup_agent.contract import AgentState, Cancel, ExitCode, HeartbeatIntent
from tests.agent.helpers import SAMPLE_AGENT, agent_command, job_env, process_env
from tests.agent.sample_agent import SampleAgent
from tests.bus.conftest import AGENT, JOB, BusFactory, LogCapture, cancel, progress, wait_for
from tests.conftest import RedisServer, stream_messages

INTERVAL = 1.0  # budget 0.25 s; the gap bound (2 intervals) leaves 0.75 s of slack
HANG = 4.0


@contextmanager
def hung(server: RedisServer) -> Iterator[None]:
    """Redis stopped (connections still accepted by the kernel) for the block."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def stream(url: str, job: str = JOB) -> list[dict[str, object]]:
    client = redis.Redis.from_url(url)
    try:
        return [orjson.loads(m) for m in stream_messages(client, job_keys(job).events)]
    finally:
        client.close()


def test_a_hung_redis_blocks_neither_the_job_nor_the_heartbeats(
    redis_server: RedisServer, make_bus: BusFactory, log: LogCapture
) -> None:
    bus = make_bus(redis_server.url, config={"BAQUP_HEARTBEAT_INTERVAL": INTERVAL})
    assert bus.send_budget == INTERVAL / 4
    beats = HeartbeatThread(bus, AGENT, INTERVAL, bus._log)
    longest_send = 0.0
    sent = 0
    stop = threading.Event()

    def job() -> None:
        nonlocal longest_send, sent
        while not stop.is_set():
            started = time.monotonic()
            bus.send_progress(progress(sent))
            longest_send = max(longest_send, time.monotonic() - started)
            sent += 1
            time.sleep(0.002)

    worker = threading.Thread(target=job)
    beats.start()
    worker.start()
    try:
        time.sleep(1.5)
        with hung(redis_server):
            time.sleep(HANG)
            assert not bus.connected  # spooling, not waiting
        wait_for(lambda: bus.connected, timeout=15, what="the replay after the hang")
        time.sleep(1.5)
    finally:
        stop.set()
        worker.join()
        beats.stop()
    bus.flush()
    messages = stream(redis_server.url)
    progress_seqs = [m["seq"] for m in messages if m["type"] == "progress"]
    assert len(progress_seqs) == sent >= 100
    assert [m["seq"] for m in messages] == list(range(len(messages)))  # none lost or doubled
    stamps = sorted(
        datetime.fromisoformat(str(m["timestamp"]).replace("Z", "+00:00")).timestamp()
        for m in messages
        if m["type"] == "heartbeat"
    )
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) >= HANG / INTERVAL
    assert max(gaps) <= 2 * INTERVAL, gaps
    assert longest_send < INTERVAL, longest_send  # the job waited one budget at most
    assert log.count("Redis unreachable") == 1  # one outage, one warning
    assert log.count("Redis reachable") == 1
    key = redis.Redis.from_url(redis_server.url)
    assert key.exists(job_keys(JOB).heartbeat)  # refreshed by the replay
    key.close()


def test_the_control_file_is_polled_while_redis_hangs(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    bus = make_bus(redis_server.url)
    seen: list[Cancel] = []
    bus.on_cancel(seen.append)
    time.sleep(0.3)  # the listener is blocked in XREAD on a healthy Redis
    with hung(redis_server):
        time.sleep(0.5)
        bus.spool.path.mkdir(parents=True, exist_ok=True)
        with open(bus.spool.control_path, "ab") as f:
            f.write(cancel() + b"\n")
        # The Redis thread is stuck for its command timeout (2 s here, plus the
        # block); the file thread is not.
        wait_for(lambda: seen, timeout=1.5, what="the cancel from control.jsonl")


def test_sigterm_while_redis_hangs_still_delivers_the_cancelled_result(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    staging = tmp_path / "staging"
    env = job_env(
        staging,
        JOB,
        BAQUP_REDIS_URL=redis_server.url,
        BAQUP_GRACE_PERIOD=4,
        BAQUP_TEST_BEHAVIOUR="slow",
        BAQUP_TEST_SECONDS=60,
    )
    agent = subprocess.Popen(
        agent_command(SAMPLE_AGENT), env=process_env(env), stderr=subprocess.PIPE
    )
    try:
        wait_for(
            lambda: any(m.get("to_state") == "running" for m in stream(redis_server.url)),
            timeout=20,
        )
        with hung(redis_server):
            agent.send_signal(signal.SIGTERM)
            started = time.monotonic()
            agent.wait(timeout=30)
            took = time.monotonic() - started
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == ExitCode.GENERAL_FAILURE
    assert took < 4 + 2  # within the grace period, plus process exit
    spooled = (staging / SPOOL_SUBDIR / JOB / EVENTS_FILE).read_bytes().splitlines()
    result = orjson.loads(spooled[-1])
    assert result["type"] == "result" and result["status"] == "cancelled"


@pytest.mark.parametrize("run_index", range(4))
def test_after_a_forced_exit_nothing_follows_the_result(tmp_path: Path, run_index: int) -> None:
    staging = tmp_path / "staging"
    env = job_env(
        staging,
        f"job-forced-{run_index}",
        BAQUP_HEARTBEAT_INTERVAL=0.01,
        BAQUP_GRACE_PERIOD=1.0,
        BAQUP_TEST_BEHAVIOUR="stubborn",  # ignores the cancel: the grace period runs out
        BAQUP_TEST_SECONDS=60,
    )
    spool = staging / SPOOL_SUBDIR / f"job-forced-{run_index}" / EVENTS_FILE
    agent = subprocess.Popen(agent_command(SAMPLE_AGENT), env=process_env(env))
    try:
        wait_for(lambda: spool.exists() and b'"running"' in spool.read_bytes(), timeout=20)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    time.sleep(0.2)  # a heartbeat thread that outlived the result would write by now
    messages = [orjson.loads(line) for line in spool.read_bytes().splitlines()]
    results = [i for i, m in enumerate(messages) if m["type"] == "result"]
    assert results == [len(messages) - 1], messages[results[0] :] if results else messages[-3:]
    assert messages[-1]["status"] == "cancelled"


def test_a_stale_connection_after_a_restart_is_no_outage_and_an_outage_logs_once(
    redis_server: RedisServer, make_bus: BusFactory, log: LogCapture
) -> None:
    bus = make_bus(redis_server.url)
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(0))
    redis_server.restart()  # the pooled connection is now stale
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(1))
    wait_for(lambda: bus.connected, what="the reconnect")
    assert log.count("Redis unreachable") == 0
    redis_server.stop(kill=True)
    for i in range(2, 40):
        bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(i))
        time.sleep(0.01)
    redis_server.start()
    wait_for(lambda: bus.connected, timeout=15, what="the replay")
    for i in range(40, 45):  # after the recovery, stale or not: no second warning
        bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(i))
    assert log.count("Redis unreachable") == 1
    assert log.count("Redis reachable") == 1


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_spool_root_is_created_0750(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        code = run_job(
            SampleAgent,
            environ=job_env(tmp_path / "staging", f"job-{uuid.uuid4().hex[:8]}"),
            install_signals=False,
            log_stream=io.StringIO(),
        )
    finally:
        os.umask(old)
    assert code == ExitCode.SUCCESS
    root = tmp_path / "staging" / SPOOL_SUBDIR
    assert root.stat().st_mode & 0o777 == 0o750
    for job_dir in root.iterdir():
        assert job_dir.stat().st_mode & 0o777 == 0o750
