"""Helpers of the bus tests: a bus client with a captured log, and a Redis Cluster."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis

from baqup_agent._bus import BusClient
from baqup_agent._keys import job_keys
from baqup_agent._logger import Logger
from baqup_agent._reader import Message
from baqup_agent.contract import Cancel, LogLevel, Progress, ProgressUpdate
from baqup_agent.testing import LogCapture, cancel_message
from tests.conftest import RedisServer, free_port, require_binary, stream_messages

JOB = "job-bus-1"
AGENT = "agent-bus-1"


@pytest.fixture
def log() -> LogCapture:
    return LogCapture()


BusFactory = Callable[..., BusClient]


@pytest.fixture
def make_bus(tmp_path: Path, log: LogCapture) -> Iterator[BusFactory]:
    """Build BusClients (closed at the end): make_bus(url, job_id=..., **options)."""
    made: list[BusClient] = []

    def make(
        url: Any = None, *, job_id: str = JOB, config: dict[str, Any] | None = None, **options: Any
    ) -> BusClient:
        cfg: dict[str, Any] = {
            "BAQUP_JOB_ID": job_id,
            "BAQUP_AGENT_ID": AGENT,
            "BAQUP_ROLE": "backup",
            "BAQUP_STAGING_DIR": str(tmp_path / "staging"),
        }
        if url is not None:
            cfg["BAQUP_REDIS_URL"] = url
        cfg.update(config or {})
        options.setdefault("connect_timeout", 0.5)
        options.setdefault("command_timeout", 2.0)
        bus = BusClient(cfg, Logger(job_id, AGENT, LogLevel.DEBUG, stream=log), **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()


def progress(i: int) -> Progress:
    return Progress(bytes_done=i * 100, items_done=i)


def cancel(**fields: Any) -> bytes:
    """A valid cancel of ``JOB`` as JSON, with ``fields`` overriding its members."""
    return orjson.dumps(cancel_message(JOB, **fields))


def progress_in_redis(url: str) -> list[ProgressUpdate]:
    """The progress messages of ``JOB``'s events stream, in stream order."""
    client = redis.Redis.from_url(url)
    try:
        entries = stream_messages(client, job_keys(JOB).events)
    finally:
        client.close()
    return [ProgressUpdate.model_validate_json(raw) for raw in entries]


def seq_of(message: Message) -> int:
    """``message``'s seq; a cancel (which has none) where a job's event belongs fails."""
    assert not isinstance(message, Cancel), f"a cancel among the job's events: {message!r}"
    return message.seq


M = TypeVar("M", bound=Message)


def all_of(kind: type[M], messages: Iterable[Message]) -> list[M]:
    """``messages``, each of which must be a ``kind``."""
    out: list[M] = []
    for message in messages:
        assert isinstance(message, kind), f"not a {kind.__name__}: {message!r}"
        out.append(message)
    return out


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


def _cluster_ok(client: redis.Redis) -> bool:
    return bool(client.cluster("info")["cluster_state"] == "ok")


class Cluster:
    """Three redis-server masters on free loopback ports, joined by redis-cli."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [RedisServer(workdir / f"node{i}") for i in range(3)]

    def start(self) -> None:
        cli = require_binary("redis-cli")
        for node in self.nodes:
            conf = node.workdir / "nodes.conf"
            # an explicit bus port: the default (port + 10000) may be taken or above 65535
            node.extra_args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(conf),
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                "5000",
            ]
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout.decode() + created.stderr.decode()
        import redis

        for node in self.nodes:
            client = redis.Redis(port=node.port)
            wait_for(partial(_cluster_ok, client), timeout=30, what="cluster_state:ok")
            client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


__all__ = ["AGENT", "JOB", "Cluster", "LogCapture", "free_port", "progress", "wait_for"]
