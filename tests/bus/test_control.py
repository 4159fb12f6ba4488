"""The control stream against a real redis-server: cancels, and entries to ignore."""

from __future__ import annotations

import uuid

import orjson
import redis
from redis.typing import EncodableT, FieldT

from baqup_agent._keys import job_keys
from baqup_agent.contract import Cancel
from tests.bus.conftest import AGENT, JOB, BusFactory, LogCapture, cancel, wait_for
from tests.conftest import RedisServer

CONTROL = job_keys(JOB).control


def test_foreign_and_malformed_entries_are_ignored_and_a_cancel_is_seen(
    redis_server: RedisServer, make_bus: BusFactory, log: LogCapture
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    heartbeat = {
        "id": str(uuid.uuid4()),
        "seq": 1,
        "type": "heartbeat",
        "job_id": JOB,
        "agent_id": AGENT,
        "timestamp": "2026-11-27T10:00:00Z",
        "state": "running",
        "intent": "continuing",
        "interval_seconds": 1,
        "ttl_seconds": 3,
        "progress": {"bytes_done": 0, "items_done": 0},
    }
    garbage: list[dict[FieldT, EncodableT]] = [
        {"msg": b"not json at all"},
        {"other": b"no msg field"},
        {"msg": orjson.dumps(heartbeat)},  # valid, but not a control message
        {"msg": cancel(job_id="another-job")},  # addressed to someone else
        {"msg": cancel(extra="field")},  # strict schema: unknown field
        {"msg": cancel(id="not-a-uuid")},
    ]
    for fields in garbage:
        client.xadd(CONTROL, fields)
    valid = cancel()
    client.xadd(CONTROL, {"msg": valid})  # sent before the agent listens: still seen

    bus = make_bus(redis_server.url)
    got: list[Cancel] = []
    bus.on_cancel(got.append)
    wait_for(lambda: got, what="the cancel")
    client.xadd(CONTROL, {"msg": valid})  # the same cancel again: one callback per id
    second = cancel(reason="again")
    client.xadd(CONTROL, {"msg": second})
    wait_for(lambda: len(got) == 2, what="the second cancel")
    bus.close()
    client.close()

    assert [str(c.id) for c in got] == [orjson.loads(valid)["id"], orjson.loads(second)["id"]]
    assert got[0].reason == "operator request"
    assert log.count("ignored a control entry without a msg field") == 1
    assert log.count("ignored an invalid control message") == 3
    assert log.count("ignored a non-control message") == 1
    assert log.count("ignored a cancel for another job") == 1


def test_a_failing_callback_is_logged_and_listening_goes_on(
    redis_server: RedisServer, make_bus: BusFactory, log: LogCapture
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    bus = make_bus(redis_server.url)
    got: list[Cancel] = []

    def broken(_: Cancel) -> None:
        raise RuntimeError("callback bug")

    bus.on_cancel(broken)
    bus.on_cancel(got.append)
    client.xadd(CONTROL, {"msg": cancel()})
    wait_for(lambda: got, what="the second callback")
    assert log.count("cancel callback failed") == 1
    client.close()


def test_the_listener_survives_a_redis_restart(
    redis_server: RedisServer, make_bus: BusFactory, log: LogCapture
) -> None:
    bus = make_bus(redis_server.url)
    got: list[Cancel] = []
    bus.on_cancel(got.append)
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(CONTROL, {"msg": cancel()})
    wait_for(lambda: got, timeout=10, what="a cancel after the restart")
    client.close()
