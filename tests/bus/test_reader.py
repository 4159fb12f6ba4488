"""JobEvents and `baqup-agent watch`: merge, de-duplication, validation, following."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis

from baqup_agent._bus import BusClient
from baqup_agent._cli import build_parser
from baqup_agent._keys import job_keys
from baqup_agent._logger import Logger
from baqup_agent._reader import JobEvents, format_event, watch_command
from baqup_agent.contract import (
    AgentState,
    BusMessage,
    ExitCode,
    HeartbeatIntent,
    Progress,
    ResultStatus,
)
from tests.bus.conftest import JOB, BusFactory, LogCapture, progress, seq_of
from tests.conftest import RedisServer, stream_messages

KEYS = job_keys(JOB)


def a_job(bus: BusClient) -> None:
    bus.send_state_change(AgentState.INITIALIZING)
    bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING)
    bus.send_heartbeat(
        AgentState.RUNNING,
        HeartbeatIntent.EXTEND,
        Progress(bytes_done=3 << 20, items_done=3, bytes_total=6 << 20, items_total=6),
        120,
    )
    bus.send_progress(progress(4), message="half way")
    bus.send_result(
        ResultStatus.SUCCESS,
        ExitCode.SUCCESS,
        False,
        12.25,
        artifacts=2,
        bytes=6 << 20,
        output_path="/staging/job",
    )


def reader_log() -> tuple[Logger, LogCapture]:
    stream = LogCapture()
    return Logger(JOB, "reader", stream=stream), stream


def test_read_merges_redis_and_spool_and_skips_invalid_entries(
    redis_server: RedisServer, make_bus: BusFactory, tmp_path: Path
) -> None:
    bus = make_bus(redis_server.url)
    a_job(bus)
    bus.close()
    client = redis.Redis.from_url(redis_server.url)
    entries = stream_messages(client, KEYS.events)
    client.xadd(KEYS.events, {"msg": b"{broken"})
    client.xadd(KEYS.events, {"nomsg": b"x"})
    client.xadd(KEYS.events, {"msg": entries[2].replace(JOB.encode(), b"job-other")})
    client.close()
    # the spool holds a replayed copy of two messages (same ids) and one of its own junk
    spool = tmp_path / "spool"
    (spool / JOB).mkdir(parents=True)
    (spool / JOB / "events.jsonl").write_bytes(
        entries[3] + b"\n" + entries[1] + b"\n" + b'{"type":"progress"}\n'
    )
    logger, log = reader_log()
    events = JobEvents(JOB, redis_url=redis_server.url, spool_dir=spool, logger=logger)
    messages = events.read()
    events.close()
    assert [seq_of(m) for m in messages] == [0, 1, 2, 3, 4]
    assert [m.type for m in messages][-1] == "result"
    assert log.count("skipped an invalid message") == 2
    assert log.count("skipped an entry without a msg field") == 1
    assert log.count("skipped a message of another job") == 1


def test_read_falls_back_to_the_spool_and_to_the_result_key(
    redis_server: RedisServer, make_bus: BusFactory, tmp_path: Path
) -> None:
    bus = make_bus(spool_dir=tmp_path / "spool")  # spool-only job
    a_job(bus)
    bus.close()
    logger, log = reader_log()
    dead = "redis://127.0.0.1:1/0"
    events = JobEvents(
        JOB, redis_url=dead, spool_dir=tmp_path / "spool", logger=logger, connect_timeout=0.2
    )
    assert len(events.read()) == 5
    assert log.count("Redis unreachable; reading the spool only") == 1
    with pytest.raises(redis.ConnectionError):  # nothing to fall back on: say so
        JobEvents(JOB, redis_url=dead, connect_timeout=0.2).read()

    on_redis = make_bus(redis_server.url, job_id="job-trimmed")
    a_job(on_redis)
    on_redis.close()
    client = redis.Redis.from_url(redis_server.url)
    client.delete(job_keys("job-trimmed").events)  # trimmed or expired stream
    client.close()
    late = JobEvents("job-trimmed", redis_url=redis_server.url)
    assert [m.type for m in late.read()] == ["result"]
    late.close()


def test_follow_yields_live_messages_and_stops_at_the_result(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    bus = make_bus(redis_server.url)
    bus.send_state_change(AgentState.INITIALIZING)
    bus.flush()

    def rest_of_job() -> None:
        time.sleep(0.2)
        bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING)
        for i in range(5):
            bus.send_progress(progress(i))
            time.sleep(0.02)
        bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 1.0)

    worker = threading.Thread(target=rest_of_job)
    worker.start()
    events = JobEvents(JOB, redis_url=redis_server.url)
    seen = [seq_of(m) for m in events.follow(poll_interval=0.05, timeout=10)]
    worker.join()
    events.close()
    assert seen == list(range(8))


def test_follow_tails_the_spool_and_stops_at_a_timeout(
    make_bus: BusFactory, tmp_path: Path
) -> None:
    bus = make_bus(spool_dir=tmp_path / "spool")
    bus.send_state_change(AgentState.INITIALIZING)
    events = JobEvents(JOB, spool_dir=tmp_path / "spool")
    follower = events.follow(poll_interval=0.02, timeout=0.5)
    assert seq_of(next(follower)) == 0
    bus.send_progress(progress(1))
    assert seq_of(next(follower)) == 1
    t0 = time.monotonic()
    assert list(follower) == []  # no result: ends at the timeout
    assert time.monotonic() - t0 < 1.5


def test_format_event_lines() -> None:
    lines = []
    for raw in BusMessage.model_json_schema()["examples"]:
        lines.append(format_event(BusMessage.model_validate_json(orjson.dumps(raw)).root))
    state, heartbeat, result, cancel = lines
    assert state == "2026-11-27 10:00:00.000Z  fs-agent-1 #0     state_change  - -> initializing"
    assert "running  extend +120s  1.0 MiB, 12 items" in heartbeat
    assert "success  exit 0 (SUCCESS)  60.5 s  1 artifact, 1.0 MiB  -> /staging/job-1" in result
    assert cancel.endswith("cancel        operator request")


def watch(*argv: str) -> int:
    return watch_command(build_parser().parse_args(["watch", *argv]))


def test_watch_prints_one_line_per_event(
    make_bus: BusFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BAQUP_REDIS_URL", "BAQUP_SPOOL_DIR", "BAQUP_STAGING_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert watch(JOB, "--no-follow") == 64
    assert "--redis-url or --spool-dir" in capsys.readouterr().err

    bus = make_bus(spool_dir=tmp_path / "spool")
    a_job(bus)
    bus.close()
    assert watch(JOB, "--spool-dir", str(tmp_path / "spool"), "--no-follow") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    assert "half way" in out[3] and "exit 0 (SUCCESS)" in out[4]

    monkeypatch.setenv("BAQUP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("BAQUP_SPOOL_DIR", str(tmp_path / "spool"))
    assert watch(JOB, "--json") == 0  # follows, and the result is already there: exits
    out = capsys.readouterr().out.splitlines()
    assert [seq_of(BusMessage.model_validate_json(line).root) for line in out] == list(range(5))


def test_the_watch_subcommand_runs(make_bus: BusFactory, tmp_path: Path) -> None:
    bus = make_bus(spool_dir=tmp_path / "spool")
    a_job(bus)
    bus.close()
    done = subprocess.run(
        [sys.executable, "-m", "baqup_agent", "watch", JOB, "--spool-dir", str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 5
