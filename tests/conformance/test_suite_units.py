"""The suite's parts: canary search, tree comparison, schema validation, report formats,
CLI, timeouts, role selection and the spool-only mode."""

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baqup_agent._cli import main
from baqup_agent.conformance import (
    EXIT_INCOMPLETE,
    Status,
    Suite,
    SuiteOptions,
    Verdict,
    run_suite,
)
from baqup_agent.conformance.canary import CanaryScanner, make_canary, spellings
from baqup_agent.conformance.checks.wire import integer_errors
from baqup_agent.conformance.fixture import compare_trees, make_default_fixture
from baqup_agent.conformance.inotify import TreeWatch
from baqup_agent.conformance.report import ScenarioSummary
from baqup_agent.conformance.schemas import bus_message_errors
from baqup_agent.contract import ConformanceReport
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
    text = capsys.readouterr().out
    report = json.loads(text)
    assert contract_errors("conformance-report.json", report) == []  # the published shape
    assert ConformanceReport.model_validate_json(text).verdict is Verdict.SELECTED_CHECKS_PASSED
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


def test_an_agent_killed_for_ignoring_a_cancel_fails_the_cancel_check_only(
    tmp_path: Path,
) -> None:
    """Still running long after the grace period that followed its cancel, the agent is
    killed by the suite: its exit status, last state and missing result are the kill's,
    so exit-codes, state-transitions and result-once leave that run to the cancel check."""
    env = {**PLAIN_OPTIONS["env"], "BROKEN": "ignore-cancel"}
    checks = ["cancel", "exit-codes", "state-transitions", "result-once"]
    report = run_suite(PLAIN, **{**PLAIN_OPTIONS, "env": env}, only=checks, role="backup",
                       redis=False, scale_fixture=False, grace_period=0.5,
                       slow_env={"PLAIN_DELAY": "1"}, workdir=tmp_path)  # fmt: skip
    failed = {c.name for c in report.checks if c.status is Status.FAIL}
    assert failed == {"cancel"}, report.to_text()
    findings = [f.message for f in report.check("cancel").findings]
    assert any("killed by SIGKILL after cancel" in m for m in findings), findings
    assert "killed: still running long after the grace period" in next(
        s.note for s in report.scenarios if s.name == "cancel-spool"
    )


def test_redis_scenarios_run_when_redis_server_exists(tmp_path: Path) -> None:
    require_binary("redis-server")
    report = run_suite(PLAIN, **PLAIN_OPTIONS, only=["cancel"], role="backup", workdir=tmp_path)
    assert report.passed, report.to_text()
    assert report.check("cancel").scenarios == ["cancel-redis", "cancel-spool"]


# an agent that exits at once without ever reporting running: nothing can interrupt it
_NEVER_RUNNING = [sys.executable, "-c", "import sys; sys.exit(0)"]


def test_a_scenario_that_could_not_be_exercised_makes_the_verdict_incomplete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["conformance", "--role", "backup", "--only", "sigterm", "--no-redis",
            "--junit-xml", str(tmp_path / "junit.xml"), "--", *_NEVER_RUNNING]  # fmt: skip
    assert main(args) == EXIT_INCOMPLETE == 3
    out = capsys.readouterr().out
    assert "UNTS  §1  sigterm" in out
    assert "untested sigterm: the job ended before SIGTERM could land" in out
    assert "to run it: give a bigger --fixture" in out
    assert "-> INCOMPLETE (exit 3)" in out and "CONFORMANT" not in out
    case = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None and case.find("error") is not None


def test_allow_untested_waives_by_name_and_every_report_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["conformance", "--role", "backup", "--only", "sigterm", "--no-redis", "--json",
            "--allow-untested", "sigterm", "--junit-xml", str(tmp_path / "junit.xml"),
            "--", *_NEVER_RUNNING]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert contract_errors("conformance-report.json", report) == []
    not_run = ScenarioSummary("cancel-redis", "d", "job", None, 0.0, False, "needs Redis")
    assert "exit_code" not in not_run.to_dict()  # absent, never null
    assert report["waivers"] == ["--allow-untested sigterm", "--no-redis"]
    assert report["verdict"] == Verdict.SELECTED_CHECKS_PASSED.value  # --only: never CONFORMANT
    (untested,) = report["untested"]
    assert untested["check"] == "sigterm" and untested["waived_by"] == "--allow-untested sigterm"
    props = ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite/properties/property")
    pairs = {(p.get("name"), p.get("value")) for p in props}
    assert ("waiver", "--allow-untested sigterm") in pairs


def test_only_says_it_certifies_only_the_checks_it_ran(tmp_path: Path) -> None:
    report = run_suite(PLAIN, **PLAIN_OPTIONS, only=["bad-config"], role="backup",
                       no_redis=True, workdir=tmp_path)  # fmt: skip
    assert report.passed and report.verdict is Verdict.SELECTED_CHECKS_PASSED
    line = next(x for x in report.to_text().splitlines() if " -> " in x)
    assert "certifies only the check(s) run: bad-config" in line and "not run: " in line
    assert "sigterm" in line
    assert "-> CONFORMANT" not in report.to_text()


def test_run_suite_takes_what_the_docs_show(tmp_path: Path) -> None:
    # as docs/conformance.md writes it: no_redis, workdir as str, compare_command as str
    compare = f"{sys.executable} -c 'import sys; sys.exit(0)' {{fixture}} {{target}}"
    report = run_suite(PLAIN, env=PLAIN_OPTIONS["env"], no_redis=True, compare_command=compare,
                       workdir=str(tmp_path), only=["round-trip"])  # fmt: skip
    assert report.exit_code == 0, report.to_text()
    assert report.waivers == ["--no-redis"] and report.verdict is Verdict.SELECTED_CHECKS_PASSED
    options = SuiteOptions(["true"], compare_command="cmp -s '{fixture}/a b' x", workdir="w")
    assert options.compare_command == ["cmp", "-s", "{fixture}/a b", "x"]
    assert options.workdir == Path("w") and options.redis is None


@pytest.mark.parametrize("noise", ["\x1b[31mred\x1b[0m", "nul\x00bell\x07", "\x1b]0;title\x07"])
def test_junit_xml_is_valid_whatever_the_agent_prints(tmp_path: Path, noise: str) -> None:
    agent = [sys.executable, "-c", f"import sys; sys.stderr.write({noise!r} + '\\n'); sys.exit(64)"]
    report = run_suite(agent, role="backup", only=["log-records"], no_redis=True,
                       workdir=tmp_path)  # fmt: skip
    assert report.check("log-records").status is Status.FAIL
    root = ET.fromstring(report.to_junit_xml())  # raises on a character XML cannot hold
    text = "".join(root.itertext())
    assert "\x1b" not in text and "\x00" not in text
    assert any(word in text for word in ("red", "nul", "title"))


@pytest.mark.parametrize("seq", [0, 1, 7, 2**40])
def test_integers_written_as_floats_are_found_by_path(seq: int) -> None:
    message = {"id": "3f2b1c9e-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "seq": seq, "type": "heartbeat",
               "job_id": "j", "agent_id": "a", "timestamp": "2026-11-27T10:00:00Z",
               "state": "running", "intent": "continuing", "interval_seconds": 1.0,
               "ttl_seconds": 3, "progress": {"bytes_done": 12, "items_done": 1}}  # fmt: skip
    text = json.dumps(message)
    schema = "bus-message.json#/$defs/Heartbeat"
    assert integer_errors(schema, text) == []  # interval_seconds may be 1.0: a number
    floats = text.replace(f'"seq": {seq}', f'"seq": {seq}.0').replace(
        '"bytes_done": 12', '"bytes_done": 12.0'
    )
    assert integer_errors(schema, floats) == ["progress/bytes_done", "seq"]


def test_the_tree_watch_sees_writes_in_order_across_renames(tmp_path: Path) -> None:
    watch = TreeWatch.open(tmp_path)
    assert watch is not None  # Linux: the suite's tests run there
    work = tmp_path / ".staging" / "job"
    work.mkdir(parents=True)

    def wait_for(condition: Callable[[], bool]) -> None:  # a condition, not a time window
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    wait_for(lambda: watch.watching(".staging/job"))
    (work / "data").write_bytes(b"x")
    (work / "manifest.json").write_text("{}")
    (work / "late").write_bytes(b"y")
    wait_for(lambda: any(e.path.endswith("late") for e in watch.events))
    work.rename(tmp_path / "job")
    (tmp_path / "job" / "after").write_bytes(b"z")
    watch.close()
    paths = [e.path for e in watch.events if e.kind in ("create", "listed") and not e.is_dir]
    assert paths.index(".staging/job/manifest.json") < paths.index(".staging/job/late")
    assert "job/after" in paths  # the watch followed the rename


def test_a_directory_listed_and_then_seen_created_is_not_listed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job directory created between the watch of its parent and the listing of it:
    listed (and watched) with the parent, then its queued creation event read. The
    writes in it since stay in the order they happened (a second listing came before
    the queued events of those writes: a manifest listed, then the artifact written
    before it, seen as written after it)."""
    watch = TreeWatch.open(tmp_path)
    assert watch is not None
    watch._stop.set()  # the test polls: the race is played in one order
    watch._thread.join()
    scandir, work = os.scandir, tmp_path / ".staging" / "job"
    listings: list[str] = []

    def racing_agent(path: Any) -> Any:
        listings.append(Path(path).name)
        if listings == [".staging"]:
            work.mkdir()  # after the watch of .staging, before its listing
        entries = list(scandir(path))
        if listings == [".staging", "job"]:
            # job is watched and listed (empty); its creation event is still queued
            (work / "data.tar.gz").write_bytes(b"artifact")
            (work / "manifest.json").write_text("{}")
        return entries

    monkeypatch.setattr("baqup_agent.conformance.inotify.os.scandir", racing_agent)
    (tmp_path / ".staging").mkdir()
    watch.close()  # reads it all: .staging's creation, job's, then the two writes
    events = [(e.kind, e.path.removeprefix(".staging/job/")) for e in watch.events]
    artifact = [i for i, (kind, path) in enumerate(events) if path == "data.tar.gz"]
    manifest = [i for i, (kind, path) in enumerate(events) if path == "manifest.json"]
    assert artifact and manifest and max(artifact) < min(manifest), events
    assert ("listed", "manifest.json") not in events


_Op = tuple[str, str]  # (open | write | close | append, file name)


@st.composite
def _staging_writes(draw: st.DrawFn) -> tuple[list[_Op], bool, int, int]:
    """An agent's writes in its job directory (artifacts, then the manifest; or, when
    ``late``, one artifact appended to after it), and two cuts: the writes before the
    first happen before the directory is watched, those between the two after its watch
    and before its listing (the gap a listing cannot avoid), the rest after both."""
    ops: list[_Op] = []
    for name in draw(
        st.lists(st.sampled_from(["a.tar", "b.sql", "c.bin"]), min_size=1, max_size=3, unique=True)
    ):
        ops += [("open", name), *[("write", name)] * draw(st.integers(1, 3)), ("close", name)]
    ops += [("open", "manifest.json"), ("write", "manifest.json"), ("close", "manifest.json")]
    late = draw(st.booleans())
    if late:
        ops.append(("append", ops[0][1]))
    first = draw(st.integers(0, len(ops)))
    return ops, late, first, draw(st.integers(first, len(ops)))


def _play(work: Path, ops: list[_Op], fds: dict[str, int]) -> None:
    for op, name in ops:
        if op in ("open", "append"):
            fds[name] = os.open(work / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if op in ("write", "append"):
            os.write(fds[name], b"bytes")
        if op in ("close", "append"):
            os.close(fds.pop(name))


@settings(max_examples=150, deadline=None)
@given(_staging_writes())
def test_the_tree_watch_orders_writes_made_around_a_directory_listing(
    case: tuple[list[_Op], bool, int, int],
) -> None:
    """Whatever the agent writes while the job directory is being watched and listed, the
    events keep the order of its writes: a valid agent's artifacts all come before its
    manifest, and an artifact written after the manifest (after the watch began) is seen
    after it."""
    ops, late, first, second = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".staging").mkdir()
        watch = TreeWatch.open(root)
        assert watch is not None
        watch._stop.set()  # the test polls: the race is played in one order
        watch._thread.join()
        work, fds = root / ".staging" / "job", dict[str, int]()
        work.mkdir()
        _play(work, ops[:first], fds)  # before the job directory's creation event is read
        scandir = os.scandir

        def listing(path: Any) -> Any:
            if Path(path) == work:
                _play(work, ops[first:second], fds)  # watched, not yet listed
            return scandir(path)

        with mock.patch("baqup_agent.conformance.inotify.os.scandir", listing):
            watch.poll()  # reads the creation of job/: watches it, then lists it
        _play(work, ops[second:], fds)
        watch.close()
    events = [e for e in watch.events if e.path.startswith(".staging/job/")]
    kinds = {"create", "modify", "close-write", "listed"}
    names = [e.path.removeprefix(".staging/job/") for e in events if e.kind in kinds]
    manifest = names.index("manifest.json")
    written_after = [
        n
        for n, e in zip(names[manifest:], events[manifest:], strict=True)
        if n != "manifest.json" and e.kind != "listed"
    ]
    seen_late = late and len(ops) - 1 >= first  # the late write came after the watch
    assert bool(written_after) == seen_late, (ops, first, second, events)


@pytest.mark.parametrize("broken", ["", "leak-secret", "leak-secret-b64"])
def test_a_real_secret_is_passed_on_and_searched_but_never_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    real = "Real-S3cret/with+odd@chars"
    secret_file = tmp_path / "token"
    secret_file.write_text(real + "\n", encoding="utf-8")
    monkeypatch.setenv("PLAIN_TOKEN_FILE", str(secret_file))  # as a CI job would provide it
    env = {**PLAIN_OPTIONS["env"], **({"BROKEN": broken} if broken else {})}
    report = run_suite(PLAIN, env=env, real_secret_vars=["PLAIN_TOKEN"], only=["secrets"],
                       role="backup", no_redis=True, workdir=tmp_path / "w")  # fmt: skip
    check = report.check("secrets")
    assert check.status is (Status.FAIL if broken else Status.PASS), report.to_text()
    outputs = report.to_text() + report.to_json() + report.to_junit_xml()
    for form in spellings(real).values():
        assert form not in outputs


def test_a_real_secret_without_a_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    monkeypatch.delenv("NO_SUCH_SECRET_FILE", raising=False)
    with pytest.raises(ValueError, match="neither NO_SUCH_SECRET nor NO_SUCH_SECRET_FILE"):
        Suite(SuiteOptions(["true"], real_secret_vars=["NO_SUCH_SECRET"]))
    with pytest.raises(ValueError, match="too short"):
        Suite(SuiteOptions(["true"], env={"S": "abc"}, real_secret_vars=["S"]))


def test_declaring_the_artifact_not_tar_does_not_dodge_a_tar_artifact(tmp_path: Path) -> None:
    report = run_suite(PLAIN, **PLAIN_OPTIONS, artifact_not_tar=True, only=["restore-hostile"],
                       role="restore", no_redis=True, workdir=tmp_path)  # fmt: skip
    check = report.check("restore-hostile")
    assert check.status is Status.PASS and check.scenarios == ["restore-hostile"]
    broken = {**PLAIN_OPTIONS["env"], "BROKEN": "restore-unsafe"}
    report = run_suite(PLAIN, env=broken, artifact_not_tar=True, only=["restore-hostile"],
                       role="restore", no_redis=True, workdir=tmp_path)  # fmt: skip
    assert report.check("restore-hostile").status is Status.FAIL
