"""run_job in-process: config errors, failures, cancel, partial output, exactly one result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from baqup_agent import Agent, Context
from baqup_agent._job import run_job
from baqup_agent._staging import Staging
from baqup_agent.contract import AgentState, ExitCode
from baqup_agent.testing import LogCapture, parse_records, run_agent, send_cancel
from tests.agent.helpers import (
    SAMPLE_AGENT,
    assert_complete_output,
    assert_legal_states,
    events,
    job_env,
    of_type,
    process_env,
    the_result,
)
from tests.agent.sample_agent import PAYLOAD, SampleAgent


def run(env: dict[str, str], agent: Agent | type[Agent] = SampleAgent) -> tuple[int, LogCapture]:
    job = run_agent(agent, env)
    return job.exit_code, job.log


def test_success_publishes_and_reports_once(tmp_path: Path) -> None:
    code, _ = run(job_env(tmp_path))
    assert code == ExitCode.SUCCESS
    manifest = assert_complete_output(tmp_path / "job-1")
    assert [a["filename"] for a in manifest["artifacts"]] == ["data.bin.zst", "notes.txt"]
    assert manifest["agent"] == "sample" and manifest["source_metadata"] == {"behaviour": "ok"}
    msgs = events(tmp_path)
    assert assert_legal_states(msgs) == [
        AgentState.INITIALIZING,
        AgentState.RUNNING,
        AgentState.COMPLETING,
        AgentState.TERMINATED,
    ]
    result = the_result(msgs)
    assert result["status"] == "success" and result["exit_code"] == 0
    assert result["output_path"] == str(tmp_path / "job-1")
    assert result["artifacts"] == 2
    assert result["bytes"] == sum(a["size_bytes"] for a in manifest["artifacts"])
    assert msgs[-1]["type"] == "result"  # nothing after the result, heartbeats included
    assert not (tmp_path / ".staging" / "job-1").exists()


def test_bad_config_exits_64_with_structured_errors_and_nothing_else(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="dance", BAQUP_HEARTBEAT_INTERVAL="-1")
    del env["BAQUP_AGENT_ID"]
    code, log = run(env)
    assert code == ExitCode.USAGE_CONFIG_ERROR
    lines = log.records()
    problems = {line["variable"] for line in lines if line["message"] == "invalid configuration"}
    assert {"BAQUP_AGENT_ID", "BAQUP_TEST_BEHAVIOUR", "BAQUP_HEARTBEAT_INTERVAL"} <= problems
    assert all(line["job_id"] == "job-1" and line["level"] in ("ERROR", "FATAL") for line in lines)
    assert lines[-1]["level"] == "FATAL" and lines[-1]["exit_code"] == 64
    assert list(tmp_path.iterdir()) == []  # no staging, no spool


def test_bad_job_id_is_not_echoed_into_the_log(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_JOB_ID="../etc")
    code, log = run(env)
    assert code == ExitCode.USAGE_CONFIG_ERROR
    assert {line["job_id"] for line in log.records()} == {"unknown"}


def test_unknown_exception_exits_70_and_discards_staging(tmp_path: Path) -> None:
    code, log = run(job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="raise"))
    assert code == ExitCode.INTERNAL_ERROR
    msgs = events(tmp_path)
    assert assert_legal_states(msgs)[-1] is AgentState.FAILED
    result = the_result(msgs)
    assert result["status"] == "failed" and result["exit_code"] == 70
    assert result["retryable"] is False and result["error"] == "RuntimeError: boom"
    failed = [line for line in log.records() if line["message"] == "job failed"]
    assert failed and "boom" in failed[0]["exception"]["stack"]
    assert not (tmp_path / "job-1").exists()
    assert not (tmp_path / ".staging" / "job-1").exists()


def test_partial_failure_publishes_the_good_artifacts_and_exits_76(tmp_path: Path) -> None:
    code, _ = run(job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="partial"))
    assert code == ExitCode.PARTIAL_FAILURE
    manifest = assert_complete_output(tmp_path / "job-1")
    assert len(manifest["artifacts"]) == 2
    msgs = events(tmp_path)
    assert assert_legal_states(msgs)[-1] is AgentState.TERMINATED
    result = the_result(msgs)
    assert result["status"] == "partial" and result["exit_code"] == 76
    assert "extra.bin" in result["error"] and result["output_path"] == str(tmp_path / "job-1")


def test_cancel_through_the_spool_control_file_stops_the_job(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="slow", BAQUP_TEST_SECONDS=20)

    def cancel_when_running() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(m.get("to_state") == "running" for m in events(tmp_path)):
                break
            time.sleep(0.02)
        send_cancel(job_env(tmp_path))

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    t0 = time.monotonic()
    code, _ = run(env)
    canceller.join()
    assert time.monotonic() - t0 < 5
    assert code == ExitCode.GENERAL_FAILURE
    msgs = events(tmp_path)
    result = the_result(msgs)
    assert result["status"] == "cancelled" and result["exit_code"] == 1
    assert "operator request" in result["error"]
    assert assert_legal_states(msgs)[-1] is AgentState.FAILED
    assert any(m["intent"] == "failing" for m in of_type(msgs, "heartbeat"))
    assert not (tmp_path / "job-1").exists()
    assert not (tmp_path / ".staging" / "job-1").exists()


def test_cancel_after_publication_began_does_not_undo_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = Staging.publish

    def publish_then_cancel(self: Staging, **kwargs: Any) -> Path:
        send_cancel(job_env(tmp_path))
        time.sleep(0.6)  # the control file is polled every 0.25 s
        return publish(self, **kwargs)

    monkeypatch.setattr(Staging, "publish", publish_then_cancel)
    code, log = run(job_env(tmp_path))
    assert any(line["message"] == "cancel received" for line in log.records())
    assert code == ExitCode.SUCCESS
    assert the_result(events(tmp_path))["status"] == "success"
    assert_complete_output(tmp_path / "job-1")


def test_second_run_after_a_crash_cleans_the_leftover(tmp_path: Path) -> None:
    leftover = tmp_path / ".staging" / "job-1"
    leftover.mkdir(parents=True)
    (leftover / "half-written.zst").write_bytes(b"\x28\xb5\x2f")
    code, _ = run(job_env(tmp_path))
    assert code == ExitCode.SUCCESS
    assert_complete_output(tmp_path / "job-1")
    assert not leftover.exists()


def test_restore_verifies_before_the_agent_runs(tmp_path: Path) -> None:
    assert run(job_env(tmp_path))[0] == ExitCode.SUCCESS
    agent = SampleAgent()
    env = job_env(tmp_path, "job-2", "restore", BAQUP_RESTORE_SOURCE=tmp_path / "job-1")
    assert run(env, agent)[0] == ExitCode.SUCCESS
    assert agent.restored == PAYLOAD
    assert the_result(events(tmp_path, "job-2"))["status"] == "success"

    artifact = tmp_path / "job-1" / "data.bin.zst"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    agent = SampleAgent()
    env = job_env(tmp_path, "job-3", "restore", BAQUP_RESTORE_SOURCE=tmp_path / "job-1")
    assert run(env, agent)[0] == ExitCode.DATA_ERROR
    assert agent.restored is None  # restore() was never called
    result = the_result(events(tmp_path, "job-3"))
    assert result["status"] == "failed" and result["exit_code"] == 65


def test_restore_takes_the_checksums_hashed_while_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_job hashes the source's artifacts as it starts (tests/output/
    test_early_checksums.py): the verification hashes nothing again; a file changed
    since is hashed again and refused."""
    from baqup_agent import _restore
    from baqup_agent._checksum import file_checksum

    assert run(job_env(tmp_path))[0] == ExitCode.SUCCESS
    monkeypatch.setattr(_restore, "EARLY_RACY_NS", -(10**12))  # trust a file just written
    hashed_late: list[object] = []  # by the verification, not the early thread

    def spy(path: Any, algorithm: str = "sha256") -> tuple[int, str]:
        if threading.current_thread().name != "baqup-early-checksums":
            hashed_late.append(path)
        return file_checksum(path, algorithm)

    monkeypatch.setattr("baqup_agent._restore.file_checksum", spy)
    agent = SampleAgent()
    env = job_env(tmp_path, "job-2", "restore", BAQUP_RESTORE_SOURCE=tmp_path / "job-1")
    assert run(env, agent)[0] == ExitCode.SUCCESS
    assert agent.restored == PAYLOAD
    assert hashed_late == []
    assert _restore._early is None  # forgotten with the job

    artifact = tmp_path / "job-1" / "data.bin.zst"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF

    made: list[SampleAgent] = []

    class _Tampering(SampleAgent):  # run_job makes it: after the early hashing began
        def __init__(self) -> None:
            super().__init__()
            made.append(self)
            assert _restore._early is not None
            _restore._early._thread.join()
            artifact.write_bytes(bytes(data))

    env = job_env(tmp_path, "job-3", "restore", BAQUP_RESTORE_SOURCE=tmp_path / "job-1")
    assert run(env, _Tampering)[0] == ExitCode.DATA_ERROR
    assert made[0].restored is None  # restore() was never called
    assert len(hashed_late) == 1


class _Progressing(Agent):
    name = "progressing"

    def backup(self, ctx: Context) -> None:
        ctx.set_totals(bytes=10, items=2)
        ctx.heartbeat_intent("extend", 120)
        ctx.progress(bytes=4, items=1, message="halfway")
        ctx.progress(bytes=6, items=1)
        assert not ctx.cancelled
        with ctx.artifact("x.txt", compression="none") as out:
            out.write(b"x")


def test_context_reports_progress_and_intent(tmp_path: Path) -> None:
    code, _ = run(job_env(tmp_path), _Progressing)
    assert code == ExitCode.SUCCESS
    msgs = events(tmp_path)
    progress = of_type(msgs, "progress")
    assert progress[0]["message"] == "halfway"
    assert progress[0]["progress"] == {
        "bytes_done": 4,
        "items_done": 1,
        "bytes_total": 10,
        "items_total": 2,
    }
    assert any(
        m["intent"] == "extend" and m["extend_seconds"] == 120 for m in of_type(msgs, "heartbeat")
    )
    assert any(m["intent"] == "completing" for m in of_type(msgs, "heartbeat"))
    assert the_result(msgs)["bytes"] == 1


def test_agent_schema_path_is_relative_to_the_subclass_file() -> None:
    assert SampleAgent.schema_path() == Path(__file__).parent / "sample-agent-schema.json"
    assert _Progressing.schema_path() is None
    assert _Progressing.agent_name() == "progressing"


def test_run_exits_the_process_with_64_on_bad_config(tmp_path: Path) -> None:
    env = process_env(job_env(tmp_path, BAQUP_ROLE="archive"))
    proc = subprocess.run(
        [sys.executable, str(SAMPLE_AGENT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == ExitCode.USAGE_CONFIG_ERROR
    lines = parse_records(proc.stderr)
    assert [line["variable"] for line in lines if line["level"] == "ERROR"] == ["BAQUP_ROLE"]
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_the_first_message_is_the_initializing_state(tmp_path: Path) -> None:
    assert run(job_env(tmp_path))[0] == ExitCode.SUCCESS
    first = events(tmp_path)[0]
    assert first["type"] == "state_change" and first["to_state"] == "initializing"
    assert "from_state" not in first


class _SignalledDuringStartUp(SampleAgent):
    """Receives SIGTERM while its configuration is being loaded."""

    @classmethod
    def schema_path(cls) -> Path | None:
        os.kill(os.getpid(), signal.SIGTERM)
        return super().schema_path()


def test_sigterm_during_start_up_cancels_instead_of_killing(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    log = LogCapture()
    code = run_job(_SignalledDuringStartUp, environ=job_env(tmp_path), log_stream=log)
    assert code == ExitCode.GENERAL_FAILURE
    result = the_result(events(tmp_path))
    assert result["status"] == "cancelled" and result["exit_code"] == 1
    assert not (tmp_path / "job-1").exists()  # nothing published
    assert signal.getsignal(signal.SIGTERM) is before  # handlers put back
