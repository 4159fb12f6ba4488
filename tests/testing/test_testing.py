"""baqup_agent.testing as a supported API: its names, each helper, and the pytest plugin."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baqup_agent.testing as testing
from baqup_agent._keys import job_keys
from baqup_agent._restore import PublishedOutput
from baqup_agent.contract import AgentState, ExitCode
from baqup_agent.schema import contract_errors
from baqup_agent.testing import (
    LogCapture,
    RedisServer,
    cancel_message,
    job_env,
    publish_output,
    run_agent,
    send_cancel,
    spool_messages,
)
from tests.agent.sample_agent import PAYLOAD, SampleAgent
from tests.conformance._agents import PLAIN, PLAIN_OPTIONS
from tests.contract.test_surface import PUBLIC as SURFACE

pytest_plugins = ["pytester"]

PUBLIC = set(SURFACE["baqup_agent.testing"])  # pinned in tests/contract/test_surface.py
FIXTURES = {"baqup_log", "baqup_staging", "baqup_job_env", "baqup_run", "baqup_redis"}


def test_the_public_names_are_pinned_documented_and_typed() -> None:
    assert set(testing.__all__) == PUBLIC
    for name in PUBLIC:
        obj = getattr(testing, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isfunction(obj):
            hints = inspect.get_annotations(obj)
            assert "return" in hints, f"{name} has no return annotation"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text()
    assert all(f"`{name}" in docs for name in PUBLIC | FIXTURES), "docs/testing.md is behind"


def test_the_plugin_is_an_entry_point_and_imports_light() -> None:
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.value == "baqup_agent.testing.pytest_plugin" for ep in plugins)
    # loaded by every pytest run: none of the runtime's heavy dependencies at import
    code = (
        "import sys, baqup_agent.testing.pytest_plugin; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'redis', 'pydantic', 'zstandard', 'jsonschema', 'orjson'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_agent_returns_messages_exit_code_log_and_output(tmp_path: Path) -> None:
    run = run_agent(SampleAgent, job_env(tmp_path))
    assert run.exit_code == ExitCode.SUCCESS
    lifecycle = [AgentState.INITIALIZING, AgentState.RUNNING, AgentState.COMPLETING]
    assert run.states == [s.value for s in [*lifecycle, AgentState.TERMINATED]]
    assert run.result["status"] == "success" and run.messages[-1] is run.result
    assert run.output == tmp_path / "job-1" and (run.output / "manifest.json").is_file()
    assert any(r["message"] == "job finished" for r in run.records)
    assert run.messages == spool_messages(tmp_path, "job-1")

    unstarted = {k: v for k, v in job_env(tmp_path / "c").items() if k != "BAQUP_JOB_ID"}
    refused = run_agent(SampleAgent, unstarted)
    assert refused.exit_code == ExitCode.USAGE_CONFIG_ERROR and refused.messages == []
    assert any(r.get("variable") == "BAQUP_JOB_ID" for r in refused.records)

    failed = run_agent(SampleAgent, job_env(tmp_path / "b", BAQUP_TEST_BEHAVIOUR="raise"))
    assert failed.exit_code == ExitCode.INTERNAL_ERROR and failed.output is None
    assert failed.result["status"] == "failed"


def test_a_published_output_feeds_a_restore(tmp_path: Path) -> None:
    source = publish_output(tmp_path, "b1", {"data.bin.zst": PAYLOAD, "notes.txt": b"n"})
    env = job_env(tmp_path, "r1", "restore", BAQUP_RESTORE_SOURCE=source)
    agent = SampleAgent()
    run = run_agent(agent, env)
    assert run.exit_code == ExitCode.SUCCESS, run.log.getvalue()
    assert agent.restored == PAYLOAD and run.output is None


FUNCTION_SCOPED = HealthCheck.function_scoped_fixture
NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,12}(\.[a-z]{1,4})?", fullmatch=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[FUNCTION_SCOPED])
@given(
    artifacts=st.dictionaries(NAMES, st.binary(max_size=2048), min_size=1, max_size=4),
    compression=st.sampled_from(["none", "gzip", "zstd"]),
)
def test_publish_output_round_trips_any_artifacts(
    tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, bytes], compression: str
) -> None:
    staging = tmp_path_factory.mktemp("published")
    out = publish_output(staging, "job-1", artifacts, compression=compression)
    published = PublishedOutput.open(out)
    assert {a.filename for a in published.manifest.artifacts} == set(artifacts)
    for name, content in artifacts.items():
        with published.open_artifact(name) as f:
            assert f.read() == content
    assert not (staging / ".staging" / "job-1").exists()


def test_publish_output_leaves_nothing_behind_on_bad_input(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="name"):
        publish_output(tmp_path, "job-1", {"../escape": b"x"})
    assert not (tmp_path / "job-1").exists() and not (tmp_path / ".staging" / "job-1").exists()


@given(
    job_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True),
    reason=st.text(max_size=200),
)
def test_cancel_message_is_a_valid_cancel(job_id: str, reason: str) -> None:
    message = cancel_message(job_id, reason=reason)
    assert contract_errors("bus-message.json", message) == []
    assert message["job_id"] == job_id and message["type"] == "cancel"
    assert cancel_message(job_id, reason=reason)["id"] != message["id"]


def test_cancel_message_fields_override_even_into_invalid() -> None:
    message = cancel_message("job-1", job_id="other", id="not-a-uuid")
    assert message["job_id"] == "other" and contract_errors("bus-message.json", message)


def test_send_cancel_through_the_spool_stops_a_running_job(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="slow", BAQUP_TEST_SECONDS=60)
    sent: list[dict[str, object]] = []

    def cancel_once_running() -> None:
        while not any(m.get("to_state") == "running" for m in spool_messages(tmp_path)):
            threading.Event().wait(0.01)
        sent.append(send_cancel(env, reason="from the test"))

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    run = run_agent(SampleAgent, env)
    canceller.join()
    assert run.exit_code == ExitCode.GENERAL_FAILURE
    assert run.result["status"] == "cancelled" and "from the test" in run.result["error"]


def test_send_cancel_through_redis(baqup_redis: RedisServer, tmp_path: Path) -> None:
    env = job_env(tmp_path, "job-r", BAQUP_REDIS_URL=baqup_redis.url)
    message = send_cancel(env)
    client = baqup_redis.client()
    try:
        [(_, fields)] = client.xrange(job_keys("job-r").control)
    finally:
        client.close()
    assert json.loads(fields["msg"]) == message and list(fields) == ["msg"]
    assert not (tmp_path / ".spool").exists()


def test_redis_server_password_stays_off_the_command_line(tmp_path: Path) -> None:
    password = 'pa ss"w\\ord'
    with RedisServer(tmp_path / "r", password=password) as server:
        assert server.proc is not None
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert b"pa ss" not in cmdline
        client = server.client()
        assert client.ping() and server.version
        client.close()
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        port, proc = server.port, server.proc
        server.restart()
        assert server.port == port and server.proc is not proc
    assert server.proc is None and proc.poll() is not None


def test_redis_server_reports_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-redis"):
        RedisServer(tmp_path, binary="no-such-redis").start()


def test_log_capture_parses_json_records_and_keeps_text_lines() -> None:
    log = LogCapture()
    log.write('{"level":"INFO","message":"a"}\nplain text line\n{"message":"b"}\n')
    assert [r["message"] for r in log.records()] == ["a", "b"]
    assert log.lines()[1] == "plain text line" and log.count("message") == 2


PLUGIN_TEST = """
import sys
import pytest

@pytest.mark.baqup_conformance(command={command!r}, role="backup", redis=False,
                               only=["bad-config", "exit-codes"], env={env!r})
def test_conformance(baqup_conformance_check):
    baqup_conformance_check.assert_passed()

def test_fixtures(baqup_job_env, baqup_staging, baqup_run, baqup_log):
    env = baqup_job_env("job-9", BAQUP_LOG_LEVEL="debug")
    assert env["BAQUP_STAGING_DIR"] == str(baqup_staging) and env["BAQUP_JOB_ID"] == "job-9"
"""


def test_the_plugin_runs_conformance_checks_as_items(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLUGIN_TEST.format(command=PLAIN, env=dict(PLAIN_OPTIONS["env"])))
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # in the suite's order of checks
    result.stdout.fnmatch_lines(["*test_conformance?exit-codes? PASSED*",
                                 "*test_conformance?bad-config? PASSED*"])  # fmt: skip


def test_a_failing_check_fails_its_own_item(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLUGIN_TEST.format(command=["true"], env={}))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "bad-config")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*bad-config*fail*"])


def test_the_conformance_marker_is_required(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(baqup_conformance_check):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*baqup_conformance(command=*"])
