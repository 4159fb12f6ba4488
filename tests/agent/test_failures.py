"""Errors a person can act on: one-line expected failures, an empty backup, a grace period
of 0, where ``config_schema`` is found, and non-UTF-8 text in the result."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from baqup_agent import Agent, Context, DataError, ResourceUnavailable
from baqup_agent._job import run_job
from baqup_agent._redaction import unescape_surrogates
from baqup_agent.contract import ExitCode
from baqup_agent.testing import LogCapture, parse_records, run_agent
from tests.agent.helpers import (
    SAMPLE_AGENT,
    events,
    job_env,
    load_agent,
    process_env,
    the_result,
)
from tests.agent.sample_agent import SampleAgent


class _Failing(Agent):
    name = "failing"
    error: ClassVar[BaseException] = DataError("the dump header is truncated")

    def backup(self, ctx: Context) -> None:
        raise type(self).error


def _run(agent: type[Agent], env: dict[str, str]) -> tuple[int, str]:
    job = run_agent(agent, env)
    return job.exit_code, job.log.getvalue()


def _failure(cls_error: BaseException) -> type[Agent]:
    return type("Agent_", (_Failing,), {"error": cls_error})


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DataError("the dump header is truncated"), 65),
        (ResourceUnavailable("db:5432 refused the connection"), 69),
        (OSError(28, "No space left on device"), 74),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_an_expected_failure_is_one_line_with_its_reason(
    tmp_path: Path, error: BaseException, code: int, fmt: str
) -> None:
    got, log = _run(_failure(error), job_env(tmp_path, BAQUP_LOG_FORMAT=fmt))
    assert got == code
    failed = [line for line in log.splitlines() if "job failed" in line]
    assert len(failed) == 1
    assert str(error) in failed[0] and "reason" in failed[0]
    assert "Traceback" not in log and '"exception"' not in log
    assert all(not line.startswith(" ") for line in log.splitlines())  # one line each


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_traceback_for_internal_errors_and_at_debug(tmp_path: Path, fmt: str) -> None:
    _, log = _run(_failure(RuntimeError("bug")), job_env(tmp_path, BAQUP_LOG_FORMAT=fmt))
    assert "Traceback" in log and "reason" in log
    env = job_env(tmp_path / "d", BAQUP_LOG_FORMAT=fmt, BAQUP_LOG_LEVEL="DEBUG")
    _, log = _run(_failure(DataError("bad")), env)
    assert "Traceback" in log


class _Empty(Agent):
    name = "empty"

    def backup(self, ctx: Context) -> None:
        ctx.logger.info("nothing to back up")


class _EmptyIsFine(_Empty):
    empty_output_valid = True


def test_a_backup_without_artifacts_fails_65(tmp_path: Path) -> None:
    code, _ = _run(_Empty, job_env(tmp_path))
    assert code == ExitCode.DATA_ERROR
    result = the_result(events(tmp_path))
    assert result["status"] == "failed" and "published no artifact" in result["error"]
    assert "empty_output_valid" in result["error"]
    assert not (tmp_path / "job-1").exists()
    assert not (tmp_path / ".staging" / "job-1").exists()


def test_an_agent_may_declare_empty_output_valid(tmp_path: Path) -> None:
    code, _ = _run(_EmptyIsFine, job_env(tmp_path))
    assert code == ExitCode.SUCCESS
    assert (tmp_path / "job-1" / "manifest.json").is_file()


def test_grace_period_0_still_discards_and_reports_cancelled(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="stubborn", BAQUP_GRACE_PERIOD="0")
    proc = subprocess.Popen(
        [sys.executable, str(SAMPLE_AGENT)],
        env=process_env(env),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the job runs (and never checks for cancellation) from here
        if "job started" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    assert proc.wait(30) == 1
    result = the_result(events(tmp_path))
    assert result["status"] == "cancelled" and result["exit_code"] == 1
    assert not (tmp_path / ".staging" / "job-1").exists()
    assert not (tmp_path / "job-1").exists()


# -- config_schema -------------------------------------------------------------------


def test_config_schema_is_found_next_to_the_class_that_declares_it(tmp_path: Path) -> None:
    script = tmp_path / "elsewhere" / "sub_agent.py"
    script.parent.mkdir()
    script.write_text(
        "from tests.agent.sample_agent import SampleAgent\n"
        "class SubAgent(SampleAgent):\n"
        "    name = 'sub'\n"
    )
    sub = load_agent(script, "SubAgent")
    assert sub.schema_path() == SampleAgent.schema_path()
    code, _ = _run(sub, job_env(tmp_path / "st", BAQUP_TEST_BEHAVIOUR="ok"))
    assert code == ExitCode.SUCCESS


class _Mapped(Agent):
    name = "mapped"
    config_schema: ClassVar[dict[str, object]] = {
        "type": "object",
        "properties": {"MAPPED_LABEL": {"type": "string", "minLength": 2}},
        "required": ["MAPPED_LABEL"],
    }
    empty_output_valid = True

    def backup(self, ctx: Context) -> None:
        ctx.logger.info("label", label=ctx.config["MAPPED_LABEL"])


def test_config_schema_may_be_a_mapping(tmp_path: Path) -> None:
    code, log = _run(_Mapped, job_env(tmp_path, MAPPED_LABEL="nightly"))
    assert code == ExitCode.SUCCESS
    assert any(line.get("label") == "nightly" for line in parse_records(log))
    code, log = _run(_Mapped, job_env(tmp_path / "b"))
    assert code == ExitCode.USAGE_CONFIG_ERROR and "MAPPED_LABEL" in log


# -- secrets leave os.environ ----------------------------------------------------------


class _Secretive(_Mapped):
    config_schema: ClassVar[dict[str, object]] = {
        "type": "object",
        "properties": {"MAPPED_TOKEN": {"type": "string", "writeOnly": True}},
    }

    def backup(self, ctx: Context) -> None:
        seen = "MAPPED_TOKEN" in os.environ or "MAPPED_TOKEN_FILE" in os.environ
        ctx.logger.info("environ", inherited=seen)


class _KeepsSecrets(_Secretive):
    keep_secrets_in_environ = True


@pytest.mark.parametrize(("agent", "inherited"), [(_Secretive, False), (_KeepsSecrets, True)])
def test_secrets_leave_os_environ_unless_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: type[Agent], inherited: bool
) -> None:
    for name in [n for n in os.environ if n.startswith("BAQUP_")]:
        monkeypatch.delenv(name)
    for name, value in job_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    token = tmp_path / "token"
    token.write_text("a-secret-token\n")
    token.chmod(0o600)
    monkeypatch.setenv("MAPPED_TOKEN_FILE", str(token))
    log = LogCapture()
    assert run_job(agent, install_signals=False, log_stream=log) == 0
    assert [line["inherited"] for line in log.records() if "inherited" in line] == [inherited]
    assert ("MAPPED_TOKEN_FILE" in os.environ) is inherited


# -- non-UTF-8 text in the result --------------------------------------------------------

_NAME = b"/data/caf\xe9-\\x41.db"  # Latin-1, and a backslash that must survive


class _BadPath(Agent):
    name = "badpath"

    def backup(self, ctx: Context) -> None:
        path = os.fsdecode(_NAME)
        ctx.progress(items=1, message=f"reading {path}")
        raise OSError(5, "Input/output error", path)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_non_utf8_path_reaches_the_result_and_the_logs(tmp_path: Path, fmt: str) -> None:
    code, log = _run(_BadPath, job_env(tmp_path, BAQUP_LOG_FORMAT=fmt))
    assert code == ExitCode.IO_ERROR
    msgs = events(tmp_path)
    result = the_result(msgs)
    assert result["status"] == "failed" and "Input/output error" in result["error"]
    progress = [m["message"] for m in msgs if m["type"] == "progress" and m.get("message")]
    assert os.fsencode(unescape_surrogates(progress[0])) == b"reading " + _NAME
    failed = [line for line in log.splitlines() if "job failed" in line]
    assert len(failed) == 1 and "Input/output error" in failed[0]


class _ChattyAtStart(_EmptyIsFine):
    def __init__(self) -> None:
        logging.getLogger("driver").warning("connecting as %s", "bob")


@pytest.mark.parametrize("route", [True, False])
def test_python_output_is_routed_from_start_up(tmp_path: Path, route: bool) -> None:
    log = LogCapture()
    env = job_env(tmp_path)
    code = run_job(
        _ChattyAtStart,
        environ=env,
        install_signals=False,
        log_stream=log,
        route_python_output=route,
    )
    assert code == ExitCode.SUCCESS
    routed = [line for line in log.records() if line.get("logger") == "driver"]
    assert [line["message"] for line in routed] == (["connecting as bob"] if route else [])
