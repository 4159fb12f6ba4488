"""Redis outages against a real redis-server: kill mid-job, down at start, replay."""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from baqup_agent._keys import job_keys
from baqup_agent._reader import JobEvents
from baqup_agent.contract import ExitCode, ProgressUpdate, ResultStatus
from tests.bus.conftest import (
    JOB,
    BusFactory,
    LogCapture,
    all_of,
    progress,
    progress_in_redis,
    seq_of,
    wait_for,
)
from tests.conftest import RedisServer, stream_messages

N = 1200


def durable_server(tmp_path: Path) -> RedisServer:
    """A server that keeps what it acknowledged across a kill (AOF, fsync always), so
    that "none lost" measures the agent, not a Redis configured to forget."""
    server = RedisServer(
        tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]
    )
    server.start()
    return server


def test_redis_killed_mid_job_loses_and_doubles_nothing(
    tmp_path: Path, make_bus: BusFactory, log: LogCapture
) -> None:
    server = durable_server(tmp_path)
    try:
        bus = make_bus(server.url)
        assert bus.connected
        sent = threading.Event()

        def job() -> None:
            for i in range(N):
                bus.send_progress(progress(i), message=f"m{i}")
                if i % 50 == 0:
                    sent.wait(0.005)  # a paced job, so the outage falls in its middle
            sent.set()

        sender = threading.Thread(target=job)
        sender.start()
        wait_for(lambda: bus._seq >= 300, what="300 messages before the kill")
        server.stop(kill=True)
        wait_for(lambda: bus.spool.size > 20_000, timeout=20, what="messages spooled")
        seq_at_restart = bus._seq
        server.start()
        sender.join(timeout=60)
        assert not sender.is_alive()
        assert seq_at_restart < N  # Redis came back while the job was still sending
        bus.close()

        assert bus.spool.size > 0 and not bus.spool.has_pending
        assert log.count("Redis unreachable") == 1
        in_redis = progress_in_redis(server.url)
        # Redis alone holds each message exactly once, in seq order: none doubled.
        assert [m.seq for m in in_redis] == list(range(N))
        assert len({m.id for m in in_redis}) == N

        events = JobEvents(JOB, redis_url=server.url, spool_dir=bus.spool.path.parent)
        messages = events.read()
        events.close()
        assert len(messages) == N  # spool + Redis, de-duplicated by id: none lost
        assert [seq_of(m) for m in messages] == list(range(N))
        assert [m.message for m in all_of(ProgressUpdate, messages)] == [f"m{i}" for i in range(N)]
    finally:
        server.stop(kill=True)


def test_redis_down_at_start_then_an_agent_restart_replays(
    tmp_path: Path, make_bus: BusFactory, log: LogCapture
) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet
    first = make_bus(server.url, result_timeout=0.3)
    assert first.redis_configured and not first.connected
    for i in range(10):
        first.send_progress(progress(i))
    assert not first.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 2.0)
    first.close()
    assert not first.result_delivered  # -> the agent exits 75 (COMPLETED_UNREPORTED)
    spooled = first.spool.events_path.read_bytes().splitlines()
    assert len(spooled) == 11

    server.start()
    try:
        second = make_bus(server.url)  # the same job's spool, found at start
        assert second.connected and not second.spool.has_pending
        client = redis.Redis.from_url(server.url)
        stream = stream_messages(client, job_keys(JOB).events)
        assert stream == spooled  # original ids, seq and bytes, in order
        assert client.get(job_keys(JOB).result) == spooled[-1]
        client.close()
        second.send_progress(progress(99))
        events = JobEvents(JOB, redis_url=server.url, spool_dir=second.spool.path.parent)
        messages = events.read()
        events.close()
        assert [seq_of(m) for m in messages] == list(range(12))  # de-duplicated, seq continued
    finally:
        server.stop(kill=True)


def test_a_restarted_redis_is_used_again_without_losing_the_in_flight_message(
    tmp_path: Path, make_bus: BusFactory
) -> None:
    server = durable_server(tmp_path)
    try:
        bus = make_bus(server.url)
        bus.send_progress(progress(0))
        bus.flush()
        bus.send_progress(progress(1))  # sent, reply not read yet
        server.restart()
        bus.send_progress(progress(2))  # finds the dead connection, spools, reconnects
        bus.flush()
        wait_for(lambda: bus.connected, what="the background replay")
        assert [m.seq for m in progress_in_redis(server.url)] == [0, 1, 2]
    finally:
        server.stop(kill=True)


def test_a_message_whose_reply_never_came_is_spooled_not_lost(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    bus = make_bus(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    admin.client_pause(10_000, all=False)  # CLIENT PAUSE 10000 WRITE
    admin.close()
    bus.send_progress(progress(0))  # in the socket, but Redis holds it unapplied
    redis_server.restart()  # ...and dies with it
    bus.send_progress(progress(1))  # reads the missing reply: both go to the spool first
    bus.flush()
    wait_for(lambda: bus.connected, what="the background replay")
    assert [m.seq for m in progress_in_redis(redis_server.url)] == [0, 1]
