"""Jobs for tests: environments, in-process runs on the spool bus, outputs, cancels."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baqup_agent._keys import CONTROL_FILE, EVENTS_FILE, MESSAGE_FIELD, default_spool_dir, job_keys
from baqup_agent.contract.wire import MANIFEST_FILE
from baqup_agent.testing._logs import LogCapture

if TYPE_CHECKING:
    from baqup_agent._agent import Agent


def job_env(
    staging: str | os.PathLike[str],
    job_id: str = "job-1",
    role: str = "backup",
    *,
    agent_id: str = "agent-1",
    **extra: object,
) -> dict[str, str]:
    """The ``BAQUP_*`` variables of one job on the spool bus (no Redis), as strings.

    ``extra`` adds or overrides variables (``BAQUP_RESTORE_SOURCE=...``, the agent's
    own); values are converted with ``str``. The heartbeat interval is short (0.2 s) so
    that a test sees heartbeats without waiting.
    """
    env = {
        "BAQUP_JOB_ID": job_id,
        "BAQUP_AGENT_ID": agent_id,
        "BAQUP_ROLE": role,
        "BAQUP_STAGING_DIR": str(staging),
        "BAQUP_HEARTBEAT_INTERVAL": "0.2",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def process_env(job: Mapping[str, str]) -> dict[str, str]:
    """The environment of an agent subprocess: this process's without ``BAQUP_*``, plus
    ``job``'s variables (so that no variable of the test runner leaks into the job)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")}
    return {**base, **job}


def _spool_job_dir(env: Mapping[str, str]) -> Path:
    spool = default_spool_dir(env.get("BAQUP_SPOOL_DIR"), env.get("BAQUP_STAGING_DIR"))
    if spool is None:
        raise ValueError("the job environment has neither BAQUP_SPOOL_DIR nor BAQUP_STAGING_DIR")
    return spool / env["BAQUP_JOB_ID"]


def spool_messages(
    staging: str | os.PathLike[str],
    job_id: str = "job-1",
    *,
    spool_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Every message job ``job_id`` spooled (``events.jsonl`` in ``spool_dir``, by
    default ``staging/.spool``), parsed, in order; empty when it spooled nothing."""
    spool = default_spool_dir(str(spool_dir) if spool_dir else None, str(staging))
    assert spool is not None  # staging is given
    path = spool / job_id / EVENTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@dataclass
class AgentRun:
    """What one in-process job did: its exit code, bus messages, log and output."""

    exit_code: int
    messages: list[dict[str, Any]]
    """The agent->controller messages of the spool, in ``seq`` order."""
    log: LogCapture
    output: Path | None
    """The published output directory of a backup, None when nothing was published."""
    env: dict[str, str] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The messages of one ``type`` (``state_change``, ``progress``, ``result`` ...)."""
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def states(self) -> list[str]:
        """The states the job went through (``to_state`` of each state change)."""
        return [str(m["to_state"]) for m in self.of_type("state_change")]

    @property
    def result(self) -> dict[str, Any]:
        """The one result message; AssertionError when there is none or several."""
        results = self.of_type("result")
        assert len(results) == 1, f"expected exactly one result message, got {len(results)}"
        return results[0]

    @property
    def records(self) -> list[dict[str, Any]]:
        """The JSON log records of the job."""
        return self.log.records()


def run_agent(
    agent: Agent | type[Agent],
    env: Mapping[str, str],
    *,
    log: LogCapture | None = None,
) -> AgentRun:
    """Run one job of ``agent`` in this process with ``env`` as its whole environment.

    Signal handlers are left alone (a test is not the job's process); the log goes to
    ``log`` (a new ``LogCapture`` by default). Without ``BAQUP_REDIS_URL`` the job talks
    over the spool, and ``messages`` are all it sent.
    """
    from baqup_agent._job import run_job

    log = log if log is not None else LogCapture()
    code = run_job(agent, environ=dict(env), install_signals=False, log_stream=log)
    staging, job_id = env.get("BAQUP_STAGING_DIR"), env.get("BAQUP_JOB_ID")
    if not staging or not job_id:  # a configuration test: the job could not start
        return AgentRun(code, [], log, None, dict(env))
    output = Path(staging) / job_id
    published = (output / MANIFEST_FILE).is_file()
    messages = spool_messages(staging, job_id, spool_dir=env.get("BAQUP_SPOOL_DIR"))
    return AgentRun(code, messages, log, output if published else None, dict(env))


def publish_output(
    staging: str | os.PathLike[str],
    job_id: str,
    artifacts: Mapping[str, bytes],
    *,
    compression: str = "zstd",
    agent: str = "test-agent",
    agent_version: str = "0.0.0",
    source_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Publish a backup output holding ``artifacts`` (filename -> content) under
    ``staging/job_id`` exactly as an agent does (manifest, checksums), and return it:
    the ``BAQUP_RESTORE_SOURCE`` of a restore test."""
    from baqup_agent._logger import Logger
    from baqup_agent._staging import Staging

    area = Staging(staging, job_id, Logger(job_id, agent, stream=LogCapture()))
    area.prepare()
    try:
        for filename, content in artifacts.items():
            with area.artifact(filename, compression=compression) as writer:
                writer.write(content)
        return area.publish(
            agent=agent, agent_version=agent_version, source_metadata=source_metadata
        )
    except BaseException:
        area.discard()
        raise


def cancel_message(
    job_id: str, /, *, reason: str = "operator request", **fields: Any
) -> dict[str, Any]:
    """A valid cancel of ``job_id`` (new id, timestamp now); ``fields`` override members,
    also to make it invalid on purpose."""
    message = {
        "id": str(uuid.uuid4()),
        "type": "cancel",
        "job_id": job_id,
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "reason": reason,
    }
    return message | fields


def send_cancel(
    env: Mapping[str, str], /, *, reason: str = "operator request", **fields: Any
) -> dict[str, Any]:
    """Cancel the job of ``env`` the way a controller does, and return the message sent.

    With ``BAQUP_REDIS_URL`` (and ``BAQUP_REDIS_PASSWORD``) in ``env`` the cancel goes to
    the job's control stream, otherwise it is appended to the spool's ``control.jsonl``.
    """
    message = cancel_message(env["BAQUP_JOB_ID"], reason=reason, **fields)
    text = json.dumps(message)
    url = env.get("BAQUP_REDIS_URL")
    if url:
        import redis

        client = redis.Redis.from_url(url, password=env.get("BAQUP_REDIS_PASSWORD"))
        try:
            client.xadd(job_keys(env["BAQUP_JOB_ID"]).control, {MESSAGE_FIELD: text})
        finally:
            client.close()
    else:
        control = _spool_job_dir(env) / CONTROL_FILE
        control.parent.mkdir(parents=True, exist_ok=True)
        with control.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
    return message
