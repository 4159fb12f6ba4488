"""The pytest plugin of baqup-agent (entry point ``pytest11``: active wherever the
package is installed): the helpers of ``baqup_agent.testing`` as fixtures, and the
conformance checks as pytest items.

Fixtures: ``baqup_log`` (a ``LogCapture``), ``baqup_staging`` (an empty staging
directory), ``baqup_job_env`` (``job_env`` bound to it), ``baqup_run`` (``run_agent``)
and ``baqup_redis`` (a started ``RedisServer``; a missing redis-server skips the test,
or fails it when the ``CI`` variable is set).

Conformance: a test that takes ``baqup_conformance_check`` and carries
``@pytest.mark.baqup_conformance(command=[...], **SuiteOptions fields)`` becomes one
item per selected check. The suite runs once per marked test function (on its first
item); each item fails when its check failed or could not be exercised::

    @pytest.mark.baqup_conformance(command=[sys.executable, "agent.py"], role="backup")
    def test_conformance(baqup_conformance_check):
        baqup_conformance_check.assert_passed()

This module is imported by every pytest run of an environment holding baqup-agent:
everything heavier than pytest is imported inside the hooks and fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from baqup_agent.conformance.report import CheckResult, Report
    from baqup_agent.testing import AgentRun, LogCapture, RedisServer

MARKER = "baqup_conformance"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker (``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(command, **options): run the conformance suite against command "
        "(options: the fields of baqup_agent.conformance.SuiteOptions), one item per check",
    )


def _suite_arguments(marker: pytest.Mark) -> tuple[list[str], dict[str, Any]]:
    options = dict(marker.kwargs)
    command = options.pop("command", None) or (list(marker.args[0]) if marker.args else None)
    if not command:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} needs command=[...]")
    return [str(part) for part in command], options


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per check the marker's options select (role, only)."""
    if "baqup_conformance_check" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: baqup_conformance_check needs "
            f"@pytest.mark.{MARKER}(command=[...])"
        )
    from baqup_agent.conformance.suite import Suite, SuiteOptions

    command, options = _suite_arguments(marker)
    # the suite's own validation of the options, and its selection of checks
    names = [check.name for check in Suite(SuiteOptions(command, **options)).checks]
    metafunc.parametrize("baqup_conformance_check", names, indirect=True, ids=names)


class ConformanceCheck:
    """One check's result in a conformance run, with the run's report for context."""

    def __init__(self, result: CheckResult, report: Report) -> None:
        self.result = result
        self.report = report

    def assert_passed(self) -> None:
        """AssertionError with the findings when the check failed or was not exercised
        (and not waived); a warning, a waiver or "not applicable" passes."""
        from baqup_agent.conformance.report import Status

        result = self.result
        if result.status in (Status.FAIL, Status.UNTESTED):
            lines = [f"{result.name} ({result.section}): {result.status.value}: {result.title}"]
            lines += [f.line() for f in result.findings]
            lines += [u.line() for u in result.untested]
            raise AssertionError("\n".join(lines))


_REPORTS = pytest.StashKey[dict[str, "Report"]]()


@pytest.fixture
def baqup_conformance_check(request: pytest.FixtureRequest) -> ConformanceCheck:
    """The result of the check this item stands for (see the module docstring)."""
    from baqup_agent.conformance.suite import run_suite

    node = request.node
    marker = node.get_closest_marker(MARKER)
    assert marker is not None  # pytest_generate_tests refused the test otherwise
    reports = request.config.stash.setdefault(_REPORTS, {})
    key = f"{node.path}::{getattr(node, 'originalname', node.name)}"
    if key not in reports:
        command, options = _suite_arguments(marker)
        reports[key] = run_suite(command, **options)
    report = reports[key]
    return ConformanceCheck(report.check(request.param), report)


@pytest.fixture
def baqup_log() -> LogCapture:
    """A ``LogCapture`` to pass as a log stream."""
    from baqup_agent.testing import LogCapture

    return LogCapture()


@pytest.fixture
def baqup_staging(tmp_path: Path) -> Path:
    """An empty ``BAQUP_STAGING_DIR`` for the test."""
    staging = tmp_path / "staging"
    staging.mkdir()
    return staging


@pytest.fixture
def baqup_job_env(baqup_staging: Path) -> Callable[..., dict[str, str]]:
    """``job_env`` with ``baqup_staging`` as the staging directory:
    ``baqup_job_env(job_id="job-1", role="backup", **variables)``."""
    from baqup_agent.testing import job_env

    def make(job_id: str = "job-1", role: str = "backup", **extra: Any) -> dict[str, str]:
        return job_env(baqup_staging, job_id, role, **extra)

    return make


@pytest.fixture
def baqup_run(baqup_log: LogCapture) -> Callable[..., AgentRun]:
    """``run_agent`` logging to ``baqup_log``: ``baqup_run(agent, env)``."""
    from baqup_agent.testing import run_agent

    def run(agent: Any, env: dict[str, str]) -> AgentRun:
        return run_agent(agent, env, log=baqup_log)

    return run


@pytest.fixture
def baqup_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server on a free loopback port for one test, killed afterwards."""
    from baqup_agent.testing import RedisServer

    if RedisServer.find() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (CI must install it)")
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)
