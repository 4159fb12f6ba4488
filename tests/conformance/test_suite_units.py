"""The suite's parts: canary search, tree comparison, schema validation, report formats,
CLI, timeouts, role selection and the spool-only mode."""

from __future__ import annotations

import base64
import gzip
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from baqup_agent.cli import main
from baqup_agent.conformance import Status, Suite, SuiteOptions, run_suite
from baqup_agent.conformance.canary import CanaryScanner, make_canary, spellings
from baqup_agent.conformance.fixture import compare_trees, make_default_fixture
from baqup_agent.conformance.schemas import bus_message_errors
from baqup_agent.schema import contract_errors
from tests.conformance._agents import PLAIN, PLAIN_OPTIONS
from tests.conftest import require_binary


def test_canary_spellings_differ_and_are_found_in_compressed_artifacts(tmp_path: Path) -> None:
    canary = make_canary("token")
    forms = spellings(canary)
    assert {"raw", "url-encoded", "base64"} <= set(forms)
    assert len(set(forms.values())) == len(forms)
    scanner = CanaryScanner({"TOKEN": canary})
    (tmp_path / "plain.txt").write_bytes(b"x" * ((1 << 20) - 5) + forms["url-encoded"].encode())
    with gzip.open(tmp_path / "data.gz", "wb") as f:
        f.write(b"header " + base64.b64encode(canary.encode()) + b" trailer")
    leaks = scanner.scan_tree(tmp_path, decompress={tmp_path / "data.gz": "gzip"})
    found = {(leak.form, leak.place) for leak in leaks}
    assert ("url-encoded", "file plain.txt") in found  # across the 1 MiB chunk boundary
    assert ("base64", "file data.gz (decompressed gzip)") in found
    assert scanner.scan_text("nothing to see", "log") == []


def test_compare_trees_reports_missing_extra_and_changed(tmp_path: Path) -> None:
    a, b = make_default_fixture(tmp_path / "a"), make_default_fixture(tmp_path / "b")
    assert compare_trees(a, b) == []
    (b / "README.txt").write_text("changed", encoding="utf-8")
    (b / "empty-dir").rmdir()
    (b / "extra").write_bytes(b"")
    diffs = "\n".join(compare_trees(a, b))
    assert "README.txt: content differs" in diffs
    assert "missing: empty-dir (dir)" in diffs
    assert "unexpected: extra (file)" in diffs


def test_schema_validation_checks_formats_and_names_the_branch() -> None:
    record = {"timestamp": "yesterday", "level": "INFO", "message": "m", "job_id": "j",
              "agent_id": "a"}  # fmt: skip
    assert any("date-time" in e for e in contract_errors("log-record.json", record))
    assert contract_errors("log-record.json", {**record, "timestamp": "2026-11-27T10:00:00Z"}) == []
    assert "not a bus message type" in bus_message_errors({"type": "gossip"})[0]
    assert any("seq" in e for e in bus_message_errors({"type": "heartbeat"}))


def test_role_and_only_select_checks() -> None:
    restore = Suite(SuiteOptions(["true"], role="restore")).checks
    names = {c.name for c in restore}
    assert {"round-trip", "restore-verifies", "log-records"} <= names
    assert not names & {"sigterm", "cancel", "manifest", "atomic-publication", "redis-outage"}
    only = Suite(SuiteOptions(["true"], only=["secrets"])).checks
    assert [c.name for c in only] == ["secrets"]
    with pytest.raises(ValueError, match="unknown check"):
        Suite(SuiteOptions(["true"], only=["no-such-check"]))


def _cli(tmp_path: Path, *extra: str, broken: str = "") -> list[str]:
    args = ["conformance", "--role", "backup", "--only", "bad-config", "--no-redis",
            "--env", "PLAIN_SOURCE={fixture}", "--junit-xml", str(tmp_path / "junit.xml"),
            *extra]  # fmt: skip
    if broken:
        args += ["--env", f"BROKEN={broken}"]
    return [*args, "--", *PLAIN]


def test_cli_json_and_junit_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(tmp_path, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    (check,) = report["checks"]
    assert check["name"] == "bad-config" and check["status"] == "pass"
    assert check["duration_seconds"] >= 0 and check["scenario_seconds"] > 0
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "0"


def test_cli_exits_1_with_evidence_when_a_check_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(tmp_path, broken="bad-config-exit0")) == 1
    out = capsys.readouterr().out
    assert "FAIL  §2  bad-config" in out and "exit 0, expected 64" in out
    assert "NOT CONFORMANT" in out
    case = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None and case.find("failure") is not None


@pytest.mark.parametrize(
    "args",
    [
        ["conformance", "--"],
        ["conformance", "--only", "nope", "--", "true"],
        ["conformance", "--env", "NOEQUALS", "--", "true"],
        ["conformance", "--env", "BAQUP_JOB_ID=mine", "--", "true"],
        ["conformance", "--fixture", "/nonexistent/dir", "--", "true"],
        ["conformance", "--role", "restore", "--only", "sigterm", "--", "true"],
        ["conformance", "--", "/nonexistent/agent"],
    ],
)
def test_cli_usage_errors_exit_64(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 64
    assert "baqup-agent conformance:" in capsys.readouterr().err


def test_a_hanging_agent_is_killed_at_the_scenario_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    report = run_suite([sys.executable, "-c", "import time; time.sleep(60)"], role="backup",
                       only=["bad-config"], timeout=1.5, redis=False, workdir=tmp_path)  # fmt: skip
    assert time.monotonic() - started < 15
    check = report.check("bad-config")
    assert check.status is Status.FAIL
    assert any("killed by SIGKILL" in f.message for f in check.findings)
    assert all(s.timed_out for s in report.scenarios)
    assert list(tmp_path.iterdir()) == []  # the sandbox is removed


def test_spool_only_mode_marks_redis_scenarios_not_applicable(tmp_path: Path) -> None:
    report = run_suite(PLAIN, **PLAIN_OPTIONS, only=["cancel", "heartbeats"], role="backup",
                       redis=False, workdir=tmp_path)  # fmt: skip
    assert report.passed, report.to_text()
    assert "spool only" in report.redis
    skipped = {s.name: s.note for s in report.scenarios}
    assert "needs Redis" in skipped["cancel-redis"]
    assert report.check("cancel").scenarios == ["cancel-spool"]


def test_redis_scenarios_run_when_redis_server_exists(tmp_path: Path) -> None:
    require_binary("redis-server")
    report = run_suite(PLAIN, **PLAIN_OPTIONS, only=["cancel"], role="backup", workdir=tmp_path)
    assert report.passed, report.to_text()
    assert report.check("cancel").scenarios == ["cancel-redis", "cancel-spool"]
