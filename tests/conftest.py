"""Shared fixtures: a real redis-server (baqup_agent.testing's), a clean redactor."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# re-exported: the tests import them from here
from baqup_agent.testing import RedisServer as RedisServer
from baqup_agent.testing import free_port as free_port

if TYPE_CHECKING:
    from redis import Redis

IN_CI = bool(os.environ.get("CI"))


def require_binary(name: str) -> str:
    """Path of ``name``; skip locally when missing, fail in CI (CI must install it)."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} not installed")
    return path


def stream_messages(client: Redis, key: str) -> list[bytes]:
    """The ``msg`` field of every entry of stream ``key``, in stream order.

    For a client without ``decode_responses``; an entry without the field fails the test.
    """
    from baqup_agent._redis_client import entry_messages

    messages: list[bytes] = []
    for entry_id, raw in entry_messages(client.xrange(key)):
        assert raw is not None, f"entry {entry_id} of {key} has no msg field"
        messages.append(raw)
    return messages


def stored_value(client: Redis, key: str) -> bytes:
    """The value of ``key``, which the test expects to be set (bytes client)."""
    value = client.get(key)
    assert isinstance(value, bytes), f"{key} holds no value"
    return value


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
