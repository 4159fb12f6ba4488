"""A whole job's traffic on a real three-master Redis Cluster."""

from __future__ import annotations

from typing import Any, cast

import orjson
from redis.cluster import RedisCluster
from redis.crc import key_slot

from baqup_agent._heartbeat import HeartbeatThread
from baqup_agent._keys import job_keys
from baqup_agent._reader import JobEvents
from baqup_agent.contract import AgentState, Cancel, ExitCode, HeartbeatIntent, ResultStatus
from baqup_agent.testing import cancel_message
from tests.bus.conftest import AGENT, BusFactory, Cluster, LogCapture, progress, seq_of, wait_for


def job_on_another_node(client: RedisCluster, first_port: int) -> str:
    """A job id whose slot is not served by the node the agent connects to."""
    for n in range(1000):
        job_id = f"job-cluster-{n}"
        # redis-py leaves RedisCluster.get_node_from_key unannotated
        node = cast(Any, client).get_node_from_key(job_keys(job_id).events)
        if node.port != first_port:
            return job_id
    raise AssertionError("every job id landed on the first node")


def test_a_whole_job_on_a_cluster(cluster: Cluster, make_bus: BusFactory, log: LogCapture) -> None:
    controller = RedisCluster.from_url(cluster.url)
    job_id = job_on_another_node(controller, cluster.nodes[0].port)
    keys = job_keys(job_id)
    assert len({key_slot(k.encode()) for k in keys}) == 1  # the hash tag: one slot

    bus = make_bus(cluster.url, job_id=job_id, config={"BAQUP_HEARTBEAT_INTERVAL": 0.05})
    assert bus.connected
    assert isinstance(bus._redis, RedisCluster)  # detected from INFO, no option needed
    got: list[Cancel] = []
    bus.on_cancel(got.append)
    bus.send_state_change(AgentState.INITIALIZING)
    bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING)
    beats = HeartbeatThread(bus, AGENT, 0.05, bus._log)
    beats.start()
    for i in range(20):
        bus.send_progress(progress(i))
    wait_for(lambda: beats.beats >= 3, what="heartbeats")
    assert 0 < controller.pttl(keys.heartbeat) <= 150

    controller.xadd(keys.control, {"msg": orjson.dumps(cancel_message(job_id, reason="stop"))})
    wait_for(lambda: got, what="the cancel on the cluster")
    beats.set_intent(HeartbeatIntent.FAILING)
    beats.stop(timeout=2)
    bus.send_state_change(AgentState.FAILED, AgentState.RUNNING, "cancelled")
    assert bus.send_result(ResultStatus.CANCELLED, ExitCode.GENERAL_FAILURE, True, 0.5)
    bus.close()

    assert got[0].reason == "stop"
    assert controller.get(keys.result) is not None
    events = JobEvents(job_id, redis_url=cluster.url)
    messages = events.read()
    events.close()
    assert [seq_of(m) for m in messages] == list(range(len(messages)))
    types = [m.type for m in messages]
    assert types.count("progress") == 20 and types.count("heartbeat") >= 3
    assert types[-1] == "result"
    assert "Redis unreachable" not in log.getvalue()
    controller.close()
