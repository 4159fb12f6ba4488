"""Password and ACL-user authentication against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from baqup_agent._keys import job_keys
from baqup_agent._reader import JobEvents
from baqup_agent._secret import Secret
from baqup_agent.contract import AgentState, ExitCode, HeartbeatIntent, ResultStatus
from tests.bus.conftest import BusFactory, LogCapture, progress
from tests.conftest import RedisServer

ADMIN_PASSWORD = "admin-s3cret-pw"
AGENT_PASSWORD = "agent-s3cret-pw"
# The least an agent needs (docs/bus.md), on its own jobs' keys only.
AGENT_ACL = [
    "agent",
    "on",
    f">{AGENT_PASSWORD}",
    "~baqup:*",
    "-@all",
    "+ping",
    "+info",
    "+xadd",
    "+xread",
    "+xrange",
    "+xrevrange",
    "+set",
    "+get",
    "+expire",
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path_factory.mktemp("auth"),
        password=ADMIN_PASSWORD,
        extra_args=["--user", *AGENT_ACL],
    )
    server.start()
    yield server
    server.stop(kill=True)


def url(server: RedisServer, auth: str = "") -> str:
    return f"redis://{auth}127.0.0.1:{server.port}/0"


def run_job(make_bus: BusFactory, address: str, job_id: str, **config: object) -> bool:
    bus = make_bus(address, job_id=job_id, config=dict(config), result_timeout=0.3)
    bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING)
    bus.send_heartbeat(AgentState.RUNNING, HeartbeatIntent.COMPLETING, progress(1))
    delivered = bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 1.0)
    bus.close()
    return delivered


def stream_length(server: RedisServer, job_id: str) -> int:
    admin = redis.Redis(port=server.port, password=ADMIN_PASSWORD)
    try:
        return int(admin.xlen(job_keys(job_id).events))
    finally:
        admin.close()


def test_password_in_the_url(secured: RedisServer, make_bus: BusFactory) -> None:
    assert run_job(make_bus, url(secured, f":{ADMIN_PASSWORD}@"), "job-url-pw")
    assert stream_length(secured, "job-url-pw") == 3


def test_password_variable_as_a_secret(secured: RedisServer, make_bus: BusFactory) -> None:
    assert run_job(
        make_bus, url(secured), "job-var-pw", BAQUP_REDIS_PASSWORD=Secret(ADMIN_PASSWORD)
    )
    assert stream_length(secured, "job-var-pw") == 3


def test_acl_user_with_the_least_permissions(secured: RedisServer, make_bus: BusFactory) -> None:
    address = url(secured, f"agent:{AGENT_PASSWORD}@")
    assert run_job(make_bus, address, "job-acl")
    assert stream_length(secured, "job-acl") == 3
    events = JobEvents("job-acl", redis_url=address)  # the reader gets by with it too
    assert [m.type for m in events.read()] == ["state_change", "heartbeat", "result"]
    events.close()


def test_wrong_password_is_a_clear_error_and_the_spool_takes_over(
    secured: RedisServer, make_bus: BusFactory, log: LogCapture, tmp_path: Path
) -> None:
    delivered = run_job(make_bus, url(secured, "agent:wrong-password@"), "job-bad-pw")
    assert not delivered  # the agent exits 75: the result is only in the spool
    assert log.count("Redis refused the credentials") == 1
    assert '"level":"ERROR"' in next(line for line in log.lines() if "refused" in line)
    assert "wrong-password" not in log.getvalue()
    spooled = tmp_path / "staging" / ".spool" / "job-bad-pw" / "events.jsonl"
    assert len(spooled.read_bytes().splitlines()) == 3
    assert stream_length(secured, "job-bad-pw") == 0


def test_no_password_at_all_falls_back_too(
    secured: RedisServer, make_bus: BusFactory, log: LogCapture
) -> None:
    assert not run_job(make_bus, url(secured), "job-no-pw")
    assert log.count("Redis refused the credentials") == 1
