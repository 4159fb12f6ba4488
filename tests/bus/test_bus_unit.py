"""BusClient over fakeredis and in spool-only mode: fast checks of the protocol rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import orjson
import pytest
from pydantic import ValidationError

from baqup_agent import _bus as bus_module
from baqup_agent._errors import ConfigError
from baqup_agent._keys import RESULT_TTL_SECONDS, job_keys
from baqup_agent._secret import Secret
from baqup_agent.contract import (
    AgentState,
    BusMessage,
    Cancel,
    ExitCode,
    Heartbeat,
    HeartbeatIntent,
    ProgressUpdate,
    Result,
    ResultStatus,
    StateChange,
)
from tests.bus.conftest import JOB, BusFactory, LogCapture, cancel, progress, wait_for
from tests.conftest import stored_value, stream_messages

URL = "redis://fake:6379/0"
KEYS = job_keys(JOB)


class RecordingServer(fakeredis.FakeServer):
    """A fake Redis server that keeps the arguments of every connect_redis call."""

    calls: list[dict[str, Any]]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingServer]:
    """One fake Redis server; every connect_redis call gets a client of it."""
    fake = RecordingServer()
    calls: list[dict[str, Any]] = []

    def connect(url: str, **kw: Any) -> fakeredis.FakeRedis:
        calls.append({"url": url, **kw})
        if not fake.connected:
            import redis

            raise redis.ConnectionError("fake server down")
        return fakeredis.FakeRedis(server=fake)

    monkeypatch.setattr(bus_module, "connect_redis", connect)
    fake.calls = calls
    yield fake


def stream(server: fakeredis.FakeServer, key: str = KEYS.events) -> list[Any]:
    client = fakeredis.FakeRedis(server=server)
    return [BusMessage.model_validate_json(raw).root for raw in stream_messages(client, key)]


def test_messages_are_valid_unique_sequenced_and_utc(server: Any, make_bus: BusFactory) -> None:
    bus = make_bus(URL)
    assert bus.connected and bus.redis_configured
    bus.send_state_change(AgentState.INITIALIZING)
    bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING, "started")
    for i in range(5):
        bus.send_progress(progress(i), message=f"step {i}")
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(5))
    assert bus.send_result(
        ResultStatus.SUCCESS,
        ExitCode.SUCCESS,
        False,
        1.5,
        artifacts=2,
        bytes=500,
        output_path="/out/job",
    )
    messages = stream(server)
    assert [type(m) for m in messages] == [StateChange] * 2 + [ProgressUpdate] * 5 + [
        Heartbeat,
        Result,
    ]
    assert [m.seq for m in messages] == list(range(9))
    assert len({m.id for m in messages}) == 9
    assert all(m.id.version == 4 for m in messages)
    assert all(m.timestamp.utcoffset().total_seconds() == 0 for m in messages)
    raw = stream_messages(fakeredis.FakeRedis(server=server), KEYS.events)[0]
    assert orjson.loads(raw)["timestamp"].endswith("Z")
    assert b"null" not in raw  # unset optional fields are left out, not null
    assert messages[1].reason == "started" and messages[-1].artifacts == 2


def test_heartbeat_key_has_the_ttl_and_the_result_is_kept(
    server: Any, make_bus: BusFactory
) -> None:
    bus = make_bus(URL, config={"BAQUP_HEARTBEAT_INTERVAL": 2})
    client = fakeredis.FakeRedis(server=server)
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.EXTEND, progress(1), 60)
    beat = Heartbeat.model_validate_json(stored_value(client, KEYS.heartbeat))
    assert (beat.interval_seconds, beat.ttl_seconds, beat.extend_seconds) == (2, 6, 60)
    assert 5000 < client.pttl(KEYS.heartbeat) <= 6000  # three intervals
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(2), interval=0.5)
    assert 0 < client.pttl(KEYS.heartbeat) <= 1500  # the sender's own interval counts

    ttl_bus = make_bus(URL, job_id="job-ttl", config={"BAQUP_HEARTBEAT_TTL": 45})
    ttl_bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.CONTINUING, progress(1))
    assert 44_000 < client.pttl(job_keys("job-ttl").heartbeat) <= 45_000

    assert bus.send_result(ResultStatus.FAILED, ExitCode.DATA_ERROR, False, 3.0, error="bad")
    assert bus.result_delivered
    result = Result.model_validate_json(stored_value(client, KEYS.result))
    assert (result.status, result.exit_code, result.error) == ("failed", 65, "bad")
    assert RESULT_TTL_SECONDS - 10 < client.ttl(KEYS.result) <= RESULT_TTL_SECONDS
    assert client.ttl(KEYS.events) > 0  # the stream goes away with the result


def test_free_text_is_redacted(server: Any, make_bus: BusFactory) -> None:
    Secret("hunter2-password")
    bus = make_bus(URL)
    bus.send_state_change(AgentState.FAILED, AgentState.RUNNING, "login hunter2-password failed")
    bus.send_progress(progress(1), message="pw=hunter2-password")
    bus.send_result(
        ResultStatus.FAILED, ExitCode.GENERAL_FAILURE, True, 1.0, error="boom: hunter2-password"
    )
    raw = b"".join(stream_messages(fakeredis.FakeRedis(server=server), KEYS.events))
    assert b"hunter2" not in raw
    assert raw.count(b"[REDACTED]") == 3


def test_an_invalid_message_raises_and_does_not_use_a_seq(
    server: Any, make_bus: BusFactory
) -> None:
    bus = make_bus(URL)
    with pytest.raises(ValidationError):
        bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, -1.0)
    with pytest.raises(ValidationError):
        bus.send_progress(progress(1), message="x" * 5000)
    bus.send_progress(progress(1))
    assert [m.seq for m in stream(server)] == [0]


def test_an_outage_spools_then_replays_in_order(
    server: Any, make_bus: BusFactory, log: LogCapture
) -> None:
    bus = make_bus(URL, result_timeout=0.2)
    for i in range(3):
        bus.send_progress(progress(i))
    server.connected = False
    for i in range(3, 6):
        bus.send_progress(progress(i))
    assert not bus.connected
    assert not bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 1.0)
    assert not bus.result_delivered
    assert bus.spool.has_pending
    assert log.count("Redis unreachable") == 1  # once per outage
    server.connected = True
    bus.close()  # the final replay delivers the spooled result after all
    assert bus.result_delivered
    assert [m.seq for m in stream(server)] == list(range(7))
    assert not bus.spool.has_pending
    assert log.count("replayed the spooled bus messages") == 1


def test_replay_skips_messages_redis_already_has(
    server: Any, make_bus: BusFactory, tmp_path: Path
) -> None:
    # A command can fail after Redis applied it (the reply was lost): the message is
    # then both at the stream's tail and in the spool. Replay must not add it twice.
    spool_root = tmp_path / "staging" / ".spool"
    first = make_bus(URL)
    first.send_progress(progress(0))
    first.close()
    applied = stream_messages(fakeredis.FakeRedis(server=server), KEYS.events)[-1]
    events = spool_root / JOB / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    later = orjson.loads(applied) | {"id": str(uuid.uuid4()), "seq": 1}
    events.write_bytes(applied + b"\n" + orjson.dumps(later) + b"\n")

    restarted = make_bus(URL)  # finds the spool pending and replays it at start
    assert restarted.connected
    assert [m.seq for m in stream(server)] == [0, 1]
    restarted.send_progress(progress(2))
    assert [m.seq for m in stream(server)] == [0, 1, 2]  # seq continues after a restart


def test_seq_continues_from_the_stream_after_a_restart(server: Any, make_bus: BusFactory) -> None:
    first = make_bus(URL)
    for i in range(4):
        first.send_progress(progress(i))
    first.close()
    second = make_bus(URL)
    second.send_progress(progress(9))
    assert [m.seq for m in stream(server)] == [0, 1, 2, 3, 4]


def test_spool_only_mode_is_the_bus(make_bus: BusFactory, log: LogCapture) -> None:
    bus = make_bus()
    assert not bus.redis_configured and not bus.connected
    bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING)
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.COMPLETING, progress(1))
    assert bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 0.1)
    assert bus.result_delivered
    lines = bus.spool.events_path.read_bytes().splitlines()
    types = [BusMessage.model_validate_json(line).root.type for line in lines]
    assert types == ["state_change", "heartbeat", "result"]
    assert bus.spool.path == Path(bus.spool.path.parent) / JOB
    assert bus.spool.path.parent.name == ".spool"  # BAQUP_STAGING_DIR/.spool by default

    got: list[Cancel] = []
    bus.on_cancel(got.append)
    message = cancel(reason="operator")
    with open(bus.spool.control_path, "ab") as f:
        f.write(b"not json\n" + message + b"\n" + message + b"\n")
    wait_for(lambda: got, what="cancel from control.jsonl")
    bus.close()
    assert len(got) == 1 and got[0].reason == "operator"  # the same id counts once
    assert log.count("ignored an invalid control message") == 1


def test_spool_dir_option_and_variable(tmp_path: Path, make_bus: BusFactory) -> None:
    assert make_bus(spool_dir=tmp_path / "opt").spool.path == tmp_path / "opt" / JOB
    bus = make_bus(config={"BAQUP_SPOOL_DIR": str(tmp_path / "var")})
    assert bus.spool.path == tmp_path / "var" / JOB


def test_secret_config_values_are_revealed_only_to_connect(
    server: Any, make_bus: BusFactory, log: LogCapture
) -> None:
    make_bus(Secret(URL), config={"BAQUP_REDIS_PASSWORD": Secret("pw-from-secret")})
    call = server.calls[-1]
    assert (call["url"], call["password"]) == (URL, "pw-from-secret")


def test_a_plain_string_url_password_is_redacted_from_logs(
    make_bus: BusFactory, log: LogCapture
) -> None:
    make_bus("redis://user:plain-pass-123@127.0.0.1:1/0", result_timeout=0.1)
    assert log.count("Redis unreachable") == 1
    assert "plain-pass-123" not in log.getvalue()


def test_a_url_redis_cannot_use_is_a_config_error(make_bus: BusFactory) -> None:
    with pytest.raises(ConfigError, match="BAQUP_REDIS_URL"):
        make_bus("redis://127.0.0.1:notaport/0")
    with pytest.raises(ConfigError, match="database 0"):
        make_bus("redis://127.0.0.1:1/3?cluster=yes")


def test_ids_that_cannot_be_keys_or_directories_are_a_config_error(make_bus: BusFactory) -> None:
    with pytest.raises(ConfigError, match="BAQUP_JOB_ID: String should match pattern"):
        make_bus(job_id="../../etc")
    with pytest.raises(ConfigError, match="BAQUP_AGENT_ID"):
        make_bus(config={"BAQUP_AGENT_ID": "a/b"})
