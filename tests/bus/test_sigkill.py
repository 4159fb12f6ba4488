"""An agent killed with SIGKILL disappears from Redis by heartbeat expiry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from baqup_agent._keys import job_keys
from baqup_agent.contract import Heartbeat
from tests.bus.conftest import wait_for
from tests.conftest import RedisServer, stored_value

INTERVAL = 0.2
TTL = 0.6
SLACK = 0.25  # our own polling and scheduling on a busy machine, not Redis's expiry

AGENT = """
import sys, threading
from baqup_agent._bus import BusClient
from baqup_agent._heartbeat import HeartbeatThread
from baqup_agent._logger import Logger
config = {"BAQUP_JOB_ID": "job-kill", "BAQUP_AGENT_ID": "doomed", "BAQUP_ROLE": "backup",
          "BAQUP_REDIS_URL": sys.argv[1],
          "BAQUP_HEARTBEAT_INTERVAL": float(sys.argv[2]), "BAQUP_HEARTBEAT_TTL": float(sys.argv[3]),
          "BAQUP_STAGING_DIR": sys.argv[4]}
logger = Logger("job-kill", "doomed")
bus = BusClient(config, logger)
HeartbeatThread(bus, "doomed", bus.heartbeat_interval, logger).start()
threading.Event().wait()  # the job "works" until it is killed
"""


def test_heartbeat_key_expires_within_the_ttl_after_sigkill(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key = job_keys("job-kill").heartbeat
    client = redis.Redis.from_url(redis_server.url)
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, redis_server.url, str(INTERVAL), str(TTL), str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: client.exists(key), timeout=15, what="the agent's first heartbeat")
        first = Heartbeat.model_validate_json(stored_value(client, key))
        assert first.ttl_seconds == TTL and first.interval_seconds == INTERVAL
        # alive: the key is refreshed by newer beats and never outlives the TTL
        wait_for(
            lambda: Heartbeat.model_validate_json(stored_value(client, key)).seq > first.seq + 2,
            what="refreshed heartbeats",
        )
        assert 0 < client.pttl(key) <= TTL * 1000

        os.kill(agent.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        agent.wait(timeout=10)
        while client.exists(key):
            assert time.monotonic() - killed_at < TTL + SLACK, "heartbeat key outlived the TTL"
            time.sleep(0.01)
        gone_after = time.monotonic() - killed_at
        assert gone_after <= TTL + SLACK
        assert agent.returncode == -signal.SIGKILL
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        assert agent.stderr is not None
        agent.stderr.close()
        client.close()
