"""Both SDK example agents pass every check, Redis scenarios included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baqup_agent.conformance import Report, Status, Verdict, run_suite
from tests.conformance._agents import FILESYSTEM, FILESYSTEM_OPTIONS, SQLITE, sqlite_fixture
from tests.conftest import require_binary


def passing_report(agent: list[str], options: dict[str, Any], workdir: Path) -> Report:
    """The suite's report on ``agent``, asserting that every check passed."""
    report = run_suite(agent, workdir=workdir, **options)
    statuses = {c.name: c.status for c in report.checks}
    expected = dict.fromkeys(statuses, Status.PASS)
    if options.get("artifact_not_tar"):
        expected["restore-hostile"] = Status.NOT_APPLICABLE
    assert statuses == expected, report.to_text()
    assert report.verdict is Verdict.CONFORMANT and not report.waivers
    return report


def test_filesystem_example_passes_every_check(tmp_path: Path) -> None:
    require_binary("redis-server")
    report = passing_report(FILESYSTEM, FILESYSTEM_OPTIONS, tmp_path)
    assert "redis-server" in report.redis
    assert report.duration_seconds < 60  # the figure


def test_sqlite_example_passes_every_check(tmp_path: Path) -> None:
    require_binary("redis-server")
    _, options = sqlite_fixture(tmp_path / "fixture")
    passing_report(SQLITE, options, tmp_path)
