"""The suite discriminates: a compliant agent written without the SDK passes every
check, and each deliberately broken variant of it fails exactly the check for its rule."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from pathlib import Path

import pytest

from baqup_agent.conformance import Report, Status, Verdict, run_suite
from tests.conformance._agents import PLAIN, PLAIN_OPTIONS
from tests.conformance.agents.plain_agent import VARIANTS
from tests.conftest import require_binary

# BROKEN variant -> the one check it must fail (and whether --strict is needed: SHOULD rules)
EXPECTED: dict[str, tuple[str, bool]] = {
    "exit-code": ("exit-codes", False),
    "log-not-json": ("log-records", False),
    "log-wrong-id": ("log-records", False),
    "illegal-transition": ("state-transitions", False),
    "no-heartbeats": ("heartbeats", False),
    "bad-message": ("bus-messages", False),
    "result-twice": ("result-once", False),
    "non-atomic": ("atomic-publication", False),
    "wrong-checksum": ("manifest", False),
    "leak-secret": ("secrets", False),
    "leak-secret-b64": ("secrets", False),
    "sigterm-exit0": ("sigterm", False),
    "bad-config-exit0": ("bad-config", False),
    "redis-down-exit0": ("redis-outage", False),
    "ignore-cancel": ("cancel", False),
    "restore-corrupt": ("round-trip", False),
    "restore-no-verify": ("restore-verifies", False),
    "world-readable": ("output-permissions", False),
    "seq-from-1": ("seq", False),
    "heartbeat-after-result": ("result-last", False),
    "float-integer": ("json-integers", False),
    "log-level-ignored": ("log-level", False),
    "heartbeat-ttl-wrong": ("heartbeats", False),
    "bad-config-bus": ("bad-config", False),
    "config-error-unnamed": ("bad-config", False),
    "retryable-wrong": ("exit-codes", False),
    "sigterm-exit70": ("sigterm", False),
    "sigterm-status-failed": ("sigterm", False),
    "log-on-stdout": ("log-records", False),
    "restore-writes-first": ("restore-verifies", False),
    "stray-file": ("staging-writes", False),
    "temp-outside": ("staging-writes", False),
    "manifest-first": ("staging-writes", False),
    "restore-unsafe": ("restore-hostile", False),
    "no-from-state": ("bus-messages", False),  # the schema's if/then in StateChange
    "timestamp-offset": ("bus-messages", False),
    "result-no-expiry": ("result-once", True),
    "rerun-redo": ("rerun-finished", False),
    "no-job-lock": ("duplicate-refused", False),
}


def test_every_variant_has_an_expected_check() -> None:
    assert set(EXPECTED) == set(VARIANTS)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Report]]:
    """The suite over the compliant agent (strict) and every variant, two at a time (on
    2 cores, three stretched every start-up: docs/conformance.md, "Timing")."""
    require_binary("redis-server")
    workdir = tmp_path_factory.mktemp("suites")
    strict = {"compliant": True, **{v: s for v, (_, s) in EXPECTED.items()}}

    def one(name: str) -> Report:
        env = dict(PLAIN_OPTIONS["env"])
        if name != "compliant":
            env["BROKEN"] = name
        options = {**PLAIN_OPTIONS, "env": env}
        return run_suite(PLAIN, strict=strict[name], workdir=workdir, **options)

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        yield dict(zip(strict, pool.map(one, strict), strict=True))


def test_compliant_agent_without_the_sdk_passes_every_check(reports: dict[str, Report]) -> None:
    report = reports["compliant"]
    assert report.strict
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == dict.fromkeys(statuses, Status.PASS), report.to_text()
    assert "redis-server" in report.redis  # the Redis scenarios really ran
    assert len(report.checks) == 24
    assert report.verdict is Verdict.CONFORMANT and report.exit_code == 0
    assert "-> CONFORMANT (exit 0)" in report.to_text()


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_broken_variant_fails_exactly_its_check(reports: dict[str, Report], variant: str) -> None:
    report = reports[variant]
    check = EXPECTED[variant][0]
    assert report.failed_checks == {check}, report.to_text()
    assert not report.passed
    failing = report.check(check)
    assert failing.findings and all(f.message for f in failing.findings)


def test_should_rules_only_warn_without_strict(tmp_path: Path) -> None:
    require_binary("redis-server")
    env = {**PLAIN_OPTIONS["env"], "BROKEN": "result-no-expiry"}
    report = run_suite(
        PLAIN, **{**PLAIN_OPTIONS, "env": env}, only=["result-once"], workdir=tmp_path
    )
    assert report.passed
    assert report.check("result-once").status is Status.WARN
    assert "never expires" in report.to_text()
