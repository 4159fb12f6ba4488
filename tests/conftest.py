"""Shared fixtures: a real redis-server (baqup_agent.testing's), a clean redactor."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

# re-exported: the tests import them from here
from baqup_agent.testing import RedisServer as RedisServer
from baqup_agent.testing import free_port as free_port

IN_CI = bool(os.environ.get("CI"))


def require_binary(name: str) -> str:
    """Path of ``name``; skip locally when missing, fail in CI (CI must install it)."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def redis_server(baqup_redis: RedisServer) -> RedisServer:
    """A fresh redis-server for one test (the plugin's ``baqup_redis``), killed afterwards."""
    return baqup_redis


@pytest.fixture(autouse=True)
def _clean_redactor() -> Iterator[None]:
    """Secrets registered by one test do not redact another's output."""
    from baqup_agent._redaction import REDACTOR

    yield
    REDACTOR.clear()
