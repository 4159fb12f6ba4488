"""Test helpers for agent authors (and this project's own tests): a supported API.

Imported only by tests, never by the runtime::

    from baqup_agent.testing import job_env, run_agent

    def test_backup(tmp_path):
        run = run_agent(MyAgent, job_env(tmp_path, MY_SOURCE=str(tmp_path / "data")))
        assert run.exit_code == 0 and run.result["status"] == "success"

The pytest plugin (``baqup_agent.testing.pytest_plugin``, registered as a ``pytest11``
entry point) offers the same as fixtures and runs the conformance checks as pytest
items. See docs/testing.md.
"""

from __future__ import annotations

from baqup_agent._surface import publish_all as _publish_all
from baqup_agent.testing._jobs import (
    AgentRun,
    cancel_message,
    job_env,
    process_env,
    publish_output,
    run_agent,
    send_cancel,
    spool_messages,
)
from baqup_agent.testing._logs import LogCapture, parse_records
from baqup_agent.testing._redis import RedisServer, free_port

__all__ = [
    "AgentRun",
    "LogCapture",
    "RedisServer",
    "cancel_message",
    "free_port",
    "job_env",
    "parse_records",
    "process_env",
    "publish_output",
    "run_agent",
    "send_cancel",
    "spool_messages",
]

_publish_all(__name__, globals())
