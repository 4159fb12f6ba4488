"""Both SDK example agents pass every check, Redis scenarios included."""

from __future__ import annotations

from pathlib import Path

from baqup_agent.conformance import Status, run_suite
from tests.conformance._agents import FILESYSTEM, SQLITE, filesystem_fixture, sqlite_fixture
from tests.conftest import require_binary


def test_filesystem_example_passes_every_check(tmp_path: Path) -> None:
    require_binary("redis-server")
    _, options = filesystem_fixture(tmp_path / "fixture")
    report = run_suite(FILESYSTEM, workdir=tmp_path, **options)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == dict.fromkeys(statuses, Status.PASS), report.to_text()
    assert "redis-server" in report.redis
    assert report.duration_seconds < 60  # the figure


def test_sqlite_example_passes_every_check(tmp_path: Path) -> None:
    require_binary("redis-server")
    _, options = sqlite_fixture(tmp_path / "fixture")
    report = run_suite(SQLITE, workdir=tmp_path, **options)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == dict.fromkeys(statuses, Status.PASS), report.to_text()
