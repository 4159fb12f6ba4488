"""Checks on the process itself: exit codes (§5), log lines (§6), bad config (§2)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from baqup_agent.conformance.checks._base import (
    CheckInput,
    exit_text,
    must,
    result_in_redis,
    should,
    the_result,
)
from baqup_agent.conformance.report import Finding
from baqup_agent.contract import ExitCode
from baqup_agent.contract.tables import EXIT_CODES
from baqup_agent.schema import contract_errors

_TAXONOMY = {int(c) for c in ExitCode}
_UNREPORTED = int(ExitCode.COMPLETED_UNREPORTED)
# result status -> exit codes it may come with (75: the result could only be spooled)
_STATUS_CODES = {
    "success": {0, _UNREPORTED},
    "partial": {int(ExitCode.PARTIAL_FAILURE), _UNREPORTED},
}


def exit_codes(inp: CheckInput) -> Iterator[Finding]:
    """Every exit code is in the taxonomy and agrees with the result message."""
    for run in inp.runs:
        if run.killed_after_stop:
            continue  # the suite's SIGKILL, not the agent's exit: sigterm and cancel judge it
        code = run.exit_code
        if run.timed_out:
            yield must(f"did not exit within the scenario timeout ({inp.ctx.timeout:g} s)", run)
        if code is None or code not in _TAXONOMY:
            yield must(
                f"{exit_text(code)} is not in the exit-code taxonomy "
                f"({', '.join(str(c) for c in sorted(_TAXONOMY))})",
                run,
            )
            continue
        result = the_result(run)
        if result is None:
            continue  # result-once reports the missing result
        reported = result.get("exit_code")
        delivered = result_in_redis(run)
        if reported != code and not (
            code == _UNREPORTED and reported in (0, _UNREPORTED) and not delivered
        ):
            yield must(
                f"{exit_text(code)} but the result message says exit_code {reported}",
                run,
                json.dumps(result),
            )
        if code == _UNREPORTED and delivered:
            yield must("exit 75 (result unreported) although the result reached Redis", run)
        status = result.get("status")
        allowed = _STATUS_CODES.get(str(status))
        if isinstance(reported, int) and allowed is not None and reported not in allowed:
            yield must(f"result status {status} with exit_code {reported}", run)
        if status == "failed" and reported in (0, _UNREPORTED, int(ExitCode.PARTIAL_FAILURE)):
            yield must(f"result status failed with exit_code {reported}", run)
        if reported in _TAXONOMY and isinstance(reported, int):
            expected = EXIT_CODES[ExitCode(reported)].retryable
            if result.get("retryable") is not expected:
                yield must(
                    f"retryable is {result.get('retryable')} for exit_code {reported}; "
                    f"the taxonomy says {expected}",
                    run,
                )


def log_records(inp: CheckInput) -> Iterator[Finding]:
    """Every stderr line is a log record of the right job and agent."""
    for run in inp.runs:
        missing_id = run.scenario.fault == "missing-job-id"
        bad = 0
        for number, line in enumerate(run.stderr, 1):
            if not line.strip():
                continue
            problem = _log_line_problem(line, run.job_id, inp.ctx.agent_id, missing_id)
            if problem:
                bad += 1
                if bad <= 3:
                    yield must(f"stderr line {number}: {problem}", run, line)
        if bad > 3:
            yield must(f"{bad - 3} more invalid log lines", run)
        on_stdout = [line for line in run.stdout if _is_log_record(line)]
        if on_stdout:
            yield must("a log record on stdout: logs go to stderr only", run, on_stdout[0])
        if run.scenario.is_job and not any(line.strip() for line in run.stderr):
            yield should("the agent wrote no log line at all", run)


def _log_line_problem(line: str, job_id: str, agent_id: str, missing_id: bool) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return "not JSON (is BAQUP_LOG_FORMAT=json honoured? are tracebacks printed raw?)"
    if not isinstance(record, dict):
        return "not a JSON object"
    if missing_id:
        # the job id is the missing variable: any valid id (or none) is acceptable
        record = {"job_id": "unknown", **record}
    errors = contract_errors("log-record.json", record)
    if errors:
        return "not a valid log record: " + "; ".join(errors)
    if not missing_id and record["job_id"] != job_id:
        return f"job_id {record['job_id']!r}, expected {job_id!r}"
    if record["agent_id"] != agent_id:
        return f"agent_id {record['agent_id']!r}, expected {agent_id!r}"
    return ""


_FAULT_VARIABLE = {
    "missing-job-id": "BAQUP_JOB_ID",
    "bad-interval": "BAQUP_HEARTBEAT_INTERVAL",
    "missing-restore-source": "BAQUP_RESTORE_SOURCE",
}


def bad_config(inp: CheckInput) -> Iterator[Finding]:
    """A bad config ends with 64, a structured error line, and nothing else."""
    for run in inp.runs:
        variable = _FAULT_VARIABLE[str(run.scenario.fault)]
        if run.exit_code != int(ExitCode.USAGE_CONFIG_ERROR):
            yield must(f"{exit_text(run.exit_code)}, expected 64 for an invalid config", run)
        errors = [line for line in run.stderr if _is_error_record(line)]
        if not errors:
            yield must(
                "no structured ERROR/FATAL log line explains the config error",
                run,
                "\n".join(run.stderr[-3:]),
            )
        elif not any(variable in line for line in errors):
            yield must(f"the error log line does not name {variable}", run, errors[0])
        if run.messages:
            kinds = sorted({str(m.type) for m in run.messages})
            yield must(
                f"{len(run.messages)} bus message(s) ({', '.join(kinds)}) despite the invalid "
                "config: the job never began, nothing may be sent",
                run,
                run.messages[0].raw,
            )
        if run.snapshots or run.published_after or run.staging_seen:
            yield must("the agent staged or published output despite the invalid config", run)
        if run.running_seen_at is not None:
            yield must("the agent reported running despite the invalid config", run)


def _is_log_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and {"level", "message"} <= record.keys()


def _is_error_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("level") in ("ERROR", "FATAL")
