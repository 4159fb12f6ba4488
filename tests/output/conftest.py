"""Fixtures of the output tests: a quiet logger and a staging directory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from baqup_agent._logger import Logger


@pytest.fixture
def log_stream() -> io.StringIO:
    """Where the test's logger writes (inspect it to check log lines)."""
    return io.StringIO()


@pytest.fixture
def logger(log_stream: io.StringIO) -> Logger:
    """A logger that writes JSON lines into ``log_stream`` at DEBUG."""
    return Logger("job-1", "agent-1", level="DEBUG", stream=log_stream)


@pytest.fixture
def staging_dir(tmp_path: Path) -> Path:
    """An empty staging root."""
    path = tmp_path / "staging"
    path.mkdir()
    return path
